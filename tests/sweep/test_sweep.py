"""Sweeps: a grid over config keys runs every point through one shared cache (nothing twice, a re-run computes
nothing), writes sweep.json/.csv and an HTML report that renders in a real browser, picks by budget and packs the
bundle into an archive that verifies (and refuses tampering and unsafe members)."""

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
from rich.console import Console

from edgeopt.cli import main as cli_main
from edgeopt.core.archive import safe_extract
from edgeopt.errors import ConfigError
from edgeopt.sweep.pick import parse_pick, pick
from edgeopt.sweep.run import run_sweep
from edgeopt.sweep.spec import expand, read_sweep
from helpers import write_config

AXES = {"model.input_size": [256, 320], "quantize.method": ["minmax", "entropy"]}


@pytest.fixture(scope="module")
def sweep_file(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("sweep")
    base = write_config(tmp, benchmark={"warmup": 1, "runs": 50, "threads": 1})
    data = yaml.safe_load(base.read_text())
    data["sweep"] = {"axes": AXES, "output": str(tmp / "out")}
    path = tmp / "sweep.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def swept(sweep_file):
    section, base, source = read_sweep(sweep_file)
    points = expand(section, base, source)
    return points, run_sweep(points, list(section.axes), Path(section.output), Console(stderr=True))


def test_the_grid_runs_every_point_and_shares_the_work(swept):
    points, result = swept
    assert len(points) == 4 and len({p.id for p in points}) == 4
    rows = [r for r in result.rows if r["status"] != "reference"]
    assert len(rows) == 8 and all(r["status"] == "passed" for r in rows), [r["reason"] for r in rows]
    # 2 calibrations (one per size), 4 quantize plans, 2 fp32 exports (the method does not touch fp32), 4 int8
    computed = {}
    for stage in ("calibrate", "export"):
        computed[stage] = len(list((result.output / "cache" / stage).iterdir()))
    assert computed == {"calibrate": 2, "export": 6}
    sizes = {r["model.input_size"] for r in rows}
    assert sizes == {256, 320} and all(r["point_label"] for r in rows)


def test_ray_tasks_give_the_local_executors_figures(swept, sweep_file, tmp_path):
    pytest.importorskip("ray", reason="needs the ray extra")
    points, local = swept
    section, _, _ = read_sweep(sweep_file)
    some = points[:2]  # two input sizes, prepared in parallel on a local Ray (2 CPUs, loopback only)
    on_ray = run_sweep(some, list(section.axes), tmp_path / "ray", Console(stderr=True), executor="ray")
    figures = {(r["point"], r["target"], r["precision"]): r for r in local.rows if r["point"] in {p.id for p in some}}
    assert len(on_ray.rows) == len(figures) and (tmp_path / "ray" / "prepared").is_dir()
    for row in on_ray.rows:
        twin = figures[(row["point"], row["target"], row["precision"])]
        assert row["status"] == twin["status"] and row["map50_95"] == twin["map50_95"], (row, twin)
        assert row["latency_ms_median"] > 0 and row["cache_key" if "cache_key" in row else "target"] == \
            twin["cache_key" if "cache_key" in twin else "target"]
    # the driver only benchmarked: everything before came from the Ray tasks through the cache
    stages = {e.split("/")[0] for e in on_ray.computed_entries}
    assert stages == {"benchmark", "float-map"}, stages  # float-map: the reference's mAP, part of benchmarking


@pytest.mark.parametrize("method", ["random", "tpe"])
def test_a_budgeted_search_runs_points_of_the_grid_through_the_cache(swept, sweep_file, method):
    pytest.importorskip("optuna", reason="needs the search extra")
    from edgeopt.sweep.search import run_search, score
    from edgeopt.sweep.spec import Pick, Search

    points, grid = swept
    section, _, _ = read_sweep(sweep_file)
    section = section.model_copy(update={"search": Search(method=method, trials=5, seed=1),
                                         "select": Pick(device="local", max_drop=5.0)})
    found = run_search(points, section, Path(section.output), Console(stderr=True))
    ran = {r["point"] for r in found.rows}
    assert 1 <= len(ran) <= 4 and ran <= {p.id for p in points}
    assert found.computed == 0  # every point it chose was already in the shared cache
    refs = [r for r in grid.rows if r["status"] == "reference"]
    best = min(score([r for r in grid.rows if r["point"] == p], refs, section.select) for p in ran)
    chosen, _ = pick(found.rows, section.select)
    assert chosen["latency_ms_median"] == best


def test_a_search_needs_a_budget(swept, sweep_file):
    pytest.importorskip("optuna", reason="needs the search extra")
    from edgeopt.sweep.search import run_search
    from edgeopt.sweep.spec import Search

    points, _ = swept
    section, _, _ = read_sweep(sweep_file)
    with pytest.raises(ConfigError, match="optimizes the select: budget"):
        run_search(points, section.model_copy(update={"search": Search(method="tpe")}), Path(section.output),
                   Console(stderr=True))


def test_a_rerun_computes_nothing(swept, sweep_file):
    points, _ = swept
    section, _, _ = read_sweep(sweep_file)
    again = run_sweep(points, list(section.axes), Path(section.output), Console(stderr=True))
    assert again.computed == 0 and again.reused > 0


def test_results_files_hold_every_row_and_a_front(swept):
    _, result = swept
    data = json.loads((result.output / "sweep.json").read_text())
    assert len(data["rows"]) == len(result.rows) and data["pareto"]
    header = (result.output / "sweep.csv").read_text().splitlines()[0].split(",")
    assert header[:4] == ["point", "point_label", "model.input_size", "quantize.method"]


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium (scripts/setup.sh)")
def test_the_html_report_renders_in_a_headless_browser(swept, tmp_path):
    _, result = swept
    page = result.output / "report.html"
    cmd = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0"]
    dom = subprocess.run([*cmd, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert 'data-rendered="yes"' in dom.stdout, dom.stderr[-2000:]
    timed = [r for r in result.rows if r.get("latency_ms_median") is not None and r.get("map50_95") is not None]
    assert dom.stdout.count('class="mark"') == len(timed)  # one mark per measured row
    assert 'class="picked"' not in dom.stdout  # nothing picked yet: no ring
    assert dom.stdout.count("<tr>") == len(result.rows) + 1  # header + every row
    console_errors = [line for line in dom.stderr.splitlines() if "CONSOLE" in line and "ERROR" in line.upper()]
    assert not console_errors, console_errors
    shot = tmp_path / "report.png"
    subprocess.run([*cmd, f"--screenshot={shot}", "--window-size=1000,900", page.as_uri()], capture_output=True,
                   timeout=120)
    assert shot.stat().st_size > 10_000


def test_pick_by_budget_packs_a_bundle_that_verifies(swept, tmp_path, capsys, monkeypatch):
    _, result = swept
    row, why = pick(result.rows, parse_pick("device=local, max_drop=5"))
    fits = [r for r in result.rows if r["status"] == "passed"]
    assert row["latency_ms_median"] == min(r["latency_ms_median"] for r in fits if r["map50_95"] >= max(
        x["map50_95"] for x in result.rows if x["status"] == "reference") - 0.05)
    assert "fastest of" in why
    best, why = pick(result.rows, parse_pick("max_latency_ms=10000"))
    assert best["map50_95"] == max(r["map50_95"] for r in fits) and "most accurate" in why
    with pytest.raises(ConfigError, match="within 0.001 ms"):
        pick(result.rows, parse_pick("max_latency_ms=0.001"))
    with pytest.raises(ConfigError, match="cannot read"):
        parse_pick("devise=local")
    archive = tmp_path / "bundle.tar.gz"
    monkeypatch.setattr(sys, "argv", ["edgeopt", "bundle", row["artifact"], "--out", str(archive)])
    with pytest.raises(SystemExit) as code:
        cli_main()
    assert code.value.code in (0, None)
    folder = safe_extract(archive, tmp_path / "x")
    readme = (folder / "README.md").read_text()
    assert "run.py" in readme and f"{row['latency_ms_median']:.2f} ms" in readme
    assert json.loads((folder / "lineage.json").read_text())["rows"]
    monkeypatch.setattr(sys, "argv", ["edgeopt", "verify", str(archive)])
    with pytest.raises(SystemExit) as code:
        cli_main()
    assert code.value.code in (0, None)
    _retar(archive, folder, tamper=True)
    with pytest.raises(SystemExit) as code:
        cli_main()
    assert code.value.code == 1 and "differs from the manifest" in capsys.readouterr().err


def _retar(archive: Path, folder: Path, tamper: bool) -> None:
    manifest = json.loads((folder / "edgeopt.json").read_text())
    (folder / manifest["model_files"][0]).write_bytes(b"tampered")
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)


@pytest.mark.parametrize("member", ["../escape.txt", "/etc/evil", "link"])
def test_unsafe_archive_members_are_refused(tmp_path, member):
    archive = tmp_path / "bad.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo(member if member != "link" else "b/link")
        if member == "link":
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(info)
        else:
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(ConfigError, match="refusing the member"):
        safe_extract(archive, tmp_path / "dest")
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "dest" / "b" / "link").exists()


def test_a_bad_axis_value_names_the_point(tmp_path):
    base = write_config(tmp_path)
    data = yaml.safe_load(base.read_text())
    data["sweep"] = {"axes": {"benchmark.runs": [50, 3]}}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    section, data, source = read_sweep(path)
    with pytest.raises(ConfigError, match=r"sweep point \{'benchmark.runs': 3\}.*benchmark.runs"):
        expand(section, data, source)
    data2 = yaml.safe_load(base.read_text()) | {"sweep": {"axis": {}}}
    path.write_text(yaml.safe_dump(data2))
    with pytest.raises(ConfigError, match="axis") as info:
        read_sweep(path)
    assert "axes" in str(info.value.hint)


def test_a_zero_ratio_point_skips_pruning_only_when_nothing_else_prunes(tmp_path):
    """prune.ratio 0 is the unpruned model, unless dropped blocks (or overrides, a target) still prune it."""
    data = yaml.safe_load(write_config(tmp_path, stages=["calibrate", "quantize", "prune", "export"]).read_text())
    data["sweep"] = {"axes": {"prune.ratio": [0, 0.2], "prune.drop_blocks": [0, 2]}}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(data))
    stages = {(p.values["prune.ratio"], p.values["prune.drop_blocks"]): p.config.stages for p in expand(*read_sweep(path))}
    assert [key for key, s in stages.items() if "prune" not in s] == [(0, 0)]


