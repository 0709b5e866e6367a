from pathlib import Path

import pytest

from edgeopt.config.load import apply_overrides, json_schema, load_config
from edgeopt.errors import ConfigError

CONFIGS = sorted((Path(__file__).parents[2] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_validates(path):
    if "sweep:" in path.read_text():  # a sweep file: every point of its grid is a valid config
        from edgeopt.sweep.spec import expand, read_sweep

        points = expand(*read_sweep(path))
        assert len(points) > 1 and all(p.config.targets and p.config.stages for p in points)
        with pytest.raises(ConfigError, match="is a sweep file"):
            load_config(path)
        return
    cfg = load_config(path)
    assert cfg.targets and cfg.stages


def test_default_config_exists():
    assert any(p.name == "default.yaml" for p in CONFIGS)


def test_unknown_key_names_path_and_suggests(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text((CONFIGS[0]).read_text().replace("per_channel:", "per_chanel:"))
    with pytest.raises(ConfigError, match=r"unknown key 'quantize.per_chanel' \(did you mean 'per_channel'\?\)"):
        load_config(p)


def test_overrides_types_and_lists():
    data = {"benchmark": {"runs": 50}, "targets": [{"name": "onnxruntime", "precisions": ["fp32"]}]}
    apply_overrides(data, ["benchmark.runs=100", "targets.0.precisions=[fp32, int8]", "seed=3"])
    assert data == {"benchmark": {"runs": 100}, "targets": [{"name": "onnxruntime", "precisions": ["fp32", "int8"]}],
                    "seed": 3}
    with pytest.raises(ConfigError, match="not an index"):
        apply_overrides(data, ["targets.5.name=x"])


def test_stage_order_and_input_size_are_checked(tmp_path):
    base = CONFIGS[0]
    with pytest.raises(ConfigError, match="stages must be unique and in the order"):
        load_config(base, ["stages=[export, calibrate]"])
    with pytest.raises(ConfigError, match="multiple of 32"):
        load_config(base, ["model.input_size=300"])


def test_schema_lists_sections():
    schema = json_schema()
    assert {"targets", "data", "benchmark", "quantize", "stages", "version"} <= set(schema["properties"])


def test_partial_parity_override_keeps_the_other_defaults(tmp_path):
    """A tolerance set for one precision leaves the others at their defaults (it used to drop them: anything passed)."""
    from edgeopt.config.schema import TOLERANCES
    from helpers import write_config

    cfg = load_config(write_config(tmp_path), ["parity.min_score_cosine={fp32: 0.99999}"])
    assert cfg.parity.min_score_cosine == {**TOLERANCES["min_score_cosine"], "fp32": 0.99999}
    with pytest.raises(ConfigError, match="unknown precision int9"):
        load_config(write_config(tmp_path), ["parity.max_box_error={int9: 0.1}"])


def test_synthetic_splits_with_one_seed_are_separate_datasets(tmp_path):
    """Calibration (train) and validation (val) with the same seed and size are two datasets, not one folder."""
    from edgeopt.config.schema import DatasetConfig
    from edgeopt.data.open import open_dataset

    train = open_dataset(DatasetConfig(path="synthetic", split="train", seed=5, images=3), tmp_path)
    val = open_dataset(DatasetConfig(path="synthetic", split="val", seed=5, images=3), tmp_path)
    assert len(train) == len(val) == 3
    assert {s.image.parent.name for s in train.samples} == {"train"}
    assert {s.image.parent.name for s in val.samples} == {"val"}
