"""Results of a run: ``results.json``, ``results.csv``, ``report.md`` with a latency-vs-mAP plot (and the int8
accuracy search's steps), and a rich table."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from rich.table import Table

from edgeopt.core.cache import write_json_atomic
from edgeopt.report.profile import KINDS
from edgeopt.report.pruning import prune_lines

PROFILE_TOP = 10  # operators per profiled row in results.json and report.md

PARITY_COLUMNS = ("score_cosine", "score_max_abs", "box_max_abs", "box_agreement", "boxes_compared")
COLUMNS = ("target", "precision", "head", "device", "status", "latency_ms_median", "latency_ms_p90", "latency_ms_min",
           "unpruned_latency_ms", "x_unpruned", "threads", "emulated", "throttled", "peak_rss_mb", "size_bytes", "map50_95", "map50", "map50_95_drop",
           "host_map50_95",
           *(f"parity_{name}" for name in PARITY_COLUMNS), "reason", "artifact")


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def results_table(records: list[dict[str, Any]], title: str) -> Table:
    """The table printed at the end of a run."""
    table = Table(title=title)
    for name, justify in (("target", "left"), ("precision", "left"), ("device", "left"), ("thr.", "right"),
                          ("status", "left"), ("median ms", "right"),
                          ("p90 ms", "right"), ("size MB", "right"), ("RSS MB", "right"), ("mAP50-95", "right"),
                          ("mAP50", "right"), ("drop (pt)", "right"), ("score cos.", "right"), ("box agr.", "right")):
        table.add_column(name, justify=justify)
    twins = any(r.get("x_unpruned") is not None for r in records)
    if twins:  # pruned rows timed beside their unpruned twins
        table.add_column("x unpr.", justify="right")
    for r in records:
        status = {"passed": "[green]passed[/]", "failed": "[red]failed[/]",
                  "skipped": "[yellow]skipped[/]",
                  "unverified": "[yellow]unverified[/]"}.get(r["status"], r["status"])
        drop = r.get("map50_95_drop")
        latency = _fmt(r.get("latency_ms_median")) + (" emu" if r.get("emulated") else "") \
            + (" [red]thr![/]" if r.get("throttled") else "")
        table.add_row(r["target"], r["precision"], r.get("device") or "-", _fmt(r.get("threads")), status, latency,
                      _fmt(r.get("latency_ms_p90")),
                      _fmt(r["size_bytes"] / 1e6) if r.get("size_bytes") else "-", _fmt(r.get("peak_rss_mb"), 0),
                      _fmt(r.get("map50_95"), 4), _fmt(r.get("map50"), 4),
                      _fmt(drop * 100 if drop is not None else None), _fmt(r.get("parity_score_cosine"), 5),
                      _fmt(r.get("parity_box_agreement"), 3), *([_fmt(r.get("x_unpruned"))] if twins else []))
    return table


def _timed(r: dict[str, Any]) -> bool:
    """A row whose latency may be compared: measured, on a real CPU (not emulated), not throttled."""
    return r.get("latency_ms_median") is not None and not r.get("emulated") and not r.get("throttled")


def pareto_front(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records not beaten on both latency (lower) and mAP50-95 (higher) by another passed record of the same
    device; emulated and throttled rows are never on a front (their latency is no speed claim)."""
    pts = [r for r in records if r["status"] in ("passed", "reference") and r.get("map50_95") is not None
           and _timed(r)]
    return [r for r in pts if not any(o is not r and o.get("device") == r.get("device")
                                      and o["latency_ms_median"] <= r["latency_ms_median"]
                                      and o["map50_95"] >= r["map50_95"]
                                      and (o["latency_ms_median"], o["map50_95"]) != (r["latency_ms_median"], r["map50_95"])
                                      for o in pts)]


