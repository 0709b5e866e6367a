"""The SSH device against a real OpenSSH server on loopback (this machine's Python as the board's): check, push
only what changed, checksums verified on the device, bench, on-device mAP, and every way a device can fail."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

import edgeopt
from edgeopt.cli import main as cli_main
from edgeopt.core.manifest import read_manifest
from edgeopt.core.registry import TARGETS
from edgeopt.devices import load_device
from edgeopt.errors import ConfigError, DeviceError
from helpers import write_config

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
sys.path.insert(0, str(SCRIPTS))
import emulated_pi  # noqa: E402  (scripts/emulated_pi.py: the loopback sshd the emulated Pi also uses)

pytestmark = pytest.mark.skipif(not Path(emulated_pi.SSHD).exists() or shutil.which("ssh") is None,
                                reason="needs Debian's openssh-server and openssh-client (scripts/setup.sh)")


@pytest.fixture(scope="module")
def board(tmp_path_factory) -> dict:
    """A real sshd on 127.0.0.1 whose login runs this machine's Python: the profile of that 'board'."""
    state = tmp_path_factory.mktemp("sshd")
    profile = emulated_pi.start_sshd(state, python=sys.executable, name="board")
    yield {**profile, "state": state, "path": state / "board.yaml"}
    emulated_pi.stop_sshd(state)


@pytest.fixture(scope="module")
def device_run(board, tmp_path_factory):
    """The reference detector, ONNX Runtime fp32 + int8 and ncnn fp32, benchmarked here and on the board with
    mAP there; the board 'lacks' ncnn (its module name is one that cannot import)."""
    tmp = tmp_path_factory.mktemp("devrun")
    config = write_config(tmp, device=["local", str(board["path"])],
                          targets=[{"name": "onnxruntime", "precisions": ["fp32", "int8"]},
                                   {"name": "ncnn", "precisions": ["fp32"]}],
                          benchmark={"warmup": 1, "runs": 50, "threads": 1, "map_on_device": True})
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(TARGETS.load("ncnn"), "device_modules", ("ncnn_is_not_on_this_board",))
        result = edgeopt.run(edgeopt.load_config(str(config)))
        result.config_path = config
        return result


def test_an_unchanged_rerun_on_the_board_measures_nothing_again(device_run):
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(TARGETS.load("ncnn"), "device_modules", ("ncnn_is_not_on_this_board",))
        again = edgeopt.run(edgeopt.load_config(str(device_run.config_path)))
    assert again.cache_misses == []  # the board's description (import times, temperature) does not churn keys


def _artifact(result) -> Path:
    return Path(next(r["artifact"] for r in result.records if r.get("device") == "board" and r["precision"] == "fp32"))


def test_check_reports_the_board_and_its_runtimes(board, capsys):
    device = load_device(str(board["path"]))
    info = device.describe({name: TARGETS.load(name).device_modules for name in TARGETS.names}
                           | {"imaginary": ("no_such_runtime_module",)})
    assert info["kind"] == "ssh" and info["emulated"] is False and info["machine"] == "x86_64"
    assert info["cores"] >= 1 and info["python"] == ".".join(map(str, sys.version_info[:3]))
    assert info["mem_total_mb"] > 0 and info["os"] and info["libc"].startswith("glibc")
    assert info["runtimes"]["onnxruntime"]["ok"] and info["runtimes"]["onnxruntime"]["version"]
    assert not info["runtimes"]["imaginary"]["ok"] and "no_such_runtime_module" in info["runtimes"]["imaginary"]["error"]
    with pytest.raises(SystemExit) as code:
        sys.argv = ["edgeopt", "device", "check", str(board["path"])]
        cli_main()
    assert code.value.code in (0, None)
    out = capsys.readouterr().out
    assert "x86_64" in out and "runtime onnxruntime" in out


def test_a_run_on_the_board_gives_its_own_rows_with_map_measured_there(device_run):
    rows = {(r["target"], r["precision"], r["device"]): r for r in device_run.records}
    for precision in ("fp32", "int8"):
        here, there = rows[("onnxruntime", precision, "local")], rows[("onnxruntime", precision, "board")]
        assert here["status"] == there["status"] == "passed", (here["reason"], there["reason"])
        assert there["latency_ms_median"] > 0 and there["peak_rss_mb"] > 0 and there["emulated"] is False
        # the same CPU and runtime on both ends: detections made over SSH score exactly as those made here
        assert there["device_map50_95"] == pytest.approx(here["map50_95"], abs=1e-9)
        assert there["device_box_agreement"] == 1.0  # every detection matched this machine's
        assert there["host_map50_95"] == here["map50_95"] and there["artifact"] == here["artifact"]
    assert device_run.run_info["devices"]["board"]["kind"] == "ssh"


