"""What pruning bought: MACs, parameters and accuracy before and after, and, when the ratio was chosen by a
latency target, the measured latencies, checked against the shipped artifact's own benchmark."""

from __future__ import annotations

from typing import Any


def _m(value: float) -> str:
    return f"{value / 1e6:.1f}"


def measured_on(figures: dict[str, Any]) -> str:
    """'<target> <precision> on <device>, N thread(s)' of a latency measurement's description."""
    return f"{figures['target']} {figures['precision']} on {figures['device']}, {figures['threads']} thread(s)"


def latency_target(latency: dict[str, Any]) -> str:
    """How the latency target was given: 'prune.target_speedup S', or 'prune.target_latency_ms T (Sx of the
    unpruned U ms)' with the fraction it was measured to be."""
    if latency.get("target_latency_ms") is not None:
        return (f"prune.target_latency_ms {latency['target_latency_ms']:g} ({latency['target_speedup']:g}x of the "
                f"unpruned {latency['unpruned_ms']:.2f} ms)")
    return f"prune.target_speedup {latency['target_speedup']:g}"


def _saved(value: float | None) -> str:
    return "removes nothing" if value is None else f"{value:.2f}"


def _latency_artifact(latency: dict[str, Any], r: dict[str, Any]) -> bool:
    """Whether row ``r`` is the artifact the latency target was measured on (target, precision, device, threads)."""
    return (r.get("target"), r.get("precision"), r.get("device"), r.get("threads")) == (
        latency["target"], latency["precision"], latency["device"], latency["threads"])


def against_unpruned(report: dict[str, Any], r: dict[str, Any]) -> float | None:
    """Row ``r``'s latency as a fraction of the unpruned artifact's on its device: the median round of the two
    timed in alternation by the benchmark (``x_unpruned``, with benchmark.unpruned_twin), else, for the latency
    target's artifact, its median over the search's unpruned figure; None when neither was measured."""
    if r.get("x_unpruned") is not None:
        return r["x_unpruned"]
    latency = report.get("latency")
    if latency and _latency_artifact(latency, r) and r.get("latency_ms_median") is not None:
        return r["latency_ms_median"] / latency["unpruned_ms"]
    return None


