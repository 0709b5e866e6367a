"""prune.allocation 'latency': per-block ratios by measured time saved per unit of output distortion."""

import json

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from edgeopt.config.load import load_config
from edgeopt.errors import ConfigError
from edgeopt.pipeline import run_pipeline
from edgeopt.stages.prune_allocation import PROBE_RATIO, LatencyAllocation, allocation_weights
from edgeopt.stages.prune_latency import HIGHEST
from helpers import write_config


def test_a_block_gets_a_ratio_proportional_to_time_saved_per_distortion():
    weights = allocation_weights([0.10, 0.10, 0.05], [0.2, 0.1, 0.1])
    assert weights == pytest.approx([0.75, 1.5, 0.75])  # 0.5, 1.0, 0.5 per unit of distortion; mean 1
    assert sum(weights) / len(weights) == pytest.approx(1.0)


def test_a_block_that_saved_no_time_is_not_pruned_and_none_saving_is_refused():
    assert allocation_weights([0.1, -0.02, 0.0], [0.1, 0.1, 0.1]) == pytest.approx([3.0, 0.0, 0.0])
    # a probe that changed nothing (distortion 0) is not weighted by what timing noise said it saved
    assert allocation_weights([0.1, 0.01], [0.1, 0.0]) == pytest.approx([2.0, 0.0])
    with pytest.raises(ConfigError, match="pruning no block of the model saved measurable time"):
        allocation_weights([-0.01, 0.0], [0.1, 0.2])


def test_per_layer_ratios_scale_with_the_mean_and_stop_at_the_highest():
    allocation = LatencyAllocation([["a", "b"], ["c"]], [1.5, 0.5], [])
    assert allocation.overrides(0.4) == pytest.approx({"a": 0.6, "b": 0.6, "c": 0.2}, abs=1e-4)
    # the first block stops at HIGHEST; the second takes the rest of the mean instead of stalling at 0.3
    assert allocation.overrides(0.8) == pytest.approx({"a": HIGHEST, "b": HIGHEST, "c": 1.6 - HIGHEST}, abs=1e-4)
    assert allocation.block_ratios(0.95) == pytest.approx([HIGHEST, HIGHEST])  # beyond reach: all at HIGHEST


@given(weights=st.lists(st.one_of(st.just(0.0), st.floats(1e-3, 5.0)), min_size=1, max_size=8).filter(any),
       ratio=st.floats(0.0, HIGHEST))
def test_the_blocks_ratios_average_to_the_ratio_asked_whenever_it_is_reachable(weights, ratio):
    allocation = LatencyAllocation([[str(i)] for i in range(len(weights))], weights, [])
    ratios = allocation.block_ratios(ratio)
    reachable = HIGHEST * sum(w > 0 for w in weights) / len(weights)
    assert all(0.0 <= r <= HIGHEST for r in ratios)
    assert sum(ratios) / len(ratios) == pytest.approx(min(ratio, reachable), abs=1e-3)
    assert all(r == 0.0 for r, w in zip(ratios, weights) if w == 0)


def test_latency_allocation_needs_a_latency_target(tmp_path):
    base = yaml.safe_load(write_config(tmp_path).read_text())
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({**base, "prune": {"allocation": "latency"}}))
    with pytest.raises(ConfigError, match="prune.allocation 'latency' .* needs prune.target_speedup"):
        load_config(tmp_path / "c.yaml")


def test_each_block_is_measured_on_the_runtime_and_the_shipped_model_is_the_measured_candidate(tmp_path):
    """ONNX Runtime int8 on this machine, three blocks: each pruned alone and timed beside the unpruned artifact,
    its output distortion measured; the ratio search scales the blocks' weights; the model recovered and exported
    has the channel counts of the candidate that met the target; prune.json and the report show the blocks.
    With a residual block dropped first and the channel multiple measured (round_to: auto): the three measure
    the same shallower model, and what ships is what was measured."""
    cfg = write_config(tmp_path, model={"source": "reference", "input_size": 160},
                       stages=["calibrate", "quantize", "prune", "export"],
                       prune={"target_speedup": 0.85, "allocation": "latency", "drop_blocks": 1, "round_to": "auto",
                              # compared measurements timed to +-0.1 here, not the default 0.02: test time
                              "latency": {"precision": "int8", "runs": 20, "blocks": 3, "tolerance": 0.1},
                              "recovery": {"mode": "none"}})
    result = run_pipeline(load_config(cfg))
    report = result.run_info["prune"]
    blocks = report["allocation_measured"]["blocks"]
    assert report["allocation_measured"]["probe_ratio"] == PROBE_RATIO and len(blocks) == 3
    assert all(b["macs"] < report["before"]["macs"] and b["distortion"] > 0 for b in blocks)
    # time saved against the model with the block dropped: one baseline for every block
    baselines = [b["speedup"] / (1 - b["saved"]) for b in blocks]
    assert max(baselines) - min(baselines) < 1e-3
    expected = allocation_weights([b["saved"] for b in blocks], [b["distortion"] for b in blocks])
    assert [b["weight"] for b in blocks] == pytest.approx(expected, abs=1e-3)
    latency = report["latency"]
    chosen = next(t for t in latency["table"] if t["ratio"] == latency["ratio"])
    assert latency["speedup"] <= latency["aimed_at"] and report["allocation"] == "latency"
    assert report["after_prune"]["macs"] == chosen["macs"]  # the shipped structure is the one measured
    assert len(report["depth"]["dropped"]) == 1 and report["round_to"] == report["round_to_measured"]["round_to"]
    assert all(t["macs"] < report["before"]["macs"] for t in report["round_to_measured"]["table"])
    weighted = LatencyAllocation([[b["first"]] for b in blocks], [b["weight"] for b in blocks], blocks)
    assert [b["ratio"] for b in blocks] == weighted.block_ratios(report["ratio"])  # the mean is the ratio chosen
    text = (tmp_path / "run" / "report.md").read_text()
    assert "Allocation by latency: each block of layers pruned alone at 0.5" in text
    assert f"| {blocks[0]['first']} .. {blocks[0]['last']} |" in text
    again = run_pipeline(load_config(cfg))
    assert again.cache_misses == [] and again.run_info["prune"]["allocation_measured"] == report["allocation_measured"]
    assert json.loads((tmp_path / "run" / "results.json").read_text())["run"]["prune"]["latency"] == latency