def test_an_unknown_axis_key_is_named_with_a_suggestion(tmp_path):
    base = write_config(tmp_path)
    data = yaml.safe_load(base.read_text()) | {"sweep": {"axes": {"quantize.methd": ["minmax"]}}}
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="unknown key 'quantize.methd'") as info:
        expand(*read_sweep(path))
    assert "method" in str(info.value.hint)


def _hand_row(point, device, latency, map_, status="passed", **extra):
    return {"point": point, "point_label": point, "target": "t", "precision": point, "device": device,
            "status": status, "latency_ms_median": latency, "map50_95": map_, **extra}


def test_pareto_fronts_are_per_device_and_skip_emulated_and_throttled_rows():
    from edgeopt.report.results import pareto_front

    rows = [_hand_row("a", "pi", 10, 0.50), _hand_row("b", "pi", 20, 0.60), _hand_row("c", "pi", 25, 0.55),
            _hand_row("d", "pi", 5, 0.70, status="failed"), _hand_row("e", "pc", 30, 0.40),
            _hand_row("f", "emu", 1, 0.90, emulated=True), _hand_row("g", "pi", 4, 0.9, throttled=True)]
    front = {(r["point"], r["device"]) for r in pareto_front(rows)}
    # c is beaten by b on pi; e is on another device (not compared with pi's); d failed; f emulated; g throttled
    assert front == {("a", "pi"), ("b", "pi"), ("e", "pc")}


