"""Opening configured datasets: a synthetic one is generated once and shared, even by runs that start together."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import edgeopt.data.synthetic as synthetic
from edgeopt.config.schema import DatasetConfig
from edgeopt.data.open import open_dataset
from helpers import write_config

# loads a config and the heavy modules, says it is ready, waits for the start signal, runs
RUN_ON_SIGNAL = """
import sys, time
from pathlib import Path
import edgeopt, edgeopt.pipeline, torch
config = edgeopt.load_config(sys.argv[1])
Path(sys.argv[2]).touch()
while not Path(sys.argv[3]).exists():
    time.sleep(0.005)
edgeopt.run(config)
"""


def test_a_dataset_another_run_finished_meanwhile_is_kept_not_replaced(tmp_path: Path, monkeypatch) -> None:
    """Two runs generate the same dataset; the one finishing second must not delete the first one's (its run may
    be reading it) nor fail to rename over it: the content is the same, so it keeps what is there."""
    cfg = DatasetConfig(path="synthetic", split="val", seed=5, images=3)
    final = tmp_path / "synthetic-val-seed5-n3"
    generate = synthetic.generate
    held: list[int] = []

    def racing(out: Path, **kwargs) -> Path:
        written = generate(out, **kwargs)
        generate(tmp_path / "other", **kwargs)  # the other run finishes first and puts its copy in place
        os.rename(tmp_path / "other", final)
        held.append((final / "data.yaml").stat().st_ino)
        return written

    monkeypatch.setattr(synthetic, "generate", racing)
    dataset = open_dataset(cfg, synthetic_root=tmp_path)
    assert len(dataset) == 3 and held
    assert (final / "data.yaml").stat().st_ino == held[0], "the other run's dataset was replaced under it"
    assert sorted(p.name for p in tmp_path.iterdir()) == [final.name], "a temporary was left behind"


def test_two_runs_needing_the_same_new_synthetic_dataset_both_succeed(tmp_path: Path) -> None:
    """Both generate it at once; the first to finish puts it in place and the other keeps that one, rather than
    deleting it under the first run's feet or failing to rename over it."""
    data = {"path": "synthetic", "split": "val", "seed": 4321, "images": 24}  # new: the data cache is per session
    for i in (0, 1):
        (tmp_path / f"r{i}").mkdir()
    configs = [write_config(tmp_path / f"r{i}", output=str(tmp_path / f"r{i}" / "run"), stages=["calibrate"],
                            model={"source": "reference", "input_size": 128},
                            data={"calibration": data, "validation": data},
                            calibrate={"images": 8, "parity_images": 4}) for i in (0, 1)]
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", RUN_ON_SIGNAL, str(c), str(c.parent / "ready"), str(go)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
             for c in configs]
    deadline = time.time() + 120
    while not all((c.parent / "ready").exists() for c in configs):
        assert time.time() < deadline and all(p.poll() is None for p in procs), [p.communicate() for p in procs]
        time.sleep(0.02)
    go.touch()
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-3000:] for _, err in results]
    cache = Path(os.environ["EDGEOPT_DATA_CACHE"])
    (folder,) = cache.glob(f"synthetic-val-seed{data['seed']}-n24")
    assert len(list((folder / "images" / "val").glob("*.jpg"))) == 24
    assert not list(cache.glob(".*.tmp-*")), "a temporary dataset was left behind"
