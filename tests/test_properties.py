"""Property tests: whatever a user writes in a config or a label file, edgeopt answers with a clear error or a
result, never a traceback."""

from __future__ import annotations

import copy
import math
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from edgeopt.data.yolo import read_yolo
from edgeopt.errors import DataError

BASE = {
    "version": 1, "name": "prop", "output": "runs/prop", "stages": ["calibrate", "quantize", "export"],
    "model": {"source": "reference", "input_size": 320},
    "data": {"calibration": {"path": "synthetic", "split": "train", "images": 4},
             "validation": {"path": "synthetic", "split": "val", "images": 4}},
    "targets": [{"name": "onnxruntime", "precisions": ["fp32", "int8"]}],
}
PATHS = [("version",), ("stages",), ("model", "source"), ("model", "input_size"), ("model", "trust_code"),
         ("model", "decoder"), ("data", "calibration", "seed"), ("data", "validation", "images"),
         ("quantize", "method"), ("quantize", "keep_float"), ("prune", "ratio"), ("targets",),
         ("targets", 0, "options"), ("targets", 0, "precisions"), ("targets", 0, "name"), ("device",),
         ("parity", "min_score_cosine"), ("parity", "max_box_error"), ("benchmark", "runs"), ("benchmark", "threads"),
         ("modle",), ("targets", 0, "options", "calibraton")]
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=True)
    | st.text(max_size=12) | st.sampled_from(["fp32", "int9", "ncnn", "os:system", "(", "local", "synthetic"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6)


def _set(data: dict, path: tuple, value: object) -> None:
    node = data
    for part in path[:-1]:
        if isinstance(node, list):
            if not isinstance(part, int) or part >= len(node) or not isinstance(node[part], dict):
                return
            node = node[part]
        elif isinstance(node, dict):
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, (dict, list)):
                return
            node = nxt
    if isinstance(node, dict):
        node[path[-1]] = value


def _cli_exit(args: list[str]) -> int:
    """Run the CLI in-process as its entry point does; any exception other than a clean exit escapes."""
    from edgeopt.cli import main

    argv = sys.argv
    sys.argv = ["edgeopt", *args]
    try:
        main()
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = argv
    return 0


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(changes=st.lists(st.tuples(st.sampled_from(PATHS), VALUES), max_size=3))
def test_validate_never_tracebacks(tmp_path, changes):
    data = copy.deepcopy(BASE)
    for path, value in changes:
        _set(data, path, value)
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(data))
    assert _cli_exit(["validate", str(cfg)]) in (0, 1, 2)
    assert not (tmp_path / "pwned").exists()


LINE = st.lists(st.one_of(st.integers(-3, 9).map(str), st.floats(allow_nan=True, allow_infinity=True).map(repr),
                          st.text(alphabet="0123456789.-eE+naif ", max_size=6)), max_size=7).map(" ".join)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(LINE, max_size=4))
def test_label_files_are_read_or_refused_with_file_and_line(tmp_path, lines):
    from PIL import Image

    root = tmp_path / "ds"
    (root / "images" / "val").mkdir(parents=True, exist_ok=True)
    (root / "labels" / "val").mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 24)).save(root / "images" / "val" / "x.png")
    (root / "labels" / "val" / "x.txt").write_text("\n".join(lines) + "\n")
    (root / "data.yaml").write_text("val: images/val\nnames: [a, b, c]\n")
    try:
        ds = read_yolo(root / "data.yaml", "val")
    except DataError as exc:
        assert "x.txt:" in str(exc)
        return
    boxes = ds.samples[0].boxes
    assert all(math.isfinite(v) for v in boxes.ravel())
    assert ((boxes[:, 0] >= 0) & (boxes[:, 2] <= 32) & (boxes[:, 1] >= 0) & (boxes[:, 3] <= 24)).all()


RUN_BASE = {
    "version": 1, "name": "prop-run", "stages": ["calibrate", "quantize", "export", "benchmark"],
    "model": {"source": "reference", "input_size": 128},
    "data": {"calibration": {"path": "synthetic", "split": "train", "seed": 11, "images": 4},
             "validation": {"path": "synthetic", "split": "val", "seed": 12, "images": 8}},
    "calibrate": {"images": 4, "parity_images": 8},
    "targets": [{"name": "onnxruntime", "precisions": ["fp32"]}],
    "benchmark": {"warmup": 0, "runs": 50, "threads": 1, "map": False},
}
ORDER = ["calibrate", "quantize", "export", "benchmark"]
TOLERANCE = st.sampled_from([("parity", k) for k in ("min_score_cosine", "max_score_error", "max_box_error",
                                                       "min_box_agreement", "max_map_drop")])
