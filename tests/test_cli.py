"""The CLI's success paths: ``eval`` reports the mAP the library computes, ``train`` writes usable weights."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgeopt.data.load import read_dataset
from edgeopt.eval.coco_map import coco_map
from edgeopt.eval.predict import predict
from edgeopt.models.detector import torch_infer
from edgeopt.models.sources.reference.checkpoint import load_detector

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgeopt.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ), timeout=900)


@pytest.mark.parametrize("backend", ["faster", "pycocotools"])
def test_eval_json_is_the_map_of_the_models_predictions(synth_dataset, tmp_path, backend):
    out = tmp_path / "eval.json"
    proc = cli("eval", "--model", "reference", "--data", str(synth_dataset), "--limit", "8", "--backend", backend,
               "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    figures = json.loads(out.read_text())
    dataset = read_dataset(synth_dataset, split="val").subset(8)
    expected = coco_map(dataset, predict(torch_infer(load_detector()), dataset, 320, batch=4), backend=backend)
    assert figures["images"] == 8 and figures["map50_95"] == pytest.approx(expected["map50_95"], abs=1e-9)
    assert figures["map50"] == pytest.approx(expected["map50"], abs=1e-9) and 0 < figures["map50_95"] < 1
    assert f"{figures['map50_95']:.4f}" in proc.stdout


def test_train_one_epoch_writes_loadable_weights(synth_dataset, tmp_path):
    proc = cli("train", "--data", str(synth_dataset), "--out", str(tmp_path), "--epochs", "1", "--batch", "8",
               "--input-size", "128", "--val-every", "1", "--val-images", "8", "--no-bf16")
    assert proc.returncode == 0, proc.stderr
    assert "best mAP50-95" in proc.stdout and (tmp_path / "last.pt").is_file()
    model = load_detector(tmp_path / "best.pt")  # weights_only load of what train wrote
    assert model.config.input_size == 128 and len(model.config.class_names) == 6


def test_version_is_the_packages():
    from edgeopt.core.version import VERSION

    proc = cli("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"edgeopt {VERSION}", (proc.stdout, proc.stderr)