def _plot(records: list[dict[str, Any]], path: Path) -> bool:
    pts = [r for r in records if r.get("map50_95") is not None and _timed(r)]
    if not pts:
        return False
    several = len({r.get("device") for r in pts}) > 1
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    front = pareto_front(records)
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in pts:
        shipped = r["status"] in ("passed", "reference")
        ax.scatter(r["latency_ms_median"], r["map50_95"], color="tab:blue" if shipped else "tab:red")
        label = f"{r['target']} {r['precision']}" + (f" @{r.get('device')}" if several else "")
        ax.annotate(label, (r["latency_ms_median"], r["map50_95"]), fontsize=7,
                    xytext=(3, 3), textcoords="offset points")
    for device in dict.fromkeys(r.get("device") for r in front):
        line = sorted((r for r in front if r.get("device") == device), key=lambda r: r["latency_ms_median"])
        if len(line) > 1:
            ax.plot([r["latency_ms_median"] for r in line], [r["map50_95"] for r in line], "--", color="grey")
    ax.set_xlabel("median latency (ms)")
    ax.set_ylabel("mAP50-95")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def _search_plot(searched: list[dict[str, Any]], path: Path) -> None:
    """mAP50-95 drop after each step of the int8 accuracy search, one line per target, against its budget: how
    sensitive each runtime's int8 graph is to what was kept float."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for r in searched:
        steps = r["accuracy_search"]["steps"]
        ax.plot([s["kept_float"] for s in steps], [s["drop_points"] for s in steps], "o-",
                label=f"{r['target']} {r['precision']}")
    budget = searched[0]["accuracy_search"]["max_drop_points"]
    ax.axhline(budget, color="grey", linestyle="--", label=f"budget {budget:g} pt")
    ax.set_xlabel("nodes kept float")
    ax.set_ylabel("mAP50-95 drop (pt)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def search_lines(records: list[dict[str, Any]], out: Path) -> list[str]:
    """The report's int8 accuracy search section (``quantize.max_drop``): each step of each searched row, and a
    chart of the drop against what was kept float (``int8_search.png``); none when no row was searched."""
    searched = [r for r in records if r.get("accuracy_search")]
    if not searched:
        return []
    lines = ["", "## INT8 accuracy search", "", "| target | precision | step | kept float | mAP50-95 drop (pt) | "
             "parity | seconds |", "|---|---|---|---|---|---|---|"]
    for r in searched:
        for s in r["accuracy_search"]["steps"]:
            lines.append(f"| {r['target']} | {r['precision']} | {s['step']} | {s['kept_float']} | "
                         f"{s['drop_points']:.2f} | {s['parity']} | {s['seconds']:.1f} |")
    _search_plot(searched, out / "int8_search.png")
    return lines + ["", "![int8 search](int8_search.png)"]


def _int8_against_fp32(profiled: list[dict[str, Any]]) -> list[str]:
    """Per target, device and thread count profiled in both: where int8's time goes against fp32's."""
    by_key = {(r["target"], r.get("device"), r.get("threads"), r["precision"]): r["profile"] for r in profiled
              if r["profile"].get("operators")}
    lines = []
    for (target, device, threads, precision), int8 in by_key.items():
        fp32 = by_key.get((target, device, threads, "fp32"))
        if precision != "int8" or fp32 is None:
            continue
        kinds = ", ".join(f"{k} {int8['by_kind_ms'][k]:.2f} ms (fp32 {fp32['by_kind_ms'][k]:.2f})" for k in KINDS)
        lines.append(f"- {target} on {device}, {threads} thread(s): int8 operators {int8['profiled_ms']:.2f} ms "
                     f"against fp32's {fp32['profiled_ms']:.2f} ms; {kinds}")
    return ["", "int8 against fp32 (ms per inference by kind of work):", "", *lines] if lines else []


def profile_lines(records: list[dict[str, Any]]) -> list[str]:
    """The report's per-operator section (``benchmark.profile``): per profiled row, where its time goes by kind
    and its top operators; none when no row was profiled."""
    profiled = [r for r in records if r.get("profile")]
    if not profiled:
        return []
    lines = ["", "## Per-operator profiles", "", "Milliseconds per inference from each runtime's own profiler; "
             "coverage = profiled time / end-to-end median.", "",
             "| target | precision | device | threads | coverage | " + " | ".join(KINDS) + " |",
             "|---|---|---|---|---|" + "---|" * len(KINDS)]
    for r in profiled:
        p = r["profile"]
        coverage = f"{p['coverage']:.0%}" if p.get("coverage") is not None else (p.get("unavailable") or "-")
        kinds = " | ".join(f"{p['by_kind_ms'].get(k, 0.0):.2f}" for k in KINDS) if p.get("operators") else \
            " | ".join("-" for _ in KINDS)
        lines.append(f"| {r['target']} | {r['precision']} | {r.get('device')} | {r.get('threads')} | {coverage} | "
                     f"{kinds} |")
    lines += _int8_against_fp32(profiled)
    for r in profiled:
        top = r["profile"].get("top") or []
        if not top:
            continue
        lines += ["", f"### {r['target']} {r['precision']} on {r.get('device')}: top {len(top)} operators", "",
                  "| operator | type | precision | ms | share |", "|---|---|---|---|---|"]
        lines += [f"| `{op['name']}` | {op['type']} | {op['precision']} | {op['ms']:.3f} | {op['share']:.1%} |"
                  for op in top]
    return lines


def write_results(out: Path, run_info: dict[str, Any], records: list[dict[str, Any]]) -> None:
    """Write results.json, results.csv, report.md, pareto.png (and int8_search.png) into ``out``."""
    write_json_atomic(out / "results.json", {"run": run_info, "records": records})
    with open(out / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(records)
    lines = [f"# edgeopt run `{run_info['name']}`", "", f"config hash `{run_info['config_hash']}`", "",
             "## This machine (reference and mAP)", ""]
    lines += [f"- {k}: {v}" for k, v in run_info["device"].items()]
    for name, info in (run_info.get("devices") or {}).items():
        if info.get("kind") == "local":
            continue
        label = " (emulated: its latency is no speed claim and stays off the Pareto front)" if info.get("emulated") else ""
        lines += ["", f"## Device `{name}`{label}", ""] + [f"- {k}: {v}" for k, v in info.items()]
    lines += ["", "## Results", "", "| " + " | ".join(COLUMNS[:-1]) + " |", "|" + "---|" * (len(COLUMNS) - 1)]
    for r in records:
        lines.append("| " + " | ".join(_fmt(r.get(c), 4) for c in COLUMNS[:-1]) + " |")
    if _plot(records, out / "pareto.png"):
        front = ", ".join(f"{r['target']} {r['precision']} ({r.get('device')})" for r in pareto_front(records))
        lines += ["", "## Latency vs accuracy", "", f"Pareto front: {front}", "", "![pareto](pareto.png)"]
    lines += prune_lines(run_info.get("prune"), records)
    lines += search_lines(records, out)
    lines += profile_lines(records)
    lines += ["", "## Versions", ""] + [f"- {k}: {v}" for k, v in run_info["versions"].items()]
    (out / "report.md").write_text("\n".join(lines) + "\n")
