"""The default config runs end to end through the CLI, exactly as the README's main command does."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


def test_default_config_end_to_end(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "edgeopt.cli", "run", "configs/default.yaml", "--out",
                           str(tmp_path / "run")], capture_output=True, text=True, cwd=ROOT, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "edgeopt run 'default'" in proc.stdout  # the results table
    records = json.loads((tmp_path / "run" / "results.json").read_text())["records"]
    ref = next(r for r in records if r["target"] == "torch")
    assert ref["map50_95"] > 0.6
    for r in records[1:]:
        assert r["status"] in ("passed", "skipped"), r
        if r["status"] == "passed":
            assert r["map50_95_drop"] < 0.015, r  # int8 included: at most 1.5 mAP points lost
            assert Path(r["artifact"], "run.py").is_file()