def test_a_runtime_missing_on_the_board_skips_its_rows_there_only(device_run):
    rows = {(r["target"], r["device"]): r for r in device_run.records if r["target"] == "ncnn"}
    here, there = rows[("ncnn", "local")], rows[("ncnn", "board")]
    assert there["status"] == "skipped" and "not installed on board" in there["reason"], there
    assert "edgeopt device setup board" in there["reason"] and there.get("latency_ms_median") is None
    assert here["status"] == "passed" and here["artifact"]  # judged and timed here: shipped


def test_push_sends_only_changed_files_and_a_file_changed_on_the_board_is_refused(device_run, board):
    device = load_device(str(board["path"]))
    bundle = _artifact(device_run)
    remote = device.push(bundle)
    assert device.verify(bundle) == []
    there = Path(remote)  # the board is this machine: its work dir is a local folder
    model = read_manifest(bundle).model_files[0]
    (there / model).write_bytes(b"tampered on the device")
    (there / "json.py").write_text("raise SystemExit('planted beside run.py')\n")  # would shadow a module
    stamp = (there / "run.py").stat().st_mtime_ns
    assert device.verify(bundle) == [model, "json.py (not in the bundle)"]
    device.push(bundle)
    assert device.verify(bundle) == [] and (there / "run.py").stat().st_mtime_ns == stamp  # only the model re-sent
    assert not (there / "json.py").exists() and not (there / "__pycache__").exists()
    (there / model).write_bytes(b"tampered again")
    from edgeopt.stages.benchmark import bench_artifact

    class NoRepush(type(device)):
        def push(self, bundle):  # a board whose copy changed after the push: the check on it must refuse
            return self.bundle_dir(bundle)

    stubborn = NoRepush(yaml.safe_load(board["path"].read_text()))
    from edgeopt.config.schema import BenchmarkConfig
    from edgeopt.stages.context import Bundle

    with pytest.raises(DeviceError, match="differs from its manifest on board: " + model):
        bench_artifact(Bundle(TARGETS.create("onnxruntime"), "fp32", bundle, read_manifest(bundle)), stubborn, 1,
                       BenchmarkConfig(runs=50, warmup=1), None, device_run.output)
    assert str(there).startswith(board["work_dir"])  # all it wrote is under the work dir


def test_linked_files_travel_as_files(board, tmp_path):
    device = load_device(str(board["path"]))
    (tmp_path / "image.jpg").write_bytes(b"pixels")
    (tmp_path / "symlinked.jpg").symlink_to(tmp_path / "image.jpg")
    (tmp_path / "hardlinked.jpg").hardlink_to(tmp_path / "image.jpg")
    files = {name: tmp_path / name for name in ("image.jpg", "symlinked.jpg", "hardlinked.jpg")}
    there = device.push_files(files, device.remote_path("linked"), "linked images")
    assert set(there) == set(files) and len(set(there.values())) == 1
    assert not Path(device.remote_path("linked"), "symlinked.jpg").is_symlink()


