"""Per-operator latency profiles: the table of one bundle (where its time goes) and the comparison of two bundles
of one target (where int8 did not pay off: layers kept float, quantize/dequantize pairs, layout reorders).

The operators come from each runtime's own profiler, through the bundle's ``run.py --bench --profile``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.table import Table

# operators that move or convert data rather than compute: what quantization adds around the int8 kernels
OVERHEAD_TYPES = frozenset({"Reorder", "Convert", "FakeQuantize", "QuantizeLinear", "DequantizeLinear",
                            "DynamicQuantizeLinear", "Quantize", "Dequantize", "Requantize", "Transpose",
                            "Copy"})
KINDS = ("int8 compute", "float compute", "quantize / layout")
# XNNPACK (the CPU delegate of two of the runtimes) names an operator with its layout and element types,
# e.g. "Convolution (NHWC, QC8) IGEMM #3" or "Convert (NC, F32, QD8)": the last one is what it computes in
XNNPACK_ELEMENTS = {"F32": "fp32", "F16": "fp16", "BF16": "bf16", "QS8": "int8", "QU8": "int8", "QC8": "int8",
                    "QD8": "int8", "QP8": "int8", "QC4": "int4", "X32": "layout", "X16": "layout", "X8": "layout"}
XNNPACK_LAYOUTS = frozenset({"NC", "ND", "NHWC", "NCHW", "NWC", "NCW"})


def xnnpack_operator(name: str) -> tuple[str, str]:
    """The type and precision of an XNNPACK operator from its name (the name itself and "-" if it has none)."""
    if "(" not in name or ")" not in name:
        return name, "-"
    element = name[name.index("(") + 1: name.index(")")].split(",")[-1].strip()
    if element in XNNPACK_LAYOUTS:  # no element type: a reshape or copy, whatever the data
        return name.split(" (")[0].strip(), "layout"
    precision = next((v for k, v in sorted(XNNPACK_ELEMENTS.items(), key=lambda kv: -len(kv[0]))
                      if element.startswith(k)), element)
    return name.split(" (")[0].strip(), precision


def normalised(op: dict[str, Any]) -> dict[str, Any]:
    """An operator as a runner reported it, with the type and precision of a delegated XNNPACK operator read
    from its name (runners leave ``precision`` None for those)."""
    if op.get("precision") is not None:
        return op
    kind, precision = xnnpack_operator(str(op.get("type") or op["name"]))
    return {**op, "type": kind, "precision": precision}


def distinct_names(ops: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The operators with a name met again suffixed ``[2]``, ``[3]``...: runtimes may repeat names (a converter's
    layer names, XNNPACK operators numbered per partition), and each is a row of its own."""
    seen: dict[str, int] = {}
    named = []
    for op in ops:
        seen[op["name"]] = seen.get(op["name"], 0) + 1
        named.append(op if seen[op["name"]] == 1 else {**op, "name": f"{op['name']} [{seen[op['name']]}]"})
    return named


def kind_of(op: dict[str, Any]) -> str:
    """Where an operator's time counts: int8 compute, float compute, or quantize / layout overhead."""
    if op.get("type") in OVERHEAD_TYPES or op.get("precision") in ("quantize", "layout"):
        return "quantize / layout"
    return "int8 compute" if op.get("precision") == "int8" else "float compute"


@dataclass(frozen=True)
class Profile:
    """One bundle's profile: its operators (ms per inference) and the end-to-end latency timed beside them."""

    label: str
    ops: list[dict[str, Any]]  # kept most time first
    latency_ms: float
    unavailable: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "ops", sorted(self.ops, key=lambda op: -op["ms"]))

    @classmethod
    def from_figures(cls, label: str, figures: dict[str, Any]) -> Profile:
        """From the JSON of ``run.py --bench --profile``."""
        profile = figures.get("profile") or {}
        return cls(label, distinct_names([normalised(op) for op in profile.get("ops") or []]),
                   float(figures["latency_ms_median"]), profile.get("unavailable"))

    @property
    def profiled_ms(self) -> float:
        """The operators' milliseconds summed: to compare with the end-to-end latency."""
        return sum(op["ms"] for op in self.ops)

    @property
    def coverage(self) -> float | None:
        """Profiled time over the end-to-end median (1.0 = every millisecond is attributed to an operator)."""
        return self.profiled_ms / self.latency_ms if self.ops and self.latency_ms > 0 else None

    def share(self, op: dict[str, Any]) -> float:
        """An operator's share of the profiled time."""
        return op["ms"] / self.profiled_ms if self.profiled_ms > 0 else 0.0

    def by_kind(self) -> dict[str, float]:
        """Milliseconds per inference in int8 compute, float compute and quantize / layout overhead."""
        totals = dict.fromkeys(KINDS, 0.0)
        for op in self.ops:
            totals[kind_of(op)] += op["ms"]
        return totals

    def by_type(self) -> dict[str, float]:
        """Milliseconds per inference per operator type, largest first."""
        totals: dict[str, float] = {}
        for op in self.ops:
            totals[op["type"]] = totals.get(op["type"], 0.0) + op["ms"]
        return dict(sorted(totals.items(), key=lambda item: -item[1]))

    def summary(self, top: int) -> dict[str, Any]:
        """What ``--json`` prints and a run records: the top operators with their shares, and the totals."""
        return {"label": self.label, "latency_ms_median": self.latency_ms, "profiled_ms": self.profiled_ms,
                "coverage": self.coverage, "unavailable": self.unavailable, "operators": len(self.ops),
                "by_kind_ms": self.by_kind(), "by_type_ms": self.by_type(),
                "top": [{**op, "share": self.share(op)} for op in self.ops[:top]]}


