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


def _tiny_onnx(path: Path, names: str | None) -> Path:
    """A two-class reference network exported to ONNX, with ``names`` as its metadata entry."""
    import onnx
    import torch

    from edgeopt.models.sources.reference.network import ReferenceConfig, build_reference

    model = build_reference(ReferenceConfig(num_classes=2, input_size=64, widths=(8, 8, 8, 8, 8),
                                            depths=(1, 1, 1, 1), neck=(8, 8, 8), head=8)).eval()
    torch.onnx.export(model, (torch.zeros(1, 3, 64, 64),), str(path), dynamo=False, opset_version=17)
    graph = onnx.load(str(path))
    if names is not None:
        entry = graph.metadata_props.add()
        entry.key, entry.value = "names", names
    onnx.save(graph, str(path))
    return path


def test_onnx_metadata_names_of_an_odd_type_are_refused(tmp_path):
    pytest.importorskip("onnxruntime")
    for i, names in enumerate(["{[1]: 2}", "5", "{0: 'a', 2: 'b'}", "[]"]):  # unhashable, a number, gaps, none
        model = {"source": str(_tiny_onnx(tmp_path / f"m{i}.onnx", names)), "decoder": "yolo_normalized"}
        (tmp_path / str(i)).mkdir()
        cfg = _edited(tmp_path / str(i), stages=["calibrate"], model=model)
        proc = cli("run", str(cfg))
        clean_failure(proc, "metadata entry 'names'", 1)
        assert "model.class_names" in proc.stderr and not (tmp_path / str(i) / "run").exists()


FACTORY = """
from edgeopt.models.sources.reference.network import ReferenceConfig, build_reference


def build():
    return build_reference(ReferenceConfig(num_classes=2, input_size=64, widths=(8, 8, 8, 8, 8),
                                           depths=(1, 1, 1, 1), neck=(8, 8, 8), head=8))
"""


def test_factory_weights_that_are_random_bytes_or_not_a_state_dict_are_named(tmp_path):
    import torch

    (tmp_path / "tinydet.py").write_text(FACTORY)
    (tmp_path / "random.pt").write_bytes(os.urandom(4096))
    torch.save({"stem.0.weight": 1, "epoch": 3}, tmp_path / "numbers.pt")  # a dict, but of no tensors
    for weights, needle in [("random.pt", "not a readable PyTorch"), ("numbers.pt", "is not a state_dict")]:
        cfg = _edited(tmp_path, stages=["calibrate"], model={
            "source": "tinydet:build", "trust_code": True, "weights": str(tmp_path / weights),
            "decoder": "yolo_normalized", "input_size": 64, "class_names": ["a", "b"]})
        proc = subprocess.run([sys.executable, "-m", "edgeopt.cli", "run", str(cfg)], capture_output=True,
                              text=True, cwd=tmp_path, timeout=600,
                              env={**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])})
        clean_failure(proc, needle, 1)
        assert str(tmp_path / weights) in proc.stderr and not (tmp_path / "run").exists()


def test_checkpoint_with_a_bad_channel_spec_is_named(tmp_path):
    import torch
    from PIL import Image

    from edgeopt.models.checkpoint import channel_spec, plain_state
    from edgeopt.models.sources.reference.checkpoint import FORMAT, load_detector

    model = load_detector()
    header = {"format": FORMAT, "config": model.config.to_dict()}
    state, spec = plain_state(model), channel_spec(model)
    first = next(iter(spec))  # the stem convolution: [3, 16, 1]
    rewired = {**state, f"{first}.weight": state[f"{first}.weight"][:8].clone()}  # fits its own spec entry only
    cases = [("rewired", {"channels": {**spec, first: [3, 8, 1]}, "state_dict": rewired}, "does not fit together"),
             ("text", {"channels": "abc", "state_dict": state}, "not a mapping"),
             ("wide", {"channels": {first: [3, 10**6, 1]}, "state_dict": state}, "no larger than the unpruned")]
    data = _dataset_with_names(tmp_path / "d", "[a]")
    Image.new("RGB", (64, 48), (90, 120, 30)).save(data.parent / "images" / "val" / "x.jpg")
    (data.parent / "labels" / "val").mkdir(parents=True)
    (data.parent / "labels" / "val" / "x.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    for name, body, needle in cases:
        torch.save({**header, **body}, tmp_path / f"{name}.pt")
        proc = cli("eval", "--data", str(data), "--model", str(tmp_path / f"{name}.pt"))
        clean_failure(proc, needle, 1)
        assert f"{name}.pt" in proc.stderr


def test_legacy_format_pickle_with_code_names_the_global(tmp_path):
    """The format torch < 1.6 wrote (no zip): the refusal names the code it references, as for the zip format,
    at the default protocol (GLOBAL) and at protocol 4 (STACK_GLOBAL, names fetched from the memo)."""
    import collections

    import torch

    data = str(_dataset_with_names(tmp_path / "d", "[a]"))
    for protocol in (2, 4):
        path = tmp_path / f"legacy{protocol}.pt"
        torch.save({"state": collections.OrderedDict(w=torch.zeros(2)), "fn": os.getcwd}, path,
                   _use_new_zipfile_serialization=False, pickle_protocol=protocol)
        proc = cli("eval", "--data", data, "--model", str(path))
        clean_failure(proc, "a full pickle, referencing posix.getcwd)", 1)
        assert "torch." not in proc.stderr.split("referencing")[1]  # tensors are allowed: not named
