"""First contact: ``edgeopt compress`` from a checkpoint and a data.yaml to a named bundle, its written config
re-running from the cache; ``edgeopt init`` writes a config that validates; ``edgeopt doctor`` lists what is
installed."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

import edgeopt.models.sources.reference.checkpoint as reference

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgeopt.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env=dict(os.environ), timeout=1200)


def test_compress_writes_its_config_runs_it_names_the_bundle_and_the_config_reruns_from_cache(synth_dataset,
                                                                                               tmp_path):
    weights = Path(reference.__file__).parent / "weights"
    checkpoint = tmp_path / "best.pt"  # the embedded weights, as a user's trained checkpoint
    shutil.copy(weights / "reference.pt", checkpoint)
    run_dir = tmp_path / "run"
    proc = cli("compress", str(checkpoint), "--data", str(synth_dataset), "--targets", "onnxruntime",
               "--max-drop", "2.0", "--out", str(run_dir))
    assert proc.returncode == 0, proc.stderr[-3000:]
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["model"]["source"] == str(checkpoint) and config["quantize"]["max_drop"] == 2.0
    assert config["data"]["calibration"] == {"path": str(synth_dataset), "split": "train", "images": 128}
    assert [(t["name"], t["precisions"]) for t in config["targets"]] == [("onnxruntime", ["fp32", "int8"])]
    records = json.loads((run_dir / "results.json").read_text())["records"]
    shipped = proc.stdout.split("ship", 1)[1].split(":", 1)[0].strip()
    assert shipped in {r["artifact"] for r in records if r["status"] == "passed"}
    assert (Path(shipped) / "edgeopt.json").is_file() and "fastest of" in proc.stdout
    again = cli("run", str(run_dir / "config.yaml"), cwd=tmp_path)  # from anywhere: the paths are absolute
    assert again.returncode == 0, again.stderr[-3000:]
    assert ", 0 computed" in again.stdout


def test_compress_names_a_bad_option_before_writing_anything(tmp_path):
    proc = cli("compress", "reference", "--data", "synthetic", "--targets", "onnxrt", "--out", str(tmp_path / "r"))
    assert proc.returncode != 0 and "onnxrt" in proc.stderr and "onnxruntime" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "r" / "config.yaml").exists()


def test_init_writes_a_commented_config_that_validates_and_refuses_to_overwrite(tmp_path):
    path = tmp_path / "edgeopt.yaml"
    assert cli("init", str(path), "--model", "best.pt", "--data", "data.yaml").returncode == 0
    text = path.read_text()
    assert "# Timed runs (at least 50)" in text and 'source: "best.pt"' in text
    assert cli("validate", str(path)).returncode == 0
    again = cli("init", str(path))
    assert again.returncode != 0 and "--force" in again.stderr and path.read_text() == text


def test_doctor_lists_every_target_and_the_int8_features(tmp_path):
    proc = cli("doctor", "--json")
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout)
    assert {"target onnxruntime", "target openvino", "target tflite", "target ncnn", "int8 features"} <= set(found)
    assert found["target onnxruntime"].startswith("onnxruntime ")