def test_pick_rules_on_hand_made_rows():
    rows = [_hand_row("ref", "pi", 50, 0.60, status="reference"), _hand_row("fast", "pi", 5, 0.585),
            _hand_row("faster", "pi", 4, 0.57), _hand_row("other", "pc", 1, 0.60), _hand_row("bad", "pi", 1, 0.6,
                                                                                          status="failed")]
    row, why = pick(rows, parse_pick("device=pi, max_drop=2"))
    assert row["point"] == "fast" and "1.50 pt" in why  # faster loses 3 pt; other is another device; bad failed
    row, _ = pick(rows, parse_pick("device=pi, max_latency_ms=4.5"))
    assert row["point"] == "faster"
    emulated = [{**r, "emulated": True} for r in rows]
    with pytest.raises(ConfigError, match="emulated"):
        pick(emulated, parse_pick("device=pi, max_drop=2"))


def test_a_failing_point_is_a_failed_row_and_the_sweep_goes_on(sweep_file, tmp_path):
    section, base, source = read_sweep(sweep_file)
    section = section.model_copy(update={"axes": {"data.validation.path": ["synthetic", str(tmp_path / "nowhere")]}})
    points = expand(section, base, source)
    result = run_sweep(points, list(section.axes), tmp_path / "out", Console(stderr=True))
    failed = [r for r in result.rows if r["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["point"] == points[1].id and "nowhere" in failed[0]["reason"]
    assert any(r["status"] == "passed" and r["point"] == points[0].id for r in result.rows)
    assert json.loads((tmp_path / "out" / "sweep.json").read_text())["rows"] == json.loads(json.dumps(result.rows))


def test_an_unexpected_error_fails_its_point_with_the_traceback_kept(sweep_file, tmp_path, monkeypatch):
    import edgeopt.sweep.run as sweep_run

    section, base, source = read_sweep(sweep_file)
    points = expand(section, base, source)

    def broken(config, **kwargs):
        raise TypeError("<lambda>() takes 2 positional arguments but 3 were given")

    monkeypatch.setattr(sweep_run, "run_pipeline", broken)
    result = run_sweep(points, list(section.axes), tmp_path / "out", Console(stderr=True))
    assert [r["status"] for r in result.rows] == ["failed"] * len(points)
    for row, point in zip(result.rows, points):
        assert row["reason"].startswith("unexpected error: TypeError: <lambda>() takes 2"), row
        assert "Traceback" in (tmp_path / "out" / "points" / f"{point.id}.error.log").read_text()
    assert json.loads((tmp_path / "out" / "sweep.json").read_text())["rows"] == json.loads(json.dumps(result.rows))


def test_a_killed_sweep_resumes_where_it_stopped(swept, sweep_file, tmp_path, monkeypatch):
    import edgeopt.sweep.run as sweep_run

    points, _ = swept
    section, _, _ = read_sweep(sweep_file)
    output = Path(section.output)  # the finished sweep's cache: copy it, then lose the last two points' work
    shutil.copytree(output / "cache", tmp_path / "out" / "cache")
    original = sweep_run.run_pipeline
    calls = []

    def killed_on_the_third(config, **kwargs):
        calls.append(config.output)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(config, **kwargs)

    monkeypatch.setattr(sweep_run, "run_pipeline", killed_on_the_third)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(points, list(section.axes), tmp_path / "out", Console(stderr=True))
    done = json.loads((tmp_path / "out" / "sweep.json").read_text())["rows"]
    assert {r["point"] for r in done} == {points[0].id, points[1].id}  # what finished is on disk
    monkeypatch.setattr(sweep_run, "run_pipeline", original)
    resumed = run_sweep(points, list(section.axes), tmp_path / "out", Console(stderr=True))
    assert resumed.computed == 0 and len({r["point"] for r in resumed.rows}) == 4


def test_the_pick_is_said_and_ringed_in_the_report(swept, sweep_file, tmp_path, monkeypatch, capsys):
    section, _, _ = read_sweep(sweep_file)
    monkeypatch.setattr(sys, "argv", ["edgeopt", "sweep", str(sweep_file), "--pick", "device=local, max_drop=5"])
    with pytest.raises(SystemExit) as code:
        cli_main()
    assert code.value.code in (0, None)
    out = capsys.readouterr().out
    assert "picked" in out and "cache: " in out and "0 computed" in out
    data = json.loads((Path(section.output) / "sweep.json").read_text())
    assert data["picked"]["why"].startswith("fastest of")
    assert list(Path(section.output).glob("picked-*.tar.gz"))
    if shutil.which("chromium"):
        page = (Path(section.output) / "report.html").as_uri()
        dom = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", page],
                             capture_output=True, text=True, timeout=120).stdout
        assert 'class="picked"' in dom and "Ship: " in dom
