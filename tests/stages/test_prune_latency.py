"""prune.target_speedup: the pruning ratio chosen by the measured latency of the artifact that ships."""

import json

import pytest
import yaml

from edgeopt.config.load import load_config
from edgeopt.config.schema import PruneConfig
from edgeopt.errors import ConfigError
from edgeopt.pipeline import run_pipeline
from edgeopt.core.paired_timing import MAX_ROUNDS, ROUNDS, settled_below
from edgeopt.stages.prune_latency import COARSEST, HIGHEST, multiple_by_measurement, search_ratio
from helpers import write_config


def _measure_as(latency_of):
    calls = []

    def measure(ratio):
        calls.append(ratio)
        return {"latency_ms": latency_of(ratio), "macs": int(1e9 * (1 - ratio) ** 2)}

    return measure, calls


def test_the_search_aims_the_margin_below_the_target():
    measure, _ = _measure_as(lambda r: 10.0 * (1 - r))
    ratio, table = search_ratio(measure, 0.75, margin=0.1)
    assert next(t for t in table if t["ratio"] == ratio)["speedup"] <= 0.675
    assert all(t["speedup"] > 0.675 for t in table if 0 < t["ratio"] < ratio)
    with pytest.raises(ConfigError, match=r"target_speedup 0.05 \(aiming at 0.045, prune.latency.margin below it\)"):
        search_ratio(measure, 0.05, margin=0.1)


@pytest.mark.parametrize("target", [0.9, 0.75, 0.5, 0.3])
def test_the_smallest_ratio_that_meets_the_target_is_chosen(target):
    measure, calls = _measure_as(lambda r: 10.0 * (1 - r) ** 1.5)
    ratio, table = search_ratio(measure, target)
    exact = 1 - target ** (1 / 1.5)  # where the curve crosses the target
    assert ratio >= exact and ratio - exact <= HIGHEST / 2 ** 6 + 1e-9, (ratio, exact)
    assert calls[0] == 0.0 and len(calls) == 7
    assert [t["ratio"] for t in table] == sorted(calls)
    chosen = next(t for t in table if t["ratio"] == ratio)
    assert chosen["speedup"] <= target and all(t["speedup"] > target for t in table if t["ratio"] < ratio)


def test_a_target_no_ratio_meets_is_refused_with_the_measurements():
    measure, _ = _measure_as(lambda r: 10.0 - r)  # at most 9% faster
    with pytest.raises(ConfigError, match=r"target_speedup 0.5 is not met up to ratio 0.886 \(measured ratio 0.450: 0.95x, .*0.91x\)"):
        search_ratio(measure, 0.5)


def test_dropped_blocks_that_meet_the_target_alone_leave_every_channel():
    """The bisection's smallest step would still cut ~1.4% of the channels (and need recovery) for nothing."""
    measure, calls = _measure_as(lambda r: 10.0 * (1 - r))
    depth_only = {"latency_ms": 7.0, "macs": int(0.6e9), "speedup": 0.7}
    ratio, table = search_ratio(measure, 0.75, start=depth_only)
    assert ratio == 0.0 and calls == [0.0]
    assert [t.get("depth_only", False) for t in table] == [False, True] and table[1]["speedup"] == 0.7
    # not fast enough alone: the channel search runs as before
    ratio, table = search_ratio(measure, 0.6, start=depth_only)
    assert ratio > 0 and len(calls) == 8 and not any(t.get("depth_only") for t in table)


class _Multiples:
    """A runtime with a fixed cost of 1 ms plus 10 ms per GMAC, where multiple 64 prunes nothing at ratio 0.3,
    32 prunes less than 8 does, and 16 runs 20% faster than its MACs say."""

    def __init__(self):
        self.artifact = type("A", (), {"describe": lambda self: {"target": "t"}})()
        self.cfg = PruneConfig()

    def __call__(self, ratio, round_to, tolerance=None):
        # the multiples are compared with each other: timed to a known precision
        assert ratio == 0.0 or tolerance == PruneConfig().latency.tolerance
        macs = {0.0: 1e9}.get(ratio) or {8: 0.5e9, 16: 0.5e9, 32: 0.65e9, 64: 1e9}[round_to]
        ms = 1.0 + 10.0 * macs / 1e9 * ({16: 0.8, 32: 0.5}.get(round_to, 1.0) if ratio else 1.0)
        return {"latency_ms": ms, "macs": int(macs), "speedup": ms / 11.0}


def test_the_multiple_saving_most_time_per_removed_mac_is_chosen_not_the_one_pruning_least():
    chosen = multiple_by_measurement(_Multiples(), 0.3)
    assert chosen["round_to"] == 16
    rows = {t["round_to"]: t for t in chosen["table"]}
    assert rows[64]["saved_ms_per_gmac"] is None  # removes nothing: never chosen, though fastest per remaining MAC
    assert rows[32]["saved_ms_per_gmac"] > rows[16]["saved_ms_per_gmac"]  # efficient, but too coarse a cut
    assert rows[16]["saved_ms_per_gmac"] == pytest.approx(12.0)  # (11 - 5) ms saved / 0.5 GMAC removed


