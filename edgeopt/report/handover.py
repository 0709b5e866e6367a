"""What goes into a bundle archive beside the bundle: a README for the device (install line, how to run, the
figures measured for it) and the lineage (the run's config hash, versions, the rows that judged it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def artifact_rows(bundle: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The run info and the result rows of ``bundle`` when it sits in a run's ``artifacts/`` (else empty)."""
    results = bundle.resolve().parents[1] / "results.json"
    try:
        data = json.loads(results.read_text())
    except (OSError, ValueError):
        return {}, []
    rows = [r for r in data.get("records", []) if r.get("artifact") and Path(r["artifact"]).resolve() == bundle.resolve()]
    return data.get("run", {}), rows


def _figures(rows: list[dict[str, Any]]) -> list[str]:
    lines = []
    for r in rows:
        latency = f"{r['latency_ms_median']:.2f} ms median" if r.get("latency_ms_median") is not None else "not timed"
        emulated = " (emulated CPU: not a speed figure)" if r.get("emulated") else ""
        accuracy = f", mAP50-95 {r['map50_95']:.4f}" if r.get("map50_95") is not None else ""
        lines.append(f"- {r.get('device', '?')}, {r.get('threads', '?')} thread(s): {latency}{emulated}{accuracy}")
    return lines


def readme(manifest: dict[str, Any], rows: list[dict[str, Any]], why: str | None = None) -> str:
    """The device-side README of a bundle archive."""
    runtime = manifest.get("target", "?")
    lines = [f"# {manifest.get('target')} {manifest.get('precision')} detector bundle", "",
             f"Input {manifest.get('input', {}).get('size')} px; classes: {', '.join(manifest.get('class_names', []))}.",
             "", "## Install on the device", "",
             f"    python3 -m venv venv && venv/bin/pip install numpy pillow  # plus the {runtime} runtime",
             "    (or `edgeopt device setup NAME` from the machine that made it)", "", "## Run", "",
             "    venv/bin/python run.py image.jpg            # detections",
             "    venv/bin/python run.py --bench --threads 4  # latency and peak memory",
             "", "Every file is checked against the sha256 in edgeopt.json when run.py loads "
             "(`edgeopt verify` checks the folder or this archive).", ""]
    if why:
        lines += ["## Why this bundle", "", why, ""]
    if rows:
        lines += ["## Measured", "", *_figures(rows), ""]
    return "\n".join(lines)


def lineage(manifest: dict[str, Any], run_info: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Where the bundle came from: its manifest's lineage, the run's versions and devices, its result rows."""
    return {"manifest_lineage": manifest.get("lineage"), "run": {k: run_info.get(k) for k in
                                                                ("name", "config_hash", "versions", "devices")},
            "rows": rows}
