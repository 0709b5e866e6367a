"""Bad input and concurrent use end in one clear line and a non-zero exit, never a traceback or lost work."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers import write_config

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgeopt.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env=dict(os.environ), timeout=600)


def clean_failure(proc: subprocess.CompletedProcess, needle: str, code: int = 2) -> None:
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    assert needle in proc.stderr, proc.stderr


def _edited(tmp_path: Path, **changes) -> Path:
    return write_config(tmp_path, **changes)


@pytest.mark.parametrize("args, needle", [
    (["--set", "name.a.b=1"], "'name' is a value, not a section"),
    (["--set", "quantize.keep_float=['(unclosed']"], "not a valid regular expression"),
    (["--set", "data.validation.seed=-3"], "greater than or equal to 0"),
])
def test_validate_refuses_cleanly(tmp_path, args, needle):
    clean_failure(cli("validate", str(_edited(tmp_path)), *args), needle)


@pytest.mark.parametrize("profile, needle", [("kind: [unclosed", "not readable YAML"), ("- a\n- b\n", "mapping"),
                                             ("kind: adb\n", "unknown kind 'adb'")])
def test_validate_checks_the_device_profile(tmp_path, profile, needle):
    (tmp_path / "dev.yaml").write_text(profile)
    clean_failure(cli("validate", str(_edited(tmp_path, device=str(tmp_path / "dev.yaml")))), needle)


def test_cli_option_ranges(tmp_path):
    clean_failure(cli("data", "synth", "--out", str(tmp_path / "d"), "--seed", "-3"), "--seed")
    clean_failure(cli("eval", "--data", str(tmp_path), "--limit", "0"), "--limit")


def test_data_synth_never_overwrites_without_force(tmp_path):
    out = tmp_path / "data"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    clean_failure(cli("data", "synth", "--out", str(out), "--train", "1", "--val", "0"), "--force")
    assert (out / "mine.txt").read_text() == "keep me" and not (out / "images").exists()
    assert cli("data", "synth", "--out", str(out), "--train", "1", "--val", "0", "--force").returncode == 0
    assert (out / "data.yaml").is_file()


@pytest.fixture
def sleeper():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    yield proc.pid
    proc.kill()
    proc.wait()


def test_a_run_directory_in_use_is_refused_and_a_stale_lock_taken_over(tmp_path, sleeper):
    cfg = _edited(tmp_path, stages=["calibrate"])
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / ".edgeopt.lock").write_text(str(sleeper))
    clean_failure(cli("run", str(cfg)), f"in use by process {sleeper}")
    live_tmp = run_dir / "cache" / "calibrate" / f".other.tmp-{sleeper}"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_tmp = run_dir / "cache" / "calibrate" / f".left.tmp-{int(dead.stdout)}"
    live_tmp.mkdir(parents=True)
    dead_tmp.mkdir()
    (run_dir / ".edgeopt.lock").write_text(dead.stdout)  # left by a process that is gone
    proc = cli("run", str(cfg))
    assert proc.returncode == 0, proc.stderr
    assert live_tmp.is_dir(), "another process's temporary was deleted"
    assert not dead_tmp.exists() and not (run_dir / ".edgeopt.lock").exists()


def _dataset_with_names(tmp_path: Path, names: str) -> Path:
    (tmp_path / "images" / "val").mkdir(parents=True)
    (tmp_path / "data.yaml").write_text(f"val: images/val\nnames: {names}\n")
    return tmp_path / "data.yaml"


def test_bad_dataset_and_checkpoint_files_are_named(tmp_path):
    import json

    import torch

    clean_failure(cli("eval", "--data", str(_dataset_with_names(tmp_path / "a", "5"))), "'names' in data.yaml", 1)
    (tmp_path / "c.json").write_text(json.dumps({"images": "x.jpg", "annotations": [], "categories": []}))
    clean_failure(cli("eval", "--data", str(tmp_path / "c.json")), "no 'images' list", 1)
    data = str(_dataset_with_names(tmp_path / "b", "[a]"))
    (tmp_path / "random.pt").write_bytes(os.urandom(4096))
    clean_failure(cli("eval", "--data", data, "--model", str(tmp_path / "random.pt")), "not a readable PyTorch", 1)
    torch.save({"format": "edgeopt.reference/1", "config": {"bogus": 1}, "state_dict": {}}, tmp_path / "h.pt")
    clean_failure(cli("eval", "--data", data, "--model", str(tmp_path / "h.pt")), "architecture config", 1)
    torch.save({"format": "edgeopt.reference/1", "config": {}}, tmp_path / "n.pt")
    clean_failure(cli("eval", "--data", data, "--model", str(tmp_path / "n.pt")), "holds no state_dict", 1)


@pytest.mark.parametrize("body, needle", [("def build(:\n", "SyntaxError"), ("raise RuntimeError('boom')\n", "boom")])
def test_a_factory_module_that_fails_to_import_is_named(tmp_path, body, needle):
    (tmp_path / "brokenpkg.py").write_text(body)
    cfg = _edited(tmp_path, model={"source": "brokenpkg:build", "trust_code": True})
    env_cwd = tmp_path  # the module is importable from the working directory
    proc = subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, '.'); "
                           "from edgeopt.cli import main; sys.argv = ['edgeopt', 'run', sys.argv[1]]; main()",
                           str(cfg)], capture_output=True, text=True, cwd=env_cwd, timeout=600,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])})
    clean_failure(proc, needle, 1)


def test_full_pickle_refusal_names_the_globals_and_a_directory_is_not_a_config(tmp_path):
    import collections

    import torch

    torch.save({"state": collections.OrderedDict(a=1), "fn": os.getcwd}, tmp_path / "code.pt")
    data = str(_dataset_with_names(tmp_path / "d", "[a]"))
    clean_failure(cli("eval", "--data", data, "--model", str(tmp_path / "code.pt")), "posix.getcwd", 1)
    clean_failure(cli("validate", str(tmp_path)), "is a directory")