class _MultiplesAfterDroppedBlocks(_Multiples):
    """prune.drop_blocks took the model from 1 GMAC and 11 ms to 0.6 GMAC and 7 ms; at ratio 0.3 multiples 8 and
    16 then remove 0.1 GMAC more (16 saving more time), 32 a fifth of that."""

    def __init__(self):
        super().__init__()
        self.cfg = PruneConfig(drop_blocks=2)

    def prune(self, ratio, round_to, overrides):
        assert ratio == 0.0 and overrides == {}
        return "dropped only"

    def timed(self, student, label, tolerance=None):
        assert student == "dropped only" and "dropped blocks only" in label
        assert tolerance == PruneConfig().latency.tolerance
        return {"latency_ms": 7.0, "macs": int(0.6e9), "speedup": 7.0 / 11.0}

    def __call__(self, ratio, round_to, tolerance=None):
        if ratio == 0.0:
            return {"latency_ms": 11.0, "macs": int(1e9)}
        macs, ms = {8: (0.5e9, 6.0), 16: (0.5e9, 5.6), 32: (0.58e9, 6.9), 64: (0.6e9, 7.0)}[round_to]
        return {"latency_ms": ms, "macs": int(macs), "speedup": ms / 11.0}


def test_with_dropped_blocks_the_multiples_are_weighed_on_what_they_remove_from_the_shallower_model():
    """The dropped blocks' time and MACs are the same for every multiple: counted in, they would hide the
    differences between multiples and let a too coarse one pass as removing enough."""
    chosen = multiple_by_measurement(_MultiplesAfterDroppedBlocks(), 0.3)
    rows = {t["round_to"]: t for t in chosen["table"]}
    assert rows[16]["saved_ms_per_gmac"] == pytest.approx(14.0)  # (7 - 5.6) ms saved / 0.1 GMAC removed
    assert rows[8]["saved_ms_per_gmac"] == pytest.approx(10.0)
    assert chosen["round_to"] == 16  # 32 removes a fifth of what 8 does: too coarse, however efficient


def test_the_latency_artifact_must_be_configured(tmp_path):
    base = yaml.safe_load(write_config(tmp_path).read_text())
    base["stages"] = ["calibrate", "quantize", "prune", "export"]
    for latency, message in (({"target": "ncnn"}, "prune.latency.target 'ncnn' is not a configured target"),
                             ({"precision": "fp16"}, "prune.latency.precision 'fp16' is not configured")):
        for target in ({"target_speedup": 0.8}, {"target_latency_ms": 5.0}):
            (tmp_path / "c.yaml").write_text(yaml.safe_dump({**base, "prune": {**target, "latency": latency}}))
            with pytest.raises(ConfigError, match=message):
                load_config(tmp_path / "c.yaml")
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({**base, "prune": {"target_speedup": 0.8, "target_latency_ms": 5}}))
    with pytest.raises(ConfigError, match="not target_speedup and target_latency_ms"):
        load_config(tmp_path / "c.yaml")


