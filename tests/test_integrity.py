"""The ship gate cannot be fooled: a bundle is shipped only if it passed and its files match its manifest; a
changed cached bundle is rebuilt, a failing one withdrawn, and a bundle's run.py refuses changed files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgeopt.config.load import load_config
from edgeopt.core.manifest import verify_bundle
from edgeopt.pipeline import run_pipeline
from helpers import write_config

ROOT = Path(__file__).resolve().parents[1]
STAGES = ["calibrate", "quantize", "export"]
ORT_FP32 = [{"name": "onnxruntime", "precisions": ["fp32"]}]


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgeopt.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ), timeout=900)


@pytest.fixture
def shipped(tmp_path):
    """A run that shipped one ONNX Runtime fp32 bundle: (config path, result)."""
    pytest.importorskip("onnxruntime")
    cfg = write_config(tmp_path, stages=STAGES, targets=ORT_FP32)
    result = run_pipeline(load_config(cfg))
    assert [r["status"] for r in result.records] == ["passed"]
    return cfg, result


def test_changed_cached_bundle_is_rebuilt_not_reused(shipped):
    cfg, result = shipped
    cached = Path(result.records[0]["artifact"]).parents[1] / "cache" / "export" / result.records[0]["cache_key"]
    (cached / "model.onnx").write_bytes(b"not the model that was verified")
    again = run_pipeline(load_config(cfg))
    assert any(m.startswith("export/") for m in again.cache_misses)  # rebuilt, not served from the cache
    assert again.records[0]["status"] == "passed"
    assert verify_bundle(cached) == [] and verify_bundle(Path(again.records[0]["artifact"])) == []


def test_failing_gate_withdraws_the_bundle_and_exits_1(shipped):
    cfg, result = shipped
    artifact = Path(result.records[0]["artifact"])
    assert artifact.is_dir()
    proc = cli("run", str(cfg), "--set", "parity.min_score_cosine={fp32: 1.01}")  # no artifact can pass this
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "failed the gate" in proc.stderr
    rows = json.loads((artifact.parents[1] / "results.json").read_text())["records"]
    assert [(r["status"], r.get("artifact")) for r in rows] == [("failed", None)]
    assert "score cosine" in rows[0]["reason"]
    assert not artifact.exists()  # the bundle shipped by the earlier run is no longer valid


def test_too_few_detections_to_judge_is_unverified_not_shipped(shipped):
    cfg, result = shipped
    artifact = Path(result.records[0]["artifact"])
    proc = cli("run", str(cfg), "--set", "parity.min_boxes=1000")  # 4 parity images hold far fewer
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "could not be verified" in proc.stderr
    (row,) = json.loads((artifact.parents[1] / "results.json").read_text())["records"]
    assert row["status"] == "unverified" and "parity.min_boxes" in row["reason"] and not artifact.exists()


def test_a_run_killed_while_shipping_leaves_nothing_behind(shipped):
    """A kill during the copy into artifacts/ leaves the copy's temporary (named after its process); the next run
    removes it, and leaves alone the temporary of a process still writing."""
    cfg, result = shipped
    artifacts = Path(result.records[0]["artifact"]).parent
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        killed = artifacts / f".onnxruntime-fp32.tmp-{dead.pid}"
        shutil.copytree(result.records[0]["artifact"], killed)  # what the killed copy left
        (killed / "model.onnx").write_bytes(b"half a file")
        busy = artifacts / f".onnxruntime-int8.tmp-{alive.pid}"
        busy.mkdir()
        again = run_pipeline(load_config(cfg))
        assert again.cache_misses == [] and not killed.exists() and busy.is_dir()
        assert sorted(p.name for p in artifacts.iterdir()) == [busy.name, "onnxruntime-fp32"]
    finally:
        alive.kill()


def test_verify_command_and_run_py_refuse_changed_files(shipped):
    _, result = shipped
    bundle = Path(result.records[0]["artifact"])
    assert cli("verify", str(bundle)).returncode == 0
    decoder = bundle / "edgeopt_bundle" / "decode.py"
    decoder.write_text(decoder.read_text() + "\n# changed after verification\n")
    proc = cli("verify", str(bundle))
    assert proc.returncode == 1 and "edgeopt_bundle/decode.py" in proc.stderr
    bench = [sys.executable, str(bundle / "run.py"), "--bench", "--runs", "50", "--warmup", "0"]
    refused = subprocess.run(bench, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and "refusing to load" in refused.stderr and "Traceback" not in refused.stderr
    forced = subprocess.run(bench + ["--no-verify"], capture_output=True, text=True, timeout=300)
    assert forced.returncode == 0 and json.loads(forced.stdout)["runs"] == 50
    assert cli("verify", str(bundle.parent)).returncode == 2  # not a bundle: a clear error


def test_run_py_bad_inputs_are_one_line_errors(shipped, tmp_path):
    _, result = shipped
    bundle = Path(result.records[0]["artifact"])
    (tmp_path / "notes.jpg").write_text("not an image")
    for image in (tmp_path / "notes.jpg", tmp_path / "missing.jpg"):
        proc = subprocess.run([sys.executable, str(bundle / "run.py"), str(image)], capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 2 and "cannot read the image" in proc.stderr and "Traceback" not in proc.stderr
    (bundle / "edgeopt.json").unlink()
    proc = subprocess.run([sys.executable, str(bundle / "run.py"), "--bench"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2 and "edgeopt.json" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("code, text", [("ENOSPC", "No space left on device"),
                                        ("EROFS", "Read-only file system")])  # root cannot make a real one
def test_disk_full_while_shipping_is_a_clear_error_and_leaves_no_partial_copy(shipped, monkeypatch, capsys, code,
                                                                              text):
    import errno

    from edgeopt.cli import main

    cfg, result = shipped
    artifacts = Path(result.records[0]["artifact"]).parent

    def full(src, dst, **kwargs):
        Path(dst).mkdir(parents=True)
        (Path(dst) / "half-written").write_bytes(b"x")
        raise OSError(getattr(errno, code), text, str(dst))

    monkeypatch.setattr(shutil, "copytree", full)
    monkeypatch.setattr(sys, "argv", ["edgeopt", "run", str(cfg)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert text in err and "Traceback" not in err
    assert not [p for p in artifacts.iterdir() if ".tmp-" in p.name]  # the partial copy was removed


def run_py(bundle: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(bundle / "run.py"), *args], capture_output=True, text=True,
                          timeout=300)


def one_line_error(proc: subprocess.CompletedProcess, needle: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr and needle in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_run_py_truncated_image_corrupt_model_and_incomplete_manifest_are_one_line_errors(shipped, tmp_path):
    from PIL import Image

    _, result = shipped
    bundle = Path(result.records[0]["artifact"])
    Image.new("RGB", (64, 48), (200, 30, 30)).save(tmp_path / "whole.jpg", quality=95)
    whole = (tmp_path / "whole.jpg").read_bytes()
    (tmp_path / "half.jpg").write_bytes(whole[: len(whole) // 2])
    one_line_error(run_py(bundle, str(tmp_path / "half.jpg")), "cannot read the image")

    manifest = json.loads((bundle / "edgeopt.json").read_text())
    (bundle / "model.onnx").write_bytes(os.urandom(2048))
    one_line_error(run_py(bundle, str(tmp_path / "whole.jpg"), "--no-verify"), f"cannot load the model {bundle}")
    one_line_error(run_py(bundle, "--bench", "--no-verify"), "model.onnx")

    for broken, needle in [({k: v for k, v in manifest.items() if k != "input"}, "lacks the entry 'input'"),
                           ({**manifest, "output": {}}, "lacks the entry 'output.decoder'"),
                           ({**manifest, "class_names": "person"}, "'class_names' should be a list"),
                           ({**manifest, "output": {"decoder": {"bogus": 1}}}, "bad 'output.decoder'"),
                           ([manifest], "not a JSON object")]:
        (bundle / "edgeopt.json").write_text(json.dumps(broken))
        proc = run_py(bundle, str(tmp_path / "whole.jpg"), "--no-verify")
        one_line_error(proc, needle)
        assert str(bundle / "edgeopt.json") in proc.stderr  # names the file


def _tamper_after(monkeypatch, stage_cls: type, tampered: list[Path]) -> None:
    """Make ``stage_cls.load`` overwrite each exported bundle's model after the stage has finished with it, as
    a disk fault or another process could between two stages."""
    original = stage_cls.load

    def load(self, ctx, item, out):
        original(self, ctx, item, out)
        if self.name == "export" or type(item).__name__ == "Timing":  # after the last use: the device's timing
            bundle = ctx.bundles[-1].path if self.name == "export" else item.bundle.path
            (bundle / "model.onnx").write_bytes(b"changed after the stage checked it")
            tampered.append(bundle)

    monkeypatch.setattr(stage_cls, "load", load)


def _run_cli(monkeypatch, capsys, cfg: Path) -> tuple[int, str]:
    from edgeopt.cli import main

    monkeypatch.setattr(sys, "argv", ["edgeopt", "run", str(cfg)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    return exit_info.value.code, capsys.readouterr().err


BENCH = {"warmup": 1, "runs": 50, "threads": 1, "map": False}


def test_a_bundle_changed_between_export_and_benchmark_is_not_benchmarked_or_shipped(tmp_path, monkeypatch, capsys):
    pytest.importorskip("onnxruntime")
    from edgeopt.stages.export import ExportStage

    cfg = write_config(tmp_path, stages=[*STAGES, "benchmark"], targets=ORT_FP32, benchmark=BENCH)
    tampered: list[Path] = []
    _tamper_after(monkeypatch, ExportStage, tampered)
    code, err = _run_cli(monkeypatch, capsys, cfg)
    assert code == 1 and len(tampered) == 1, err
    assert "differs from its manifest" in err and "model.onnx" in err and "Traceback" not in err
    run = tmp_path / "run"
    assert not (run / "artifacts").exists() or not any((run / "artifacts").iterdir())
    benched = [json.loads(p.read_text()) for p in (run / "cache" / "benchmark").glob("*/bench.json")]
    assert not [b for b in benched if "peak_rss_mb" in b]  # only the torch reference (timed in-process) has figures


def test_a_bundle_changed_between_benchmark_and_shipping_is_a_failed_row_not_shipped(shipped, monkeypatch, capsys):
    from edgeopt.stages.benchmark import BenchmarkStage

    _, result = shipped
    artifact = Path(result.records[0]["artifact"])
    assert verify_bundle(artifact) == []
    cfg = write_config(artifact.parents[2], stages=[*STAGES, "benchmark"], targets=ORT_FP32, benchmark=BENCH)
    tampered: list[Path] = []
    _tamper_after(monkeypatch, BenchmarkStage, tampered)
    code, err = _run_cli(monkeypatch, capsys, cfg)
    assert code == 1 and len(tampered) == 1, err
    assert "failed the gate" in err and "Traceback" not in err
    (row,) = [r for r in json.loads((artifact.parents[1] / "results.json").read_text())["records"]
              if r["target"] == "onnxruntime"]
    assert row["status"] == "failed" and row["reason"] == "files differ from the manifest: model.onnx"
    assert row["latency_ms_median"] > 0  # it was benchmarked while intact
    assert not artifact.exists()  # the bundle shipped by the earlier run is withdrawn, the changed one not copied