def shipped_against_unpruned(report: dict[str, Any], records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The benchmarked rows of the artifact the latency target was set on, each with its ``speedup`` against
    the unpruned artifact on the same device (:func:`against_unpruned`)."""
    latency = report.get("latency")
    if not latency:
        return []
    rows = [{**r, "speedup": against_unpruned(report, r)} for r in records if _latency_artifact(latency, r)]
    return [r for r in rows if r["speedup"] is not None]


def _range(pair: list[float] | None) -> str:
    return f"{pair[0]:.2f}-{pair[1]:.2f}" if pair else "-"


def pruning_warnings(report: dict[str, Any] | None, records: list[dict[str, Any]]) -> list[str]:
    """A line for every pruned artifact measured slower than its unpruned twin, one for each measurement of the
    latency target's artifact that misses the target, and one when the search's own rounds of the chosen
    candidate did not settle below the target (fewer than 3 in 4 at or below it: the device's timing noise is as
    large as the decision)."""
    if not report:
        return []
    latency, lines = report.get("latency"), []
    if latency and latency.get("settled") is False:
        low, high = latency["speedup_range"]
        lines.append(f"timings on {latency['device']} varied between rounds: the chosen ratio's {latency['rounds']} "
                     f"pairings ranged {low:.2f}-{high:.2f}x of unpruned, too few of them at or below "
                     f"{latency_target(latency)}, so the choice is within the device's "
                     "timing noise (raise prune.latency.runs, or measure on a quieter device)")
    for r in records:
        ratio = against_unpruned(report, r)
        if ratio is None or r.get("status") == "reference":
            continue
        what = f"pruned {r['target']} {r['precision']} on {r['device']} ({r['threads']} thread(s))"
        if ratio >= 1.0:
            twin = r.get("x_unpruned") is not None
            unpruned_ms = r["unpruned_latency_ms"] if twin else latency["unpruned_ms"]
            lines.append(f"{what} is slower than {'its unpruned twin timed beside it' if twin else 'unpruned'}: "
                         f"{r['latency_ms_median']:.2f} ms against {unpruned_ms:.2f} ms ({ratio:.2f}x)")
        elif latency and _latency_artifact(latency, r) and ratio > latency["target_speedup"]:
            lines.append(f"{what} misses {latency_target(latency)} in the benchmark: "
                         f"{ratio:.2f}x of unpruned (the search measured {latency['speedup']:.2f}x)")
    return lines


def prune_lines(report: dict[str, Any] | None, records: list[dict[str, Any]]) -> list[str]:
    """The report's pruning section (empty without pruning)."""
    if not report:
        return []
    recovery = report["recovery"]
    done = f"after recovery ({recovery['mode']}, {recovery['epochs']} epoch(s))" if recovery["mode"] != "none" \
        else "recovery: none"
    lines = ["", "## Pruning", "",
             f"Channel ratio {report['ratio']:.3f} ({report['importance']} importance, {report['allocation']} "
             f"allocation, channels in multiples of {report['round_to']}): MACs -{report['macs_reduction']:.1%}.", "",
             "| model | MACs (M) | params (M) | mAP50-95 | torch ms (1 thread) |", "|---|---|---|---|---|"]
    for label, key in (("unpruned", "before"), ("pruned", "after_prune"), (done, "after_recovery")):
        f = report[key]
        lines.append(f"| {label} | {_m(f['macs'])} | {_m(f['params'])} | {f['map50_95']:.4f} | "
                     f"{f['latency_ms_torch_1thread']:.2f} |")
    depth = report.get("depth")
    if depth:
        lines += ["", f"Residual blocks dropped whole before channel pruning (prune.drop_blocks "
                      f"{len(depth['dropped'])}), the least distorting of {len(depth['ranked'])} on the calibration "
                      f"images: {', '.join(depth['dropped'])}."]
    exported = report.get("at_exported_size")
    if exported:
        lines += ["", f"Pruned and recovered at prune.input_size; at the exported size ({exported['input_size']} px) "
                      f"the pruned model scores mAP50-95 {exported['map50_95']:.4f}, the figure its artifacts are "
                      "judged against."]
    measured = report.get("round_to_measured")
    if measured:
        lines += ["", f"Channel multiple {measured['round_to']} chosen by measurement ({measured_on(measured)}, "
                      f"at ratio {measured['at_ratio']:.3f}): the most time saved per MAC removed, a larger multiple counting "
                      "only when 3% better.", "", "| multiple | MACs (M) | median ms | ms saved per GMAC removed |",
                  "|---|---|---|---|"]
        lines += [f"| {t['round_to']} | {_m(t['macs'])} | {t['latency_ms']:.2f} | {_saved(t['saved_ms_per_gmac'])} |"
                  for t in measured["table"]]
        lines += ["", "(time saved from each candidate's latency relative to the unpruned artifact timed beside it)"]
    latency = report.get("latency")
    if latency:
        lines += ["", f"The ratio was chosen by measured latency ({measured_on(latency)}) for "
                      f"{latency_target(latency)}"
                      + (f" (aiming at {latency['aimed_at']:g}, prune.latency.margin below it, for timing noise)"
                         if latency.get("aimed_at", latency["target_speedup"]) != latency["target_speedup"] else "")
                      + f": {latency['unpruned_ms']:.2f} ms unpruned, "
                      f"{latency['pruned_ms']:.2f} ms at ratio {latency['ratio']:.3f} ({latency['speedup']:.2f}x).",
                  "", "| ratio | MACs (M) | median ms | x unpruned | rounds' range |", "|---|---|---|---|---|"]
        lines += [f"| {t['ratio']:.3f}{' (blocks dropped only)' if t.get('depth_only') else ''} | {_m(t['macs'])} | "
                  f"{t['latency_ms']:.2f} | {t['speedup']:.2f} | {_range(t.get('speedup_range'))} |"
                  for t in latency["table"]]
        lines += _allocation_lines(report.get("allocation_measured"))
        shipped = shipped_against_unpruned(report, records)
        if shipped:
            lines += ["", "Measured again by the benchmark stage (recovered weights, same channel counts): "
                      + "; ".join(f"{r['latency_ms_median']:.2f} ms ({r['speedup']:.2f}x of unpruned)" for r in shipped)
                      + "."]
    lines += _twin_lines(records)
    lines += [f"- **{w}**" for w in pruning_warnings(report, records)]
    return lines


def _twin_lines(records: list[dict[str, Any]]) -> list[str]:
    """What pruning bought on each device: every pruned row timed in alternation with its unpruned twin."""
    rows = [r for r in records if r.get("x_unpruned") is not None]
    if not rows:
        return []
    lines = ["", "What pruning bought where each artifact runs: the pruned bundle and the same config's unpruned "
                 "bundle timed in alternation (benchmark.unpruned_twin; median of the rounds' ratios).", "",
             "| target | precision | device | threads | pruned ms | unpruned ms | x unpruned | rounds' range |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['target']} | {r['precision']} | {r['device']} | {r['threads']} | {r['latency_ms_median']:.2f} | "
              f"{r['unpruned_latency_ms']:.2f} | {r['x_unpruned']:.2f} | {_range(r.get('x_unpruned_range'))} |"
              for r in rows]
    return lines


def _allocation_lines(allocation: dict[str, Any] | None) -> list[str]:
    """The measured blocks of prune.allocation 'latency': time saved and distortion when pruned alone, and the
    share of the ratio each got."""
    if not allocation:
        return []
    lines = ["", f"Allocation by latency: each block of layers pruned alone at {allocation['probe_ratio']:g}, timed "
                 "beside the unpruned artifact and its output distortion measured on the calibration images; a "
                 "block's ratio is proportional to its weight (time saved per unit of distortion, relative to the "
                 "mean), the blocks' mean being the ratio above.", "",
             "| block | convolutions | time saved | output distortion | weight | ratio |", "|---|---|---|---|---|---|"]
    lines += [f"| {b['first']} .. {b['last']} | {b['convolutions']} | {b['saved']:.1%} | {b['distortion']:.4g} | "
              f"{b['weight']:.2f} | {b['ratio']:.3f} |" for b in allocation["blocks"]]
    return lines