def test_the_ratio_and_multiple_are_measured_on_the_runtime_and_the_benchmark_checks_them(tmp_path):
    """ONNX Runtime int8 on this machine: the channel multiple it runs fastest per MAC, then the ratio meeting
    0.8x, every candidate exported and timed; recorded in prune.json, the manifests and the report beside the
    shipped artifact's own benchmark; a re-run measures nothing again."""
    cfg = write_config(tmp_path, model={"source": "reference", "input_size": 160},
                       stages=["calibrate", "quantize", "prune", "export", "benchmark"],
                       prune={"target_speedup": 0.8, "round_to": "auto",
                              # compared measurements timed to +-0.1 here, not the default 0.02: test time
                              "latency": {"precision": "int8", "runs": 20, "tolerance": 0.1},
                              "recovery": {"mode": "none"}})
    result = run_pipeline(load_config(cfg))
    report = result.run_info["prune"]
    multiples = report["round_to_measured"]
    assert [t["round_to"] for t in multiples["table"]] == [8, 16, 32, 64] and multiples["at_ratio"] == 0.3
    unpruned = report["before"]["macs"]
    finest = unpruned - multiples["table"][0]["macs"]
    best = max(t["saved_ms_per_gmac"] or 0.0 for t in multiples["table"] if unpruned - t["macs"] >= COARSEST * finest)
    chosen = next(t for t in multiples["table"] if t["round_to"] == multiples["round_to"])
    assert report["round_to"] == multiples["round_to"] and chosen["saved_ms_per_gmac"] >= best / 1.03
    key = next(r["cache_key"] for r in result.records if r.get("cache_key"))
    lineage = json.loads((tmp_path / "run" / "cache" / "export" / key / "edgeopt.json").read_text())["lineage"]["pruning"]
    assert lineage["round_to"] == report["round_to"] and lineage["ratio"] == report["ratio"]
    assert lineage["round_to_chosen_by"] == "measured on onnxruntime int8 on local, 1 thread(s)"
    assert lineage["ratio_chosen_by"].startswith("prune.target_speedup 0.8 measured on onnxruntime int8")
    latency = report["latency"]
    assert (latency["target"], latency["precision"], latency["device"]) == ("onnxruntime", "int8", "local")
    table = latency["table"]
    assert len(table) == 7 and table[0]["ratio"] == 0.0 and latency["ratio"] > 0
    assert latency["aimed_at"] == pytest.approx(0.8 * (1 - 0.02))  # prune.latency.margin's default below 0.8
    assert latency["speedup"] <= latency["aimed_at"] and result.run_info["prune"]["ratio"] == latency["ratio"]
    assert all(t["speedup"] > latency["aimed_at"] for t in table if 0 < t["ratio"] < latency["ratio"])
    assert [t["macs"] for t in table] == sorted((t["macs"] for t in table), reverse=True)
    measured = tmp_path / "run" / "cache" / "prune-latency"
    entries = [json.loads(e.joinpath("latency.json").read_text()) for e in measured.iterdir()]
    rows = [t for t in [*multiples["table"], *table] if "unpruned_ms" in t]  # the pruned candidates
    distinct = {(t["latency_ms"], t["macs"], t["speedup"]) for t in rows}
    # one entry per artifact: the unpruned one, and each distinct channel structure among the 4 multiples and 6
    # ratios (two ratios that round to the same channel counts share a measurement: one figure for one artifact)
    assert len(entries) == 1 + len(distinct) <= 1 + 4 + 6
    kept = {p.relative_to(measured).parts[0] for p in measured.rglob("*.onnx")}
    assert len(kept) == 1  # only the unpruned bundle is kept (timed beside each candidate), the candidates' are not
    assert all(t["unpruned_ms"] > 0 for t in table[1:])  # each candidate timed beside the unpruned one
    # the median pairing lies within the rounds' range, which the report's table shows
    assert all(t["speedup_range"][0] <= t["speedup"] <= t["speedup_range"][1] for t in table[1:])
    assert all(ROUNDS <= t["rounds"] == len(t["round_speedups"]) <= MAX_ROUNDS for t in table[1:])
    assert latency["settled"] == settled_below(next(t for t in table if t["ratio"] == latency["ratio"])["round_speedups"], 0.8)
    text = (tmp_path / "run" / "report.md").read_text()
    assert "## Pruning" in text and "chosen by measured latency (onnxruntime int8 on local" in text
    assert "| ratio | MACs (M) | median ms | x unpruned | rounds' range |" in text
    assert "(aiming at 0.784, prune.latency.margin below it, for timing noise)" in text
    assert f"Channel multiple {report['round_to']} chosen by measurement" in text
    assert "Measured again by the benchmark stage" in text
    again = run_pipeline(load_config(cfg))
    assert again.cache_misses == [] and again.run_info["prune"]["latency"] == latency
    assert json.loads((tmp_path / "run" / "results.json").read_text())["run"]["prune"]["latency"] == latency
    # the same target in milliseconds: 0.8 of the unpruned latency measured; the same measurements, the same ratio
    in_ms = round(table[0]["latency_ms"] * 0.8, 4)
    ms_cfg = write_config(tmp_path, model={"source": "reference", "input_size": 160},
                          stages=["calibrate", "quantize", "prune", "export", "benchmark"],
                          prune={"target_latency_ms": in_ms, "round_to": "auto",
                                 "latency": {"precision": "int8", "runs": 20}, "recovery": {"mode": "none"}})
    by_ms = run_pipeline(load_config(ms_cfg)).run_info["prune"]["latency"]
    assert by_ms["target_latency_ms"] == in_ms and by_ms["target_speedup"] == pytest.approx(0.8, abs=1e-4)
    assert by_ms["ratio"] == latency["ratio"] and by_ms["table"] == table
    assert f"for prune.target_latency_ms {in_ms:g} (0.8x of the unpruned" in (tmp_path / "run" / "report.md").read_text()
    fast_enough = yaml.safe_load(ms_cfg.read_text())
    fast_enough["prune"]["target_latency_ms"] = round(table[0]["latency_ms"] * 10, 3)
    ms_cfg.write_text(yaml.safe_dump(fast_enough))
    with pytest.raises(ConfigError, match="already runs in") as info:
        run_pipeline(load_config(ms_cfg))
    assert "lower prune.target_latency_ms" in str(info.value.hint)