def profile_table(profile: Profile, top: int) -> Table:
    """The top operators of one bundle: name, type, precision, ms per inference, share, calls."""
    coverage = f"{profile.coverage:.0%}" if profile.coverage is not None else "-"
    table = Table(title=f"{profile.label}: {len(profile.ops)} operators, {profile.profiled_ms:.2f} ms profiled of "
                        f"{profile.latency_ms:.2f} ms end-to-end median ({coverage})")
    for name, justify in (("operator", "left"), ("type", "left"), ("precision", "left"), ("ms", "right"),
                          ("share", "right"), ("calls", "right")):
        table.add_column(name, justify=justify)
    for op in profile.ops[:top]:
        table.add_row(op["name"], op["type"], op["precision"], f"{op['ms']:.3f}", f"{profile.share(op):.1%}",
                      f"{op['calls']:g}")
    return table


def comparison_table(base: Profile, other: Profile) -> Table:
    """``other`` (e.g. int8) against ``base`` (e.g. fp32) of the same target: milliseconds per kind of work and
    per operator type, so what int8 left float and what it added around its kernels stands out."""
    table = Table(title=f"{other.label} vs {base.label}: where the time goes (ms per inference)")
    for name, justify in (("", "left"), (base.label, "right"), (other.label, "right"), ("change", "right")):
        table.add_column(name, justify=justify)
    base_kinds, other_kinds = base.by_kind(), other.by_kind()
    for kind in KINDS:
        table.add_row(kind, f"{base_kinds[kind]:.2f}", f"{other_kinds[kind]:.2f}",
                      f"{other_kinds[kind] - base_kinds[kind]:+.2f}")
    table.add_row("[bold]profiled total[/]", f"{base.profiled_ms:.2f}", f"{other.profiled_ms:.2f}",
                  f"{other.profiled_ms - base.profiled_ms:+.2f}", end_section=True)
    base_types, other_types = base.by_type(), other.by_type()
    for kind in sorted(set(base_types) | set(other_types),
                       key=lambda t: -max(base_types.get(t, 0.0), other_types.get(t, 0.0))):
        before, after = base_types.get(kind, 0.0), other_types.get(kind, 0.0)
        table.add_row(f"type {kind}", f"{before:.2f}", f"{after:.2f}", f"{after - before:+.2f}")
    return table


def findings(base: Profile, other: Profile) -> list[str]:
    """One line per reason ``other`` (int8) is not faster than ``base`` where it could be."""
    lines = []
    kinds = other.by_kind()
    total = other.profiled_ms or 1.0
    if kinds["float compute"] > 0.2 * total:
        kept = [op for op in other.ops if kind_of(op) == "float compute"][:3]
        lines.append(f"{kinds['float compute']:.2f} ms ({kinds['float compute'] / total:.0%}) of {other.label} still "
                     f"runs in float, most in: {', '.join(op['name'] for op in kept)}")
    if kinds["quantize / layout"] > 0.1 * total:
        lines.append(f"{kinds['quantize / layout']:.2f} ms ({kinds['quantize / layout'] / total:.0%}) of "
                     f"{other.label} goes to quantize/dequantize and layout reorders")
    if other.profiled_ms >= base.profiled_ms:
        lines.append(f"{other.label}'s operators take {other.profiled_ms:.2f} ms, no less than {base.label}'s "
                     f"{base.profiled_ms:.2f} ms")
    return lines