def test_two_profiles_with_one_name_are_refused(board, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    config = write_config(tmp_path, device=[str(_profile(board, tmp_path / "a")), str(_profile(board, tmp_path / "b"))])
    with pytest.raises(ConfigError, match="two device profiles share a name: board, board"):
        edgeopt.run(edgeopt.load_config(str(config)))


def test_the_agent_refuses_archive_members_that_leave_the_folder(board):
    device = load_device(str(board["path"]))
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("../escaped.txt")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(DeviceError, match="refusing archive member '../escaped.txt'"):
        device.agent("unpack", device.remote_path("jail"), data=buffer.getvalue())
    assert not (Path(board["work_dir"]) / "escaped.txt").exists()


def _profile(board, tmp_path, **changes) -> Path:
    data = yaml.safe_load(board["path"].read_text()) | changes
    path = tmp_path / f"{data['name']}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_an_unreachable_board_is_a_clear_error(board, tmp_path):
    device = load_device(str(_profile(board, tmp_path, port=emulated_pi.free_port(), connect_timeout=3)))
    with pytest.raises(DeviceError, match=r"cannot reach device 'board' \(root@127.0.0.1:\d+\): .*refused") as info:
        device.describe()
    assert "re-run" in info.value.hint


def test_a_wrong_host_key_is_refused(board, tmp_path):
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    key = other.with_suffix(".pub").read_text().split()
    (tmp_path / "known_hosts").write_text(f"[127.0.0.1]:{board['port']} {key[0]} {key[1]}\n")
    device = load_device(str(_profile(board, tmp_path, known_hosts=str(tmp_path / "known_hosts"))))
    with pytest.raises(DeviceError, match="host key is unknown or not the one recorded"):
        device.describe()
    (tmp_path / "known_hosts").write_text("")  # never seen: refused too unless the profile accepts new keys
    with pytest.raises(DeviceError, match="host key"):
        device.describe()
    trusting = load_device(str(_profile(board, tmp_path, known_hosts=str(tmp_path / "known_hosts"),
                                        host_key_check="accept-new")))
    assert trusting.describe()["machine"] == "x86_64"  # first contact accepted and recorded ...
    board_key = (board["state"] / "host_key.pub").read_text().split()[1]
    assert board_key in (tmp_path / "known_hosts").read_text()  # ... in the profile's known_hosts


def test_a_missing_runtime_on_the_board_stops_the_run_before_any_work(board, tmp_path, capsys, monkeypatch):
    config = write_config(tmp_path, device=str(_profile(board, tmp_path, python="/usr/bin/python3")))
    monkeypatch.setattr(sys, "argv", ["edgeopt", "run", str(config)])
    with pytest.raises(SystemExit) as code:
        cli_main()
    err = capsys.readouterr().err
    assert code.value.code == 1 and "Traceback" not in err
    assert "device 'board' has none of the configured runtimes: onnxruntime" in err and "edgeopt device setup" in err
    assert not (tmp_path / "run").exists()  # refused in preflight: nothing written


def test_a_profile_typo_names_the_key_and_suggests_the_right_one(tmp_path):
    (tmp_path / "pi5.yaml").write_text("kind: ssh\nhost: pi5.local\nwork_dri: ~/edgeopt\n")
    with pytest.raises(ConfigError, match="unknown key 'work_dri'") as info:
        load_device("pi5", tmp_path)
    assert "work_dir" in info.value.hint


def test_a_dropped_board_fails_clearly_and_the_rerun_resumes_from_the_cache(board, tmp_path, capsys, monkeypatch):
    state = tmp_path / "flaky"
    shutil.copytree(board["state"], state, ignore=shutil.ignore_patterns("sshd.pid", "sshd.log", "*.yaml"))
    profile = emulated_pi.start_sshd(state, python=sys.executable, name="flaky")
    config = write_config(tmp_path, device=str(state / "flaky.yaml"),
                          targets=[{"name": "onnxruntime", "precisions": ["fp32"]}])
    from edgeopt.stages.benchmark import BenchmarkStage

    original = BenchmarkStage.run

    def drop_before_timing(self, ctx, item, out):
        if type(item).__name__ == "Timing":
            emulated_pi.stop_sshd(state)  # the board goes away mid-run
        return original(self, ctx, item, out)

    monkeypatch.setattr(BenchmarkStage, "run", drop_before_timing)
    monkeypatch.setattr(sys, "argv", ["edgeopt", "run", str(config)])
    with pytest.raises(SystemExit) as code:
        cli_main()
    err = capsys.readouterr().err
    assert code.value.code == 1 and "Traceback" not in err and "cannot reach device 'flaky'" in err, err
    monkeypatch.setattr(BenchmarkStage, "run", original)
    emulated_pi.start_sshd(state, port=profile["port"], python=sys.executable, name="flaky")
    try:
        again = edgeopt.run(edgeopt.load_config(str(config)))
    finally:
        emulated_pi.stop_sshd(state)
    assert [m.split("/")[0] for m in again.cache_misses] == ["benchmark"]  # only the timing that was cut off
    row = next(r for r in again.records if r["device"] == "flaky")
    assert row["status"] == "passed" and row["latency_ms_median"] > 0
    assert json.loads((tmp_path / "run" / "results.json").read_text())["records"]