# what a user tunes: kept to what is cheap and cached between examples (the reference detector at 128 px,
# onnxruntime fp32 or int8, the same few synthetic images); it may fail the gate or leave a row unverified
TUNED = st.one_of(
    st.tuples(TOLERANCE, st.dictionaries(st.sampled_from(["fp32", "int8"]), st.floats(0, 1.5), max_size=2)),
    st.tuples(st.just(("parity", "min_boxes")), st.integers(1, 100)),
    st.tuples(st.just(("targets", 0, "precisions")), st.lists(st.sampled_from(["fp32", "int8"]), min_size=1,
                                                              max_size=2, unique=True)),
    st.tuples(st.just(("stages",)), st.sets(st.sampled_from(ORDER)).map(lambda s: [n for n in ORDER if n in s])),
    st.tuples(st.just(("benchmark", "map")), st.booleans()),
)
# what a user gets wrong
MISTAKE = st.one_of(
    st.tuples(TOLERANCE, st.dictionaries(st.sampled_from(["fp32", "int9"]), st.sampled_from([float("nan"), -1.0,
                                                                                             "high"]), max_size=2)),
    st.tuples(st.just(("parity", "min_boxes")), st.sampled_from([-1, 0, "five"])),
    st.tuples(st.just(("targets", 0, "precisions")), st.sampled_from([[], ["fp16"], ["int9"], "fp32"])),
    st.tuples(st.just(("targets", 0, "name")), st.sampled_from(["onnxruntme", 5])),
    st.tuples(st.just(("stages",)), st.lists(st.sampled_from(["prune", "calibrat", "export"]), max_size=3)),
    st.tuples(st.sampled_from([("modle",), ("calibrate", "imagez"), ("targets", 0, "optionz")]), st.integers(0, 3)),
    st.tuples(st.just(("calibrate", "images")), st.sampled_from([-2, 0, "many"])),
    st.tuples(st.just(("model", "input_size")), st.sampled_from([100, 0, "big", None])),
    st.tuples(st.just(("data", "calibration", "seed")), st.sampled_from([-3, 1.5])),
)
SETS = st.lists(st.sampled_from(["parity.min_score_cosine={fp32: 0.5}", "benchmark.map=true", "stages=[calibrate]",
                                 "targets.0.precisions=[int8]"]), max_size=1)
BAD_SETS = st.sampled_from(["parity.max_box_error={int9: 1}", "name.a.b=1", "targets.0.precisions=[]",
                            "quantize.keep_float=['(']", "nokey", "calibrate.parity_images=0"])


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tuned=st.lists(TUNED, max_size=2), sets=SETS, mistake=st.one_of(st.none(), st.none(), MISTAKE, BAD_SETS))
@example(tuned=[], sets=[], mistake=None)  # the base config ships a bundle
@example(tuned=[(("parity", "min_score_cosine"), {"fp32": 1.5})], sets=[], mistake=None)  # the gate refuses it
def test_run_never_tracebacks_and_ships_only_verified_bundles(tmp_path, capsys, tuned, sets, mistake):
    """``edgeopt run`` on generated configs and ``--set`` overrides (examples share one run directory, so later
    ones also go through cache reuse and re-shipping): a result or a clean error, and every bundle in
    ``artifacts/`` matches its manifest."""
    from edgeopt.core.manifest import verify_bundle

    data = copy.deepcopy(RUN_BASE)
    data["output"] = str(tmp_path / "run")
    for path, value in [*tuned, *([mistake] if isinstance(mistake, tuple) else [])]:
        _set(data, path, value)
    sets = [*sets, *([mistake] if isinstance(mistake, str) else [])]
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(data))
    capsys.readouterr()
    code = _cli_exit(["run", str(cfg), *(arg for s in sets for arg in ("--set", s))])
    out, err = capsys.readouterr()
    assert code in (0, 1, 2), (code, err[-2000:])
    assert "Traceback" not in out + err, err[-2000:]
    artifacts = tmp_path / "run" / "artifacts"
    for bundle in sorted(artifacts.iterdir()) if artifacts.is_dir() else []:
        assert not bundle.name.startswith("."), f"a temporary left in artifacts/: {bundle.name}"
        assert verify_bundle(bundle) == [], bundle
