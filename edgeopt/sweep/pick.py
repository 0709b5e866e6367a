"""Pick by budget: the fastest passed row on a device within an accuracy budget, or the most accurate within a
latency budget; the reason is said in words."""

from __future__ import annotations

from typing import Any

from edgeopt.errors import ConfigError
from edgeopt.sweep.spec import Pick


def parse_pick(text: str) -> Pick:
    """``"device=pi5, max_drop=1.0"`` -> Pick (unknown keys and bad values are ConfigErrors)."""
    fields: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or key.strip() not in Pick.model_fields:
            raise ConfigError(f"--pick: cannot read '{part}'", hint=f"keys: {', '.join(Pick.model_fields)}")
        fields[key.strip()] = value.strip()
    try:
        return Pick.model_validate(fields)
    except ValueError as exc:
        raise ConfigError(f"--pick: {exc.errors()[0]['msg']}") from None  # type: ignore[attr-defined]


def sweep_reference(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The best reference row of the sweep (the user's model at its best-scoring point): drops are judged against
    it, so a smaller input size's own accuracy loss counts too."""
    refs = [r for r in rows if r["status"] == "reference" and r.get("map50_95") is not None]
    return max(refs, key=lambda r: r["map50_95"], default=None)


def pick(rows: list[dict[str, Any]], select: Pick) -> tuple[dict[str, Any], str]:
    """The chosen row and why; a ConfigError when nothing fits the budget."""
    ref = sweep_reference(rows)
    pool = [r for r in rows if r["status"] == "passed" and r.get("latency_ms_median") is not None
            and (select.device is None or r.get("device") == select.device)]
    if any(r.get("emulated") for r in pool):
        raise ConfigError(f"device '{select.device}' is emulated: its latency cannot choose a bundle",
                          hint="pick on a real device")
    if select.max_drop is not None:
        if ref is None:
            raise ConfigError("max_drop needs mAP figures: the sweep measured none (benchmark.map)")
        fits = [r for r in pool if r.get("map50_95") is not None
                and (ref["map50_95"] - r["map50_95"]) * 100 <= select.max_drop]
        if not fits:
            raise ConfigError(f"no passed row on {select.device or 'any device'} within {select.max_drop:g} pt "
                              f"of the reference mAP50-95 {ref['map50_95']:.4f}")
        best = min(fits, key=lambda r: r["latency_ms_median"])
        drop = (ref["map50_95"] - best["map50_95"]) * 100
        return best, (f"fastest of {len(fits)} passed rows within {select.max_drop:g} pt of the reference "
                      f"({ref['point_label']}, mAP50-95 {ref['map50_95']:.4f}): {best['latency_ms_median']:.2f} ms, "
                      f"mAP50-95 {best['map50_95']:.4f} ({drop:+.2f} pt drop)")
    if select.max_latency_ms is not None:
        fits = [r for r in pool if r["latency_ms_median"] <= select.max_latency_ms and r.get("map50_95") is not None]
        if not fits:
            raise ConfigError(f"no passed row on {select.device or 'any device'} within {select.max_latency_ms:g} ms")
        best = max(fits, key=lambda r: r["map50_95"])
        return best, (f"most accurate of {len(fits)} passed rows within {select.max_latency_ms:g} ms: "
                      f"mAP50-95 {best['map50_95']:.4f} at {best['latency_ms_median']:.2f} ms")
    raise ConfigError("--pick needs max_drop or max_latency_ms", hint='e.g. --pick "device=local, max_drop=1.0"')
