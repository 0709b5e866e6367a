"""Device profiles: found by name in devices/ or by path, described, and refused clearly when wrong."""

import os
import platform
from pathlib import Path

import pytest

from edgeopt.devices import load_device
from edgeopt.errors import ConfigError

REPO_DEVICES = Path(__file__).resolve().parents[2] / "devices"


def test_the_shipped_local_profile_loads_and_describes_this_machine():
    device = load_device("local", REPO_DEVICES)
    info = device.describe()
    assert info["kind"] == "local" and info["name"] == device.name
    assert info["machine"] == platform.machine() and info["cores"] == os.cpu_count() and info["cpu"]


def test_a_profile_by_name_and_by_path(tmp_path):
    (tmp_path / "bench-box.yaml").write_text("name: bench-box\nkind: local\n")
    by_name = load_device("bench-box", tmp_path)
    by_path = load_device(str(tmp_path / "bench-box.yaml"))
    assert by_name.name == by_path.name == "bench-box"
    assert by_name.describe()["name"] == "bench-box"


def test_a_misspelt_profile_name_suggests_the_right_one(tmp_path):
    (tmp_path / "pi5.yaml").write_text("name: pi5\nkind: local\n")
    with pytest.raises(ConfigError, match="device profile not found: pi4") as info:
        load_device("pi4", tmp_path)
    assert "pi5" in str(info.value.hint)
    with pytest.raises(ConfigError, match="device profile not found: jetson") as info:
        load_device("jetson", tmp_path)
    assert str(info.value.hint).startswith("devices: local, pi5; describe a board in")  # each name once


@pytest.mark.parametrize("text, needle", [("kind: sattelite\n", "unknown kind 'sattelite'"),
                                          ("- a\n- b\n", "must be a mapping"),
                                          ("name: [unclosed\n", "not readable YAML")])
def test_a_bad_profile_is_refused_with_the_reason(tmp_path, text, needle):
    (tmp_path / "bad.yaml").write_text(text)
    with pytest.raises(ConfigError, match=needle.replace("[", r"\[")):
        load_device(str(tmp_path / "bad.yaml"))
