"""The pipeline end to end on the embedded detector (small settings): results, cache reuse, resume after kill."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import edgeopt
from helpers import write_config
from edgeopt.core.manifest import verify_bundle

REQUIRED = {"target", "precision", "device", "latency_ms_median", "latency_ms_p90", "map50_95", "map50",
            "map50_95_drop", "size_bytes", "parity_score_cosine", "parity_score_max_abs", "parity_box_max_abs",
            "parity_box_agreement", "parity_boxes_compared", "status", "reason"}


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pipeline")
    config = write_config(tmp)
    return config, edgeopt.run(edgeopt.load_config(str(config)))


def test_run_writes_results_and_bundles(first_run):
    _, result = first_run
    data = json.loads((result.output / "results.json").read_text())
    rows = {(r["target"], r["precision"]): r for r in data["records"]}
    assert set(rows) == {("torch", "fp32"), ("onnxruntime", "fp32"), ("onnxruntime", "int8")}
    for key in (("onnxruntime", "fp32"), ("onnxruntime", "int8")):
        r = rows[key]
        assert REQUIRED <= set(r), REQUIRED - set(r)
        assert r["status"] == "passed", r["reason"]
        assert verify_bundle(Path(r["artifact"])) == []
    assert rows[("onnxruntime", "fp32")]["parity_score_cosine"] > 0.9999
    assert abs(rows[("onnxruntime", "fp32")]["map50_95"] - rows[("torch", "fp32")]["map50_95"]) < 0.005
    assert rows[("onnxruntime", "int8")]["size_bytes"] < 0.4 * rows[("onnxruntime", "fp32")]["size_bytes"]
    info = data["run"]
    assert info["device"]["cpu"] and info["device"]["cores"] and "onnxruntime" in info["versions"]
    assert (result.output / "results.csv").read_text().startswith("target,precision")
    assert "Pareto front" in (result.output / "report.md").read_text()


def test_unchanged_rerun_is_all_cache(first_run):
    config, _ = first_run
    again = edgeopt.run(edgeopt.load_config(str(config)))
    # calibrate, quantize, 2 exports, 5 benchmark items (reference, mAP of each bundle, timing of each bundle)
    assert again.cache_misses == [] and len(again.cache_hits) == 9


def test_changed_benchmark_reruns_only_benchmark(first_run):
    config, _ = first_run
    result = edgeopt.run(edgeopt.load_config(str(config), ["benchmark.warmup=3"]))
    assert result.cache_misses and all(m.startswith("benchmark/") for m in result.cache_misses)


def test_a_row_over_its_map_budget_fails_and_is_not_shipped(first_run):
    """The gate judges accuracy too: with an fp32 budget no artifact can meet (it must gain a point), the fp32
    row fails with its figures and is withdrawn, from the cache (the budget is judged after the benchmark)."""
    config, _ = first_run
    try:
        over = edgeopt.run(edgeopt.load_config(str(config), ["parity.max_map_drop={fp32: -1.0}"]))
        rows = {r["precision"]: r for r in over.records if r["target"] == "onnxruntime"}
        assert over.cache_misses == []
        assert rows["fp32"]["status"] == "failed" and "artifact" not in rows["fp32"]
        assert "mAP50-95 drop" in rows["fp32"]["reason"] and "budget -1 pt" in rows["fp32"]["reason"]
        assert not (over.output / "artifacts" / "onnxruntime-fp32").exists()
        assert rows["int8"]["status"] == "passed"  # within its default 2.0 pt budget
        assert over.failed == [rows["fp32"]]
    finally:
        edgeopt.run(edgeopt.load_config(str(config)))  # ship it again for the other tests


def test_an_edited_label_file_recomputes_what_depends_on_it(first_run):
    """Same paths, other ground truth: mAP and everything keyed by the data is recomputed, never served stale."""
    config, result = first_run
    labels = sorted((Path(os.environ["EDGEOPT_DATA_CACHE"])).glob("synthetic-val-*/labels/val/*.txt"))
    assert labels
    original = labels[0].read_text()
    labels[0].write_text("")  # the first validation image now has no objects
    try:
        again = edgeopt.run(edgeopt.load_config(str(config)))
    finally:
        labels[0].write_text(original)
    assert {m.split("/")[0] for m in again.cache_misses} >= {"calibrate", "benchmark"}
    ref = next(r for r in again.records if r["status"] == "reference")
    assert ref["map50_95"] != next(r for r in result.records if r["status"] == "reference")["map50_95"]


def test_kill_during_export_leaves_no_partial_and_resumes(tmp_path):
    config = write_config(tmp_path, targets=[{"name": "onnxruntime", "precisions": ["int8"]}],
                          calibrate={"images": 64, "parity_images": 4},
                          data={"calibration": {"path": "synthetic", "split": "train", "seed": 2001, "images": 64},
                                "validation": {"path": "synthetic", "split": "val", "seed": 1000, "images": 24}})
    proc = subprocess.Popen([sys.executable, "-m", "edgeopt.cli", "run", str(config)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=os.environ.copy())
    export_dir = tmp_path / "run" / "cache" / "export"
    deadline = time.time() + 300
    while time.time() < deadline and not list(export_dir.glob(".*.tmp-*")):
        assert proc.poll() is None, "run ended before export started"
        time.sleep(0.05)
    time.sleep(0.5)  # inside the export
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert list(export_dir.glob(".*.tmp-*")), "the kill did not land during export"
    assert not (tmp_path / "run" / "artifacts").exists()
    result = edgeopt.run(edgeopt.load_config(str(config)))
    assert not any(m.startswith(("calibrate/", "quantize/")) for m in result.cache_misses)  # finished stages reused
    assert not list(export_dir.glob(".*.tmp-*"))
    row = [r for r in result.records if r["precision"] == "int8"][0]
    assert row["status"] == "passed" and verify_bundle(Path(row["artifact"])) == []


def test_ctrl_c_says_what_was_kept_and_the_rerun_resumes(tmp_path):
    config = write_config(tmp_path, targets=[{"name": "onnxruntime", "precisions": ["int8"]}])
    # SIGINT back to its default in the child: a test run started in the background inherits it ignored, and
    # Python then never raises KeyboardInterrupt
    proc = subprocess.Popen([sys.executable, "-m", "edgeopt.cli", "run", str(config)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=os.environ.copy(),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    export_dir = tmp_path / "run" / "cache" / "export"
    deadline = time.time() + 300
    while time.time() < deadline and not list(export_dir.glob(".*.tmp-*")):
        assert proc.poll() is None, "run ended before export started"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err, f"exit {proc.returncode}, stderr: {err[-2000:]}"
    assert "interrupted; finished stages are cached and the next run resumes from them" in err
    result = edgeopt.run(edgeopt.load_config(str(config)))
    assert not any(m.startswith(("calibrate/", "quantize/")) for m in result.cache_misses)
    assert [r["status"] for r in result.records if r["target"] == "onnxruntime"] == ["passed"]


def test_import_is_lean():
    code = ("import sys, edgeopt, edgeopt.config.load, edgeopt.targets; "
            "print([m for m in ('torch', 'onnxruntime', 'onnx', 'openvino', 'tensorflow', 'ncnn', 'matplotlib') "
            "if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_prune_stage_in_the_pipeline(tmp_path):
    pytest.importorskip("torch_pruning", reason="the 'prune' extra is not installed")
    config = write_config(
        tmp_path, stages=["calibrate", "quantize", "prune", "export", "benchmark"],
        prune={"ratio": 0.2, "recovery": {"mode": "distill", "epochs": 1, "batch": 8,
                                          "data": {"path": "synthetic", "split": "train", "seed": 3, "images": 16}}},
        targets=[{"name": "onnxruntime", "precisions": ["fp32"]}])
    result = edgeopt.run(edgeopt.load_config(str(config)))
    report = result.run_info["prune"]
    assert report["macs_reduction"] > 0.2 and report["recovery"]["mode"] == "distill"
    assert report["after_recovery"]["params"] < report["before"]["params"]
    row = [r for r in result.records if r["target"] == "onnxruntime"][0]
    assert row["parity_score_cosine"] > 0.9999 and row["parity_box_max_abs"] < 1e-3  # the graph exports exactly
    # 20% pruned, then one distillation epoch on 16 images: mAP 0.805 -> 0.012 (measured), no detection left to
    # compare, so the gate cannot verify the artifact and does not ship it (it used to pass on nothing)
    assert row["status"] == "unverified" and "no detection" in row["reason"] and "artifact" not in row
    again = edgeopt.run(edgeopt.load_config(str(config)))
    assert again.cache_misses == []


def _tiny_weights(path: Path, size: int) -> Path:
    """A tiny reference-architecture detector saved as an edgeopt weights file (a source with a training loss);
    class biases near 0 put scores near 0.5, so its exports have detections for parity to compare."""
    import torch

    from edgeopt.data.synthetic import CLASS_NAMES
    from edgeopt.models.sources.reference.checkpoint import save_detector
    from edgeopt.models.sources.reference.network import ReferenceConfig, build_reference

    torch.manual_seed(0)
    model = build_reference(ReferenceConfig(num_classes=len(CLASS_NAMES), input_size=size, widths=(8, 16, 16, 32, 32),
                                            depths=(1, 1, 1, 1), neck=(16, 16, 32), head=16, class_names=CLASS_NAMES))
    for head in model.heads:
        torch.nn.init.normal_(head.cls[-1].bias, 0.0, 0.5)
    model.train()
    with torch.no_grad():  # realistic BatchNorm statistics
        for _ in range(3):
            model(torch.rand(8, 3, size, size))
    return save_detector(model.eval(), path)


def test_prune_and_finetune_through_the_pipeline(tmp_path):
    """The default run's pruning case: config -> prune (one fine-tune epoch on labelled images) -> export."""
    pytest.importorskip("torch_pruning", reason="the 'prune' extra is not installed")
    weights = _tiny_weights(tmp_path / "tiny.pt", 64)
    config = write_config(
        tmp_path, stages=["calibrate", "quantize", "prune", "export"],
        model={"source": str(weights), "input_size": 64},
        data={"calibration": {"path": "synthetic", "split": "train", "seed": 2000, "images": 8},
              "validation": {"path": "synthetic", "split": "val", "seed": 1000, "images": 8}},
        calibrate={"images": 8, "parity_images": 4},
        prune={"ratio": 0.3, "recovery": {"mode": "finetune", "epochs": 1, "batch": 8, "val_images": 8,
                                          "data": {"path": "synthetic", "split": "train", "seed": 3, "images": 16}}},
        targets=[{"name": "onnxruntime", "precisions": ["fp32"]}])
    result = edgeopt.run(edgeopt.load_config(str(config)))
    report = result.run_info["prune"]
    recovery = report["recovery"]
    assert recovery["mode"] == "finetune" and recovery["epochs"] == 1
    assert [h["epoch"] for h in recovery["history"]] == [0, 1] and recovery["history"][1]["loss"] > 0
    assert report["macs_reduction"] > 0.1 and report["after_recovery"]["params"] < report["before"]["params"]
    row = next(r for r in result.records if r["target"] == "onnxruntime")
    assert row["status"] == "passed", row["reason"]  # the pruned, fine-tuned graph exports exactly
    assert verify_bundle(Path(row["artifact"])) == []
    lineage = json.loads((Path(row["artifact"]) / "edgeopt.json").read_text())["lineage"]
    assert lineage["model"].startswith(f"{weights} (pruned ")  # the bundle is the pruned model's export
