"""Shared fixtures: small generated datasets (nothing is downloaded)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeopt.data.synthetic import generate


@pytest.fixture(scope="session")
def synth_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic YOLO dataset (24 train, 24 val images); returns its data.yaml."""
    return generate(tmp_path_factory.mktemp("synth"), train=24, val=24, seed=7)
