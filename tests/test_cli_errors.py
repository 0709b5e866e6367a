"""Bad input through the real CLI: a clear message, a non-zero exit, no traceback, nothing half-written."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image

from helpers import fake_ultralytics_checkpoint, write_config

ROOT = Path(__file__).parents[1]


def edgeopt(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgeopt.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=cwd or ROOT, timeout=600)


def assert_clean_failure(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr
    for needle in needles:
        assert needle in proc.stderr, proc.stderr


def _edit(path: Path, fn) -> Path:
    cfg = yaml.safe_load(path.read_text())
    fn(cfg)
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_unknown_key_with_did_you_mean(tmp_path):
    cfg = _edit(write_config(tmp_path), lambda c: c["benchmark"].update(wramup=3))
    proc = edgeopt("run", str(cfg))
    assert_clean_failure(proc, "unknown key 'benchmark.wramup'", "did you mean 'warmup'")
    assert proc.returncode == 2
    assert not (tmp_path / "run").exists()


def test_wrong_type(tmp_path):
    cfg = _edit(write_config(tmp_path), lambda c: c["benchmark"].update(threads="many"))
    assert_clean_failure(edgeopt("run", str(cfg)), "'benchmark.threads'", "valid integer")


def test_unknown_target(tmp_path):
    cfg = _edit(write_config(tmp_path), lambda c: c["targets"][0].update(name="onnxrt"))
    assert_clean_failure(edgeopt("validate", str(cfg)), "unknown target 'onnxrt'")


def test_missing_config_file(tmp_path):
    assert_clean_failure(edgeopt("run", str(tmp_path / "nope.yaml")), "config file not found")


def test_corrupt_model_file(tmp_path):
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"PK\x03\x04 definitely not a torch file")
    cfg = _edit(write_config(tmp_path), lambda c: c["model"].update(source=str(bad)))
    assert_clean_failure(edgeopt("run", str(cfg)), "not a readable PyTorch file")
    assert not (tmp_path / "run").exists()


def test_ultralytics_checkpoint_without_opt_in_and_of_another_task(tmp_path, monkeypatch):
    det, seg = tmp_path / "yolo.pt", tmp_path / "yolo-seg.pt"
    fake_ultralytics_checkpoint(det, "DetectionModel", monkeypatch)
    fake_ultralytics_checkpoint(seg, "SegmentationModel", monkeypatch)
    cfg = _edit(write_config(tmp_path), lambda c: c["model"].update(source=str(det)))
    assert_clean_failure(edgeopt("run", str(cfg)), "full Python pickle", "model.trust_pickle: true")
    cfg = _edit(cfg, lambda c: c["model"].update(source=str(seg), trust_pickle=True))
    assert_clean_failure(edgeopt("run", str(cfg)), "Ultralytics segmentation checkpoint", "detection checkpoint")
    assert not (tmp_path / "run").exists()


def test_onnx_source_with_prune_or_tflite(tmp_path):
    import torch

    from edgeopt.models.sources.reference.network import ReferenceConfig, build_reference

    model = build_reference(ReferenceConfig(num_classes=6, input_size=96, widths=(8, 16, 16, 32, 32),
                                            depths=(1, 1, 1, 1), neck=(16, 16, 32), head=16)).eval()
    onnx_path = tmp_path / "det.onnx"
    torch.onnx.export(model, (torch.zeros(1, 3, 96, 96),), str(onnx_path), dynamo=False, opset_version=17)
    cfg = _edit(write_config(tmp_path), lambda c: (c["model"].update(source=str(onnx_path), input_size=None,
                                                                      decoder="yolo_normalized"),
                                                   c.update(stages=["calibrate", "quantize", "prune", "export"])))
    assert_clean_failure(edgeopt("run", str(cfg)), "'prune' stage needs a torch model", "drop 'prune'")
    cfg = _edit(cfg, lambda c: (c.update(stages=["calibrate", "quantize", "export"]),
                                c["targets"].append({"name": "tflite", "precisions": ["fp32"]})))
    assert_clean_failure(edgeopt("run", str(cfg)), "target 'tflite' cannot export", "litert-torch",
                         "drop 'tflite' from targets")
    cfg = _edit(cfg, lambda c: c.update(targets=[{"name": "ncnn", "precisions": ["fp32"]}]))
    assert_clean_failure(edgeopt("run", str(cfg)), "target 'ncnn' cannot export", "pnnx", "drop 'ncnn' from targets")
    assert not (tmp_path / "run").exists()


def test_synth_unknown_difficulty(tmp_path):
    proc = edgeopt("data", "synth", "--out", str(tmp_path / "d"), "--train", "2", "--val", "0", "--difficulty", "mid")
    assert_clean_failure(proc, "--difficulty must be one of", "'mid'")
    assert not (tmp_path / "d").exists()


def test_non_image_in_calibration_folder(tmp_path):
    folder = tmp_path / "calib"
    folder.mkdir()
    Image.new("RGB", (32, 32)).save(folder / "a.png")
    (folder / "b.jpg").write_text("hello")
    cfg = _edit(write_config(tmp_path), lambda c: c["data"].update(calibration={"path": str(folder)}))
    assert_clean_failure(edgeopt("run", str(cfg)), "b.jpg")
    assert not (tmp_path / "run").exists()


def test_empty_calibration_folder(tmp_path):
    (tmp_path / "calib").mkdir()
    cfg = _edit(write_config(tmp_path), lambda c: c["data"].update(calibration={"path": str(tmp_path / "calib")}))
    assert_clean_failure(edgeopt("run", str(cfg)), "no images")


def test_validation_set_without_labels(tmp_path):
    folder = tmp_path / "val"
    folder.mkdir()
    Image.new("RGB", (32, 32)).save(folder / "a.png")
    cfg = _edit(write_config(tmp_path), lambda c: c["data"].update(
        validation={"path": str(folder)}))
    assert_clean_failure(edgeopt("run", str(cfg)), "has no labels")
    assert not (tmp_path / "run").exists()


def test_unwritable_output_directory(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where a directory should be")
    cfg = write_config(tmp_path, output=str(blocker / "run"))
    assert_clean_failure(edgeopt("run", str(cfg)), "cannot create the output directory")


@pytest.mark.parametrize("module, extra, target", [("onnxruntime", "onnx", "onnxruntime"),
                                                    ("openvino", "openvino", "openvino"),
                                                    ("litert_torch", "tflite", "tflite"),
                                                    ("pnnx", "ncnn", "ncnn")])
def test_missing_optional_runtime_names_the_extra(tmp_path, module, extra, target):
    # hide the package, as when the extra is not installed
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "sitecustomize.py").write_text(
        "import importlib.util\n_find = importlib.util.find_spec\n"
        f"importlib.util.find_spec = lambda n, *a: None if n == {module!r} else _find(n, *a)\n")
    cfg = write_config(tmp_path, targets=[{"name": target, "precisions": ["fp32"]}])
    proc = edgeopt("run", str(cfg), env={"PYTHONPATH": f"{fake}:{ROOT}"})
    assert_clean_failure(proc, f"'{module}' is not installed", f"pip install 'edgeopt[{extra}]'")
    assert not (tmp_path / "run").exists()


def test_missing_pruning_extra_names_it(tmp_path):
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "sitecustomize.py").write_text(
        "import importlib.util\n_find = importlib.util.find_spec\n"
        "importlib.util.find_spec = lambda n, *a: None if n == 'torch_pruning' else _find(n, *a)\n")
    cfg = write_config(tmp_path, stages=["calibrate", "quantize", "prune", "export"])
    proc = edgeopt("run", str(cfg), env={"PYTHONPATH": f"{fake}:{ROOT}"})
    assert_clean_failure(proc, "'torch_pruning' is not installed", "pip install 'edgeopt[prune]'")
    assert not (tmp_path / "run").exists()


def test_precision_a_target_does_not_offer(tmp_path):
    cfg = write_config(tmp_path, targets=[{"name": "onnxruntime", "precisions": ["bf16"]}])
    proc = edgeopt("run", str(cfg))
    assert_clean_failure(proc, "target 'onnxruntime' has no precision 'bf16'", "it offers fp32, int8")
    assert proc.returncode == 2 and not (tmp_path / "run").exists()


def test_bad_override_and_bad_dataset_for_eval(tmp_path):
    assert_clean_failure(edgeopt("validate", str(write_config(tmp_path)), "--set", "benchmark.runs"), "KEY=VALUE")
    assert_clean_failure(edgeopt("eval", "--data", str(tmp_path / "missing.yaml")), "not found")


@pytest.mark.parametrize("args", [["--help"], ["run", "--help"], ["data", "synth", "--help"]])
def test_help_works(args):
    proc = edgeopt(*args)
    assert proc.returncode == 0 and "Usage" in proc.stdout


def test_max_drop_without_a_labelled_validation_set_and_an_unknown_head(tmp_path):
    cfg = write_config(tmp_path, quantize={"max_drop": 0.5}, stages=["calibrate", "quantize", "export"],
                       data={"calibration": {"path": "synthetic", "split": "train", "seed": 2000, "images": 16}})
    proc = edgeopt("run", str(cfg))
    assert_clean_failure(proc, "quantize.max_drop", "hint: set data.validation")
    assert not (tmp_path / "run").exists()  # refused in preflight, nothing written
    (tmp_path / "head").mkdir()
    head = _edit(write_config(tmp_path / "head"), lambda c: c["model"].update(head="sideways"))
    assert_clean_failure(edgeopt("run", str(head)), "model.head")


def test_an_impossible_recovery_is_refused_before_any_work(tmp_path):
    """finetune needs labels: asked for on a folder of unlabelled images, the run stops in preflight, before
    pruning or any other stage ran, and nothing was written."""
    images = tmp_path / "unlabelled"
    images.mkdir()
    for i in range(3):
        Image.new("RGB", (64, 48), (40 * i, 90, 30)).save(images / f"{i}.jpg")
    cfg = _edit(write_config(tmp_path), lambda c: c.update(
        stages=["calibrate", "quantize", "prune", "export"],
        prune={"ratio": 0.2, "recovery": {"mode": "finetune", "epochs": 1, "data": {"path": str(images)}}}))
    assert_clean_failure(edgeopt("run", str(cfg)), "finetune needs labelled prune.recovery.data", "use distill")
    assert not (tmp_path / "run").exists()


def test_a_latency_target_the_config_cannot_measure_or_no_ratio_meets_is_a_clean_error(tmp_path):
    """prune.latency naming a target the run does not build fails at validation; a target_speedup no ratio
    reaches stops after the search with every measurement in the message and a hint, never a traceback."""
    stages = ["calibrate", "quantize", "prune", "export"]
    cfg = _edit(write_config(tmp_path), lambda c: c.update(
        stages=stages, prune={"target_speedup": 0.5, "latency": {"target": "ncnn"}}))
    assert_clean_failure(edgeopt("validate", str(cfg)), "prune.latency.target 'ncnn' is not a configured target")
    cfg = _edit(write_config(tmp_path), lambda c: c.update(
        stages=stages, model={"source": "reference", "input_size": 96},
        targets=[{"name": "onnxruntime", "precisions": ["int8"]}],
        prune={"target_speedup": 0.01, "recovery": {"mode": "none"}, "latency": {"runs": 5}}))
    assert_clean_failure(edgeopt("run", str(cfg)), "prune.target_speedup 0.01 (aiming at 0.0098, prune.latency.margin",
                         "is not met up to ratio 0.886",
                         "measured ratio 0.450:", "raise target_speedup")


def test_dropping_blocks_without_calibration_or_more_than_the_model_has_is_a_clean_error(tmp_path):
    """prune.drop_blocks ranks blocks on the calibration images: without the calibrate stage it is refused in
    preflight (nothing written); asking for more blocks than the model can lose names the count it has."""
    cfg = _edit(write_config(tmp_path), lambda c: c.update(
        stages=["prune", "export"], targets=[{"name": "onnxruntime", "precisions": ["fp32"]}],
        prune={"ratio": 0.2, "drop_blocks": 2, "recovery": {"mode": "none"}}))
    assert_clean_failure(edgeopt("run", str(cfg)), "prune.drop_blocks ranks the blocks", "add 'calibrate' to stages")
    assert not (tmp_path / "run").exists()
    cfg = _edit(write_config(tmp_path), lambda c: c.update(
        stages=["calibrate", "prune", "export"], model={"source": "reference", "input_size": 96},
        targets=[{"name": "onnxruntime", "precisions": ["fp32"]}],
        prune={"ratio": 0.2, "drop_blocks": 99, "recovery": {"mode": "none"}}))
    proc = edgeopt("run", str(cfg))
    assert_clean_failure(proc, "prune.drop_blocks 99:", "has 10 residual block(s)",
                          "set prune.drop_blocks to at most 10")
    assert not list((tmp_path / "run").glob("**/prune.json"))  # refused before any pruning


def test_a_latency_target_in_milliseconds_given_twice_or_already_met_is_a_clean_error(tmp_path):
    """prune.target_latency_ms beside target_speedup fails at validation; one the unpruned artifact already meets
    stops after measuring it, naming its latency, before any pruning."""
    stages = ["calibrate", "quantize", "prune", "export"]
    cfg = _edit(write_config(tmp_path), lambda c: c.update(
        stages=stages, prune={"target_speedup": 0.8, "target_latency_ms": 5}))
    assert_clean_failure(edgeopt("validate", str(cfg)), "not target_speedup and target_latency_ms")
    cfg = _edit(write_config(tmp_path), lambda c: c.update(
        stages=stages, model={"source": "reference", "input_size": 96},
        targets=[{"name": "onnxruntime", "precisions": ["int8"]}],
        prune={"target_latency_ms": 100000, "recovery": {"mode": "none"}, "latency": {"runs": 5}}))
    assert_clean_failure(edgeopt("run", str(cfg)), "prune.target_latency_ms 100000: the unpruned onnxruntime int8 "
                         "artifact already runs in", "lower prune.target_latency_ms")
    assert not list((tmp_path / "run").glob("**/prune.json"))
