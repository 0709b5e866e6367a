"""The head of a two-head detector is chosen by measurement: both heads scored on the validation set, the
end-to-end one exported only within the fp32 budget, the choice and both figures in the manifest, the
reference row scored with the better head, and a forced head judged by the same mAP budget."""

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

import edgeopt
import edgeopt.pipeline
from edgeopt.models.sources import load_model
from edgeopt.stages.heads import pick_head
from helpers import write_config


class RankedRows(nn.Module):
    """An end-to-end head for tests: the dense detector's anchors ranked by their best class score, top-K in the
    graph and no duplicate removal (a one-to-one head that never learned to be one: it scores worse)."""

    def __init__(self, dense: nn.Module, k: int = 100) -> None:
        super().__init__()
        self.dense, self.k = dense, k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dense(x)  # (B, 4 + C, N): cx, cy, w, h divided by the input size, class scores
        boxes, scores = y[:, :4].transpose(1, 2), y[:, 4:].transpose(1, 2)
        score, cls = scores.max(-1)
        xyxy = torch.cat((boxes[..., :2] - boxes[..., 2:] / 2, boxes[..., :2] + boxes[..., 2:] / 2), -1)
        rows = torch.cat((xyxy, score[..., None], cls[..., None].float()), -1)
        top = score.topk(self.k, dim=1).indices
        return rows.gather(1, top[..., None].expand(-1, -1, 6))


def with_two_heads(monkeypatch) -> None:
    """Runs load the embedded detector with a second, end-to-end head (as a YOLO26 checkpoint has)."""
    def load(cfg, class_names=None):
        detector = load_model(cfg, class_names)
        return replace(detector, variants={"end2end": RankedRows}, head={"family": "test", "saved_head": "nms"})

    monkeypatch.setattr(edgeopt.pipeline, "load_model", load)


def run(tmp_path: Path, **model):
    config = write_config(tmp_path, stages=["calibrate", "export", "benchmark"],
                          model={"source": "reference", "input_size": 320, **model},
                          targets=[{"name": "onnxruntime", "precisions": ["fp32"]}])
    return edgeopt.run(edgeopt.load_config(str(config)))


def test_pick_head_rule():
    assert pick_head({"end2end": 0.50, "nms": 0.504}, 0.5)["head"] == "end2end"  # 0.4 pt: within
    assert pick_head({"end2end": 0.60, "nms": 0.50}, 0.5)["head"] == "end2end"  # better
    chosen = pick_head({"end2end": 0.339, "nms": 0.4245}, 0.5)
    assert chosen["head"] == "nms" and "8.55 pt below" in chosen["reason"]
    assert pick_head({"end2end": math.nan, "nms": 0.4}, 0.5)["head"] == "nms"


def test_the_worse_end_to_end_head_is_measured_and_not_exported(tmp_path, monkeypatch):
    with_two_heads(monkeypatch)
    result = run(tmp_path)
    reference = next(r for r in result.records if r["status"] == "reference")
    scores = reference["heads_map50_95"]
    assert scores["nms"] - scores["end2end"] > 0.005  # no duplicate removal costs more than the 0.5 pt budget
    assert reference["head"] == "nms" and reference["map50_95"] == scores["nms"]
    row = next(r for r in result.records if r["target"] == "onnxruntime")
    assert row["status"] == "passed", row["reason"]
    assert row["head"] == "nms" and abs(row["map50_95_drop"]) < 0.005
    head = json.loads((Path(row["artifact"]) / "edgeopt.json").read_text())["head"]
    assert head["variant"] == "nms" and head["choice"]["map50_95"] == scores
    assert "over the fp32 budget" in head["choice"]["reason"]
    assert not any(m.startswith("float-map/") for m in run(tmp_path).cache_misses)  # scored once, then cached


def test_a_forced_head_is_exported_and_judged_by_the_map_budget(tmp_path, monkeypatch):
    with_two_heads(monkeypatch)
    result = run(tmp_path, head="end2end")
    row = next(r for r in result.records if r["target"] == "onnxruntime")
    assert row["head"] == "end2end"
    assert row["status"] == "failed" and "parity.max_map_drop" in row["reason"]  # faithful, but less accurate
    assert not (tmp_path / "run" / "artifacts" / "onnxruntime-fp32").exists()
    manifest = json.loads((Path(result.output) / "cache" / "export" / row["cache_key"] / "edgeopt.json").read_text())
    assert manifest["head"]["choice"] == {"head": "end2end", "reason": "model.head: end2end"}
    assert manifest["parity"]["verdict"] == "passed"  # the artifact matches its torch head; its accuracy does not


@pytest.mark.parametrize("forced", ["sideways"])
def test_an_unknown_head_is_a_config_error(forced, tmp_path):
    with pytest.raises(edgeopt.EdgeoptError) as info:
        edgeopt.load_config(str(write_config(tmp_path, model={"source": "reference", "head": forced})))
    assert "model.head" in str(info.value)
