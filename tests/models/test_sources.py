"""Model sources besides the reference: any torch module (module:factory), ONNX files, and how Ultralytics
checkpoints are refused (no opt-in, wrong task, corrupt) without Ultralytics installed."""

from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest
import torch

from edgeopt.config.schema import ModelConfig
from edgeopt.pipeline import run_pipeline
from edgeopt.stages.reference import reference_infer
from edgeopt.config.load import load_config
from edgeopt.errors import ConfigError, ModelError
from edgeopt.models.sources import load_model
from edgeopt.models.sources.reference.checkpoint import load_detector
from edgeopt.models.sources.reference.network import ReferenceConfig, build_reference
from helpers import fake_ultralytics_checkpoint, write_config

NAMES = ("circle", "triangle", "square", "star", "cross", "hexagon")
FACTORY = """
import torch
from edgeopt.models.sources.reference.network import ReferenceConfig, build_reference


def build(num_classes=6):
    cfg = ReferenceConfig(num_classes=num_classes, input_size=96, widths=(8, 16, 16, 32, 32), depths=(1, 1, 1, 1),
                          neck=(16, 16, 32), head=16)
    return build_reference(cfg)


def to_pixels(y):
    # the user's own output adapter: normalised boxes -> input pixels (the 'yolo' layout)
    return torch.cat((y[:, :4] * 96, y[:, 4:]), 1)
"""


@pytest.fixture
def factory_module(tmp_path, monkeypatch):
    """An importable user package ``userdet`` with a factory and a decoder function, and saved weights."""
    (tmp_path / "userdet.py").write_text(textwrap.dedent(FACTORY))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("userdet", None)
    import userdet

    torch.manual_seed(0)
    model = userdet.build()
    weights = tmp_path / "weights.pt"
    torch.save({"state_dict": model.state_dict()}, weights)
    return model.eval(), weights


def test_factory_module_with_weights_and_named_layout(factory_module):
    model, weights = factory_module
    det = load_model(ModelConfig(source="userdet:build", trust_code=True, weights=str(weights), decoder="yolo_normalized",
                                 input_size=96, class_names=list(NAMES)))
    x = torch.rand(1, 3, 96, 96)
    with torch.no_grad():
        assert torch.equal(det.module(x), model(x))
    assert det.class_names == list(NAMES) and det.decoder.layout == "dense"


def test_factory_decoder_function_is_part_of_the_module(factory_module):
    model, weights = factory_module
    det = load_model(ModelConfig(source="userdet:build", trust_code=True, weights=str(weights), decoder="userdet:to_pixels",
                                 input_size=96, class_names=list(NAMES)))
    x = torch.rand(1, 3, 96, 96)
    with torch.no_grad():  # to_pixels multiplies by 96, the 'yolo' layout divides again
        torch.testing.assert_close(det.module(x), model(x))


def test_factory_errors_name_the_problem(factory_module, tmp_path):
    _, weights = factory_module
    with pytest.raises(ConfigError, match="cannot import module 'nosuchpkg'"):
        load_model(ModelConfig(source="nosuchpkg:build", trust_code=True, class_names=list(NAMES)))
    with pytest.raises(ConfigError, match="has no callable 'missing'"):
        load_model(ModelConfig(source="userdet:missing", trust_code=True, class_names=list(NAMES)))
    with pytest.raises(ModelError, match="does not fit the module.*shape differs"):
        load_model(ModelConfig(source="userdet:build", trust_code=True, weights=str(weights), factory_args={"num_classes": 3},
                               class_names=["a", "b", "c"], decoder="yolo_normalized", input_size=96))
    with pytest.raises(ModelError, match=r"outputs \(1, 10, \d+\), expected \(1, K, 6\)"):
        load_model(ModelConfig(source="userdet:build", trust_code=True, decoder="end2end", input_size=96, class_names=list(NAMES)))


def test_factory_model_prunes_and_exports(factory_module, tmp_path):
    """A torch module edgeopt knows nothing about goes through prune (output convs found from the graph) and
    int8 export with parity."""
    _, weights = factory_module
    cfg = write_config(tmp_path, stages=["calibrate", "quantize", "prune", "export"],
                       model={"source": "userdet:build", "trust_code": True, "weights": str(weights), "decoder": "yolo_normalized",
                              "input_size": 96},
                       prune={"ratio": 0.5, "recovery": {"mode": "none"}})  # 16-channel layers keep 8
    result = run_pipeline(load_config(cfg))
    assert result.run_info["prune"]["macs_reduction"] > 0.1
    fp32 = next(r for r in result.records if r["precision"] == "fp32")
    assert fp32["parity_score_cosine"] > 0.9999 and fp32["parity_box_max_abs"] < 1e-3  # the graph exports exactly
    # an untrained model detects nothing: both artifacts are judged unverifiable, never passed on nothing
    assert [(r["status"], "no detection" in r["reason"]) for r in result.records] == [("unverified", True)] * 2


def _onnx_file(tmp_path, model, size=96, pixels=True):
    class Pixels(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.m = model

        def forward(self, x):
            y = self.m(x)
            return torch.cat((y[:, :4] * size, y[:, 4:]), 1) if pixels else y

    path = tmp_path / "det.onnx"
    torch.onnx.export(Pixels().eval(), (torch.zeros(1, 3, size, size),), str(path), dynamo=False, opset_version=17,
                      input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})
    return path


