"""The pruning section's warnings: a shipped artifact slower than unpruned, a missed target, a noisy choice."""

from edgeopt.core.paired_timing import settled_below, speedup_range
from edgeopt.report.pruning import prune_lines, pruning_warnings


def _latency(rounds: list[float] | None) -> dict:
    """The search's figures for a chosen candidate at 0.72x whose rounds' ratios were ``rounds`` (None: a
    measurement cached before rounds were kept)."""
    chosen = {"ratio": 0.4, "macs": 5e8, "latency_ms": 1.5, "speedup": 0.72}
    if rounds is not None:
        chosen.update(speedup_range=[min(rounds), max(rounds)], rounds=len(rounds), round_speedups=rounds)
    return {"target": "onnxruntime", "precision": "int8", "device": "local", "threads": 1, "target_speedup": 0.75,
            "aimed_at": 0.735, "ratio": 0.4, "unpruned_ms": 2.0, "pruned_ms": 1.5, "speedup": 0.72,
            "speedup_range": chosen.get("speedup_range"), "rounds": chosen.get("rounds"),
            "settled": None if rounds is None else settled_below(rounds, 0.75),
            "table": [{"ratio": 0.0, "macs": 1e9, "latency_ms": 2.0, "speedup": 1.0}, chosen]}


def _row(ms: float) -> dict:
    return {"target": "onnxruntime", "precision": "int8", "device": "local", "threads": 1, "latency_ms_median": ms}


def test_the_range_of_the_rounds_pairings():
    assert speedup_range([1.5, 1.6, 1.2], [2.0, 2.0, 2.0]) == [0.6, 0.8]


def test_a_choice_whose_rounds_did_not_settle_below_the_target_is_called_noise():
    straddling = [0.63, 0.80, 0.72, 0.78, 0.70]  # 3 of 5 at or below 0.75
    warnings = pruning_warnings({"latency": _latency(straddling)}, [_row(1.5)])
    assert len(warnings) == 1 and "5 pairings ranged 0.63-0.80x of unpruned" in warnings[0]
    assert "prune.target_speedup 0.75" in warnings[0]
    # settled: 6 of 7 below, the one outlier round widens the range past the target but decides nothing
    assert pruning_warnings({"latency": _latency([0.70, 0.72, 1.10, 0.71, 0.73, 0.69, 0.72])}, [_row(1.5)]) == []
    assert pruning_warnings({"latency": _latency(None)}, [_row(1.5)]) == []  # a measurement cached before rounds


def test_a_shipped_artifact_slower_than_unpruned_or_off_target_is_said():
    slower, missed = (pruning_warnings({"latency": _latency([0.70, 0.74, 0.72])}, [_row(ms)]) for ms in (2.2, 1.6))
    assert len(slower) == 1 and "slower than unpruned: 2.20 ms against 2.00 ms (1.10x)" in slower[0]
    assert len(missed) == 1 and "misses prune.target_speedup 0.75 in the benchmark: 0.80x" in missed[0]


def test_the_search_table_shows_each_candidates_range():
    report = {"ratio": 0.4, "importance": "l2", "allocation": "uniform", "round_to": 8, "macs_reduction": 0.5,
              "recovery": {"mode": "none", "epochs": 0}, "latency": _latency([0.63, 0.80, 0.72, 0.78, 0.70])}
    for key in ("before", "after_prune", "after_recovery"):
        report[key] = {"macs": 1e9, "params": 1e6, "map50_95": 0.5, "latency_ms_torch_1thread": 3.0}
    text = "\n".join(prune_lines(report, [_row(1.5)]))
    assert "| 0.400 | 500.0 | 1.50 | 0.72 | 0.63-0.80 |" in text and "| 0.000 | 1000.0 | 2.00 | 1.00 | - |" in text
    assert "- **timings on local varied between rounds" in text


def test_a_choice_of_the_dropped_blocks_alone_is_named_and_its_noise_read_from_its_own_row():
    """Ratio 0 chosen because the depth-only model met the target: two table rows at 0.000, the second named; a
    noisy-choice warning quotes that measurement's rounds, not the unpruned row's (which has none)."""
    latency = _latency([0.63, 0.80, 0.72, 0.78, 0.70])
    depth_only = {**latency["table"][1], "ratio": 0.0, "depth_only": True}
    latency.update(ratio=0.0, table=[latency["table"][0], depth_only])
    report = {"ratio": 0.0, "importance": "l2", "allocation": "uniform", "round_to": 8, "macs_reduction": 0.5,
              "recovery": {"mode": "none", "epochs": 0}, "latency": latency}
    for key in ("before", "after_prune", "after_recovery"):
        report[key] = {"macs": 1e9, "params": 1e6, "map50_95": 0.5, "latency_ms_torch_1thread": 3.0}
    text = "\n".join(prune_lines(report, [_row(1.5)]))
    assert "| 0.000 (blocks dropped only) | 500.0 | 1.50 | 0.72 | 0.63-0.80 |" in text
    assert "the chosen ratio's 5 pairings ranged 0.63-0.80x" in text


def _twin_row(target: str, ms: float, x: float) -> dict:
    return {"target": target, "precision": "int8", "device": "pi5", "threads": 4, "latency_ms_median": ms,
            "unpruned_latency_ms": ms / x, "x_unpruned": x, "x_unpruned_range": [x - 0.05, x + 0.05]}


def test_every_pruned_row_timed_beside_its_twin_is_shown_and_a_slower_one_said_without_a_latency_target():
    """A fixed-ratio run (no latency target): rows timed beside their unpruned twins fill the table; the one
    slower than its twin is warned about, whatever the target."""
    report = {"ratio": 0.3, "importance": "l2", "allocation": "uniform", "round_to": 8, "macs_reduction": 0.3,
              "recovery": {"mode": "none", "epochs": 0}}
    for key in ("before", "after_prune", "after_recovery"):
        report[key] = {"macs": 1e9, "params": 1e6, "map50_95": 0.5, "latency_ms_torch_1thread": 3.0}
    rows = [_twin_row("ncnn", 8.0, 0.8), _twin_row("openvino", 10.6, 1.06), _row(1.5)]
    warnings = pruning_warnings(report, rows)
    assert len(warnings) == 1 and warnings[0] == ("pruned openvino int8 on pi5 (4 thread(s)) is slower than its "
                                                  "unpruned twin timed beside it: 10.60 ms against 10.00 ms (1.06x)")
    text = "\n".join(prune_lines(report, rows))
    assert "| ncnn | int8 | pi5 | 4 | 8.00 | 10.00 | 0.80 | 0.75-0.85 |" in text
    assert "| onnxruntime |" not in text  # a row not timed beside a twin is not in that table
    assert f"- **{warnings[0]}**" in text