def test_onnx_source_matches_the_torch_model(tmp_path):
    pytest.importorskip("onnxruntime")
    model = load_detector().eval()
    path = _onnx_file(tmp_path, model)
    det = load_model(ModelConfig(source=str(path), class_names=list(NAMES)))
    assert det.kind == "onnx" and det.input_size == 96
    x = np.random.default_rng(0).random((2, 3, 96, 96), dtype=np.float32)
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(reference_infer(det)(x), want, atol=1e-4)


def test_an_onnx_file_a_known_family_exported_is_filtered_as_that_family_does(tmp_path):
    """Ultralytics writes its author into the ONNX files it exports; their NMS IoU is then Ultralytics' own (as
    for its checkpoints), so their mAP compares with the checkpoint's. Any other file keeps the default."""
    import onnx

    path = _onnx_file(tmp_path, load_detector().eval())
    plain = load_model(ModelConfig(source=str(path), class_names=list(NAMES)))
    model = onnx.load(str(path))
    onnx.helper.set_model_props(model, {"author": "Ultralytics", "task": "detect"})
    onnx.save(model, str(path))
    theirs = load_model(ModelConfig(source=str(path), class_names=list(NAMES)))
    assert plain.decoder.iou_threshold == 0.6 and theirs.decoder.iou_threshold == 0.7
    assert theirs.key != plain.key


def test_onnx_source_pipeline_and_refusals(tmp_path):
    pytest.importorskip("onnxruntime")
    path = _onnx_file(tmp_path, load_detector().eval())  # trained: its detections give parity something to judge
    model_cfg = {"source": str(path), "class_names": list(NAMES)}
    cfg = write_config(tmp_path, model=model_cfg, stages=["calibrate", "quantize", "export", "benchmark"],
                       targets=[{"name": "onnxruntime", "precisions": ["fp32", "int8"]},
                                {"name": "openvino", "precisions": ["fp32"]}])
    result = run_pipeline(load_config(cfg))
    rows = {(r["target"], r["precision"]): r for r in result.records}
    assert rows[("onnx-source", "fp32")]["status"] == "reference"
    assert all(rows[k]["status"] == "passed" for k in [("onnxruntime", "fp32"), ("onnxruntime", "int8"),
                                                        ("openvino", "fp32")]), rows
    assert rows[("onnxruntime", "fp32")]["map50_95"] == pytest.approx(rows[("onnx-source", "fp32")]["map50_95"],
                                                                     abs=1e-6)
    with pytest.raises(ConfigError, match="'prune' stage needs a torch model"):
        run_pipeline(load_config(write_config(tmp_path, model=model_cfg, stages=["calibrate", "quantize", "prune", "export"])))
    with pytest.raises(ConfigError, match="litert-torch"):
        run_pipeline(load_config(write_config(tmp_path, model=model_cfg,
                                              targets=[{"name": "tflite", "precisions": ["fp32"]}])))
    with pytest.raises(ConfigError, match="pnnx"):
        run_pipeline(load_config(write_config(tmp_path, model=model_cfg,
                                              targets=[{"name": "ncnn", "precisions": ["fp32"]}])))
    (tmp_path / "bad.onnx").write_bytes(path.read_bytes()[:500])
    with pytest.raises(ModelError, match="not a valid ONNX model"):
        load_model(ModelConfig(source=str(tmp_path / "bad.onnx"), class_names=list(NAMES)))


def test_ultralytics_checkpoint_needs_opt_in(tmp_path, monkeypatch):
    path = tmp_path / "yolo.pt"
    fake_ultralytics_checkpoint(path, "DetectionModel", monkeypatch)
    with pytest.raises(ModelError, match="full Python pickle") as err:
        load_model(ModelConfig(source=str(path)))
    assert "trust_pickle: true" in err.value.hint


@pytest.mark.parametrize("cls, task", [("SegmentationModel", "segmentation"), ("PoseModel", "pose"),
                                       ("OBBModel", "oriented-box")])
def test_ultralytics_other_tasks_are_refused(tmp_path, monkeypatch, cls, task):
    path = tmp_path / "yolo.pt"
    fake_ultralytics_checkpoint(path, cls, monkeypatch)
    with pytest.raises(ModelError, match=f"Ultralytics {task}"):
        load_model(ModelConfig(source=str(path), trust_pickle=True))  # refused even with the opt-in


def test_corrupt_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "yolo.pt"
    fake_ultralytics_checkpoint(path, "DetectionModel", monkeypatch)
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(ModelError, match="not a readable PyTorch file"):
        load_model(ModelConfig(source=str(path), trust_pickle=True))


@pytest.mark.parametrize("model", [{"source": "os:system", "factory_args": {"command": "touch pwned"}},
                                   {"source": "reference", "decoder": "os:getcwd"}])
def test_code_in_a_config_needs_trust_code(tmp_path, model):
    """A config that would import and run code is refused, by `validate` as by `run`, unless it opts in."""
    cfg = write_config(tmp_path, model=model)
    with pytest.raises(ConfigError, match="trust_code: true"):
        load_config(cfg)
    assert not (tmp_path / "pwned").exists()
