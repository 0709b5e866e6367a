"""The ``edgeopt`` command line: a thin typer app over the Python API.

Heavy modules (torch, runtimes) are imported inside the commands so ``edgeopt --help`` stays fast. User
mistakes (``EdgeoptError``) are printed in a line or two without a traceback.
"""

from __future__ import annotations

import errno
import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from edgeopt.core.progress import stream_console
from edgeopt.errors import ConfigError, EdgeoptError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Compress, export, verify and benchmark object detectors for edge devices.")
data_app = typer.Typer(no_args_is_help=True, help="Datasets: generate the synthetic reference dataset.")
app.add_typer(data_app, name="data")
device_app = typer.Typer(no_args_is_help=True, help="Devices: check one, or install the runtimes on it.")
app.add_typer(device_app, name="device")
console = stream_console()
err_console = stream_console(stderr=True)


def _print_version(value: bool) -> None:
    if value:
        from edgeopt.core.version import VERSION

        console.print(f"edgeopt {VERSION}", highlight=False)
        raise typer.Exit()


@app.callback()
def _options(version: Annotated[bool, typer.Option(
        "--version", callback=_print_version, is_eager=True, help="Print edgeopt's version and exit.")] = False,
) -> None:
    """Compress, export, verify and benchmark object detectors for edge devices."""


@data_app.command("synth")
def data_synth(
    out: Annotated[Path, typer.Option(help="Output directory (YOLO layout + data.yaml).")],
    train: Annotated[int, typer.Option(help="Number of training images.")] = 4000,
    val: Annotated[int, typer.Option(help="Number of validation images.")] = 500,
    seed: Annotated[int, typer.Option(min=0, help="Random seed; the same seed gives a byte-identical dataset.")] = 0,
    workers: Annotated[int, typer.Option(help="Worker processes (does not change the output).")] = 2,
    difficulty: Annotated[str, typer.Option(help="hard (clutter, small objects, degradations) or easy (1-4 large "
                                                 "objects on a plain background, for models trained in minutes).")]
    = "hard",
    force: Annotated[bool, typer.Option("--force", help="Write into a non-empty OUT (files may be replaced).")]
    = False,
) -> None:
    """Generate the synthetic detection dataset (6 shape classes, clutter, occlusion, blur, JPEG)."""
    from edgeopt.data.synthetic import DIFFICULTIES, generate

    if train < 0 or val < 0 or train + val == 0:
        raise ConfigError(f"--train and --val must be >= 0 and not both 0 (got {train}, {val})")
    if difficulty not in DIFFICULTIES:
        raise ConfigError(f"--difficulty must be one of {list(DIFFICULTIES)}, got {difficulty!r}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise ConfigError(f"{out} exists and is not empty; a dataset there would be overwritten",
                          hint="choose another --out, or pass --force")
    path = generate(out, train, val, seed=seed, workers=workers, progress=True, difficulty=difficulty)
    console.print(f"wrote {train} train + {val} val images; dataset file: {path}")


def _device_runtimes() -> dict[str, tuple[str, ...]]:
    """Every registered target's runtime modules on a device (target name -> modules, any one suffices)."""
    from edgeopt.core.registry import TARGETS

    return {name: TARGETS.load(name).device_modules for name in TARGETS.names}


@device_app.command("check")
def device_check(
    name: Annotated[str, typer.Argument(help="Device profile: a name in devices/ or a path to a profile YAML.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print the description as JSON.")] = False,
) -> None:
    """Connect and report what makes a figure comparable (CPU, flags, governor, temperature, throttling, memory,
    OS, Python) and which runtimes the bundle runner finds there."""
    from edgeopt.devices import load_device

    info = load_device(name).describe(_device_runtimes())
    if json_out:
        print(json.dumps(info, indent=2))
        return
    table = Table(title=f"device {info['name']}" + (" (emulated: latency is not a speed claim)"
                                                     if info.get("emulated") else ""), show_header=False)
    for key, value in info.items():
        if key != "runtimes":
            table.add_row(key, escape(json.dumps(value) if isinstance(value, (dict, list)) else str(value)))
    for target, found in info.get("runtimes", {}).items():
        shown = f"{found.get('module')} {found.get('version')}" if found.get("ok") else \
            f"[red]missing[/] ({escape(str(found.get('error')))})"
        table.add_row(f"runtime {target}", shown)
    console.print(table)


@device_app.command("setup")
def device_setup(
    name: Annotated[str, typer.Argument(help="Device profile: a name in devices/ or a path to a profile YAML.")],
    targets: Annotated[str | None, typer.Option(
        help="Comma-separated targets whose runtimes to install (default: every target whose runtime does not "
             "need torch on the device; name one that does to add it and torch, ~430 MB on aarch64).")] = None,
    wheels: Annotated[Path, typer.Option(help="Wheelhouse folder here (per device platform).")]
    = Path.home() / ".cache" / "edgeopt" / "wheels",
) -> None:
    """Download the runtimes' wheels here for the device's platform, push them, and install them into a venv
    in the device's work_dir (no network needed on the device); the venv is then used for every command."""
    from edgeopt.core.registry import TARGETS
    from edgeopt.devices import load_device
    from edgeopt.devices.setup import setup_device

    names = [t.strip() for t in targets.split(",") if t.strip()] if targets is not None else \
        [t for t in TARGETS.names if "torch" not in TARGETS.load(t).device_packages]
    unknown = [t for t in names if t not in TARGETS]
    if unknown or not names:
        raise ConfigError(f"unknown target(s) {', '.join(unknown) or '(none given)'}",
                          hint=f"targets: {', '.join(TARGETS.names)}")
    device = load_device(name)
    if not hasattr(device, "agent"):
        raise ConfigError(f"device '{device.name}' is this machine: install edgeopt's extras here instead",
                          hint="pip install 'edgeopt[all]'")
    packages = list(dict.fromkeys(p for t in names for p in TARGETS.load(t).device_packages))
    no_deps = {p for t in names for p in TARGETS.load(t).device_no_deps}
    with err_console.status(f"device setup: wheels for {', '.join(packages)} -> {device.name}"):
        record = setup_device(device, packages, wheels, no_deps)
    for note in record["notes"]:
        err_console.print(f"[yellow]note:[/] {escape(note)}")
    console.print(f"{device.name}: installed {', '.join(record['requirements'].values())} into {record['python']}")


@app.command("train")
def train_cmd(
    data: Annotated[Path, typer.Option(help="YOLO dataset: data.yaml or its directory.")],
    out: Annotated[Path, typer.Option(help="Directory for last.pt (resumable) and best.pt.")] = Path("runs/train"),
    epochs: Annotated[int, typer.Option(min=1)] = 20,
    batch: Annotated[int, typer.Option(min=1)] = 32,
    lr: Annotated[float, typer.Option(help="Peak AdamW learning rate.")] = 2e-3,
    input_size: Annotated[int, typer.Option(help="Square input size (multiple of 32).")] = 320,
    val_every: Annotated[int, typer.Option(help="Evaluate mAP every N epochs.")] = 2,
    val_images: Annotated[int, typer.Option(help="Validation images used during training.")] = 200,
    seed: int = 0,
    resume: Annotated[bool, typer.Option(help="Continue from OUT/last.pt.")] = False,
    bf16: Annotated[bool, typer.Option(help="bfloat16 autocast where the CPU computes bf16 natively "
                                                 "(emulated bf16 is several times slower: off there).")] = True,
) -> None:
    """Train the reference detector on a YOLO-format dataset (CPU)."""
    if input_size % 32:
        raise ConfigError(f"--input-size must be a multiple of 32, got {input_size}")
    from edgeopt.training.train import TrainConfig, train

    result = train(TrainConfig(data=data, out=out, epochs=epochs, batch=batch, lr=lr, input_size=input_size,
                               val_every=val_every, val_images=val_images, seed=seed, resume=resume, bf16=bf16))
    console.print(f"best mAP50-95 {result['best_map50_95']:.4f}; weights: {out / 'best.pt'}")


@app.command("eval")
def eval_cmd(
    data: Annotated[Path, typer.Option(help="YOLO dataset (data.yaml or directory) or COCO json.")],
    model: Annotated[str, typer.Option(help="'reference' (the embedded weights) or a weights file.")] = "reference",
    split: Annotated[str, typer.Option(help="Dataset split for YOLO datasets.")] = "val",
    images: Annotated[Path | None, typer.Option(help="Image directory for a COCO json.")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Evaluate the first N images only.")] = None,
    backend: Annotated[str, typer.Option(help="faster (faster-coco-eval) or pycocotools.")] = "faster",
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the figures as JSON here.")] = None,
) -> None:
    """COCO mAP50-95 / mAP50 / per-class AP of a detector on a labelled dataset."""
    from edgeopt.data.load import read_dataset
    from edgeopt.eval.coco_map import coco_map
    from edgeopt.eval.predict import predict
    from edgeopt.models.detector import torch_infer
    from edgeopt.models.sources.reference.checkpoint import load_detector

    if backend not in ("faster", "pycocotools"):
        raise ConfigError(f"--backend must be 'faster' or 'pycocotools', got {backend!r}")
    detector = load_detector(None if model == "reference" else Path(model))
    dataset = read_dataset(data, split=split, images=images).subset(limit)
    if not dataset.labelled:
        raise EdgeoptError(f"the dataset {dataset.source} has no labels", hint="mAP needs labelled images")
    size = detector.config.input_size
    detections = predict(torch_infer(detector), dataset, size, batch=16)
    metrics = coco_map(dataset, detections, backend=backend)
    table = Table(title=f"{model} on {dataset.source} ({len(dataset)} images)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("mAP50-95", f"{metrics['map50_95']:.4f}")
    table.add_row("mAP50", f"{metrics['map50']:.4f}")
    for name, ap in metrics["per_class"].items():
        table.add_row(f"AP50-95 {name}", f"{ap:.4f}")
    console.print(table)
    if json_out:
        json_out.write_text(json.dumps({"model": model, "data": dataset.source, "images": len(dataset), **metrics},
                                       indent=2))


@app.command("validate")
def validate_cmd(
    config: Annotated[Path, typer.Argument(help="Pipeline config YAML.")],
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a key: a.b=value (repeatable).")] = None,
) -> None:
    """Check a config without running it."""
    from edgeopt.config.load import load_config

    from edgeopt.devices import load_device

    cfg = load_config(config, set_ or [])
    for spec in cfg.devices:
        load_device(spec)  # a missing or invalid device profile fails here, as it would in `run`
    targets = ", ".join(f"{t.name} ({'/'.join(t.precisions)})" for t in cfg.targets)
    console.print(f"{config}: valid; stages {' -> '.join(cfg.stages)}; targets {targets}")


@app.command("verify")
def verify_cmd(bundle: Annotated[Path, typer.Argument(
        help="A bundle directory (holding edgeopt.json) or a bundle archive (.tar.gz).")]) -> None:
    """Check every file of a bundle against the sha256 in its manifest; exit 1 naming the files that differ."""
    import tempfile

    from edgeopt.core.archive import safe_extract
    from edgeopt.core.manifest import MANIFEST, verify_bundle

    if bundle.is_file():  # an archive: extracted safely into a temporary folder and checked there
        with tempfile.TemporaryDirectory() as tmp:
            folder = safe_extract(bundle, Path(tmp))
            if not (folder / MANIFEST).is_file():
                raise ConfigError(f"{bundle} holds no {MANIFEST}: not a bundle archive")
            changed = verify_bundle(folder)
        if changed:
            err_console.print(f"[bold red]differs from the manifest:[/] {', '.join(changed)}")
            raise typer.Exit(1)
        console.print(f"{bundle}: every file matches its sha256 in {MANIFEST}")
        return
    if not (bundle / MANIFEST).is_file():
        raise ConfigError(f"{bundle} is not a bundle (no {MANIFEST})", hint="give a directory under artifacts/")
    try:
        changed = verify_bundle(bundle)
    except (ValueError, TypeError, KeyError) as exc:
        raise ConfigError(f"{bundle / MANIFEST} is not a valid manifest: {exc}") from None
    if changed:
        err_console.print(f"[bold red]differs from the manifest:[/] {', '.join(changed)}")
        raise typer.Exit(1)
    console.print(f"{bundle}: every file matches its sha256 in {MANIFEST}")


@app.command("profile")
def profile_cmd(
    bundles: Annotated[list[Path], typer.Argument(
        help="One bundle (RUN_DIR/artifacts/NAME), or two of one target (e.g. fp32 then int8) to compare.")],
    device: Annotated[str, typer.Option(help="Device profile: a name in devices/ or a path to a profile YAML.")]
    = "local",
    threads: Annotated[int, typer.Option(min=1)] = 1,
    warmup: Annotated[int, typer.Option(min=0)] = 10,
    runs: Annotated[int, typer.Option(min=1, help="Profiled (and timed) inferences.")] = 50,
    top: Annotated[int, typer.Option(min=1, help="Operators shown per bundle.")] = 15,
    json_out: Annotated[bool, typer.Option("--json", help="Print the profiles as JSON.")] = False,
) -> None:
    """Per-operator latency from the runtime's own profiler, run by the bundle's run.py on the device; with two
    bundles, where the second's time goes against the first's (layers kept float, quantize/dequantize, reorders)."""
    from edgeopt.core.manifest import MANIFEST
    from edgeopt.devices import load_device
    from edgeopt.report.profile import Profile, comparison_table, findings, profile_table

    if len(bundles) > 2:
        raise ConfigError("give one bundle, or two to compare", hint="edgeopt profile FP32_BUNDLE INT8_BUNDLE")
    for bundle in bundles:
        if not (bundle / MANIFEST).is_file():
            raise ConfigError(f"{bundle} is not a bundle (no {MANIFEST})", hint="give a directory under artifacts/")
    target = load_device(device)
    profiles = []
    for bundle in bundles:
        manifest = json.loads((bundle / MANIFEST).read_text())
        label = f"{manifest.get('target', '?')} {manifest.get('precision', '?')}"
        target.push(bundle)
        changed = target.verify(bundle)
        if changed:
            raise ConfigError(f"{bundle} differs from its manifest on {target.name}: {', '.join(changed)}")
        with err_console.status(f"profiling {label} on {target.name}"):
            figures = target.bench(bundle, threads, warmup, runs, profile=True)
        profiles.append(Profile.from_figures(label, figures))
    if json_out:
        print(json.dumps([p.summary(top) for p in profiles], indent=2))
        return
    for profile in profiles:
        if profile.unavailable:
            console.print(f"{profile.label}: no per-operator profile: {escape(profile.unavailable)} "
                          f"(end-to-end median {profile.latency_ms:.2f} ms)")
        else:
            console.print(profile_table(profile, top))
    if len(profiles) == 2 and all(p.ops for p in profiles):
        console.print(comparison_table(*profiles))
        for line in findings(*profiles):
            console.print(f"- {escape(line)}")


@app.command("bundle")
def bundle_cmd(
    bundle: Annotated[Path, typer.Argument(help="A shipped bundle: RUN_DIR/artifacts/NAME.")],
    out: Annotated[Path, typer.Option(help="The archive to write (.tar.gz).")],
) -> None:
    """Pack a bundle to hand over: its files, manifest and checksums, run.py, a README for the device (install,
    run, the latency and mAP measured) and its lineage; `edgeopt verify` checks the archive."""
    write_bundle_archive(bundle, out)
    console.print(f"wrote {out}")


def write_bundle_archive(bundle: Path, out: Path, why: str | None = None) -> Path:
    """The archive of ``bundle`` with README.md and lineage.json (refused unless the bundle verifies)."""
    from edgeopt.core.archive import pack
    from edgeopt.core.manifest import MANIFEST, verify_bundle
    from edgeopt.report.handover import artifact_rows, lineage, readme

    if not (bundle / MANIFEST).is_file():
        raise ConfigError(f"{bundle} is not a bundle (no {MANIFEST})", hint="give a directory under artifacts/")
    changed = verify_bundle(bundle)
    if changed:
        raise ConfigError(f"{bundle} differs from its manifest ({', '.join(changed)}): not packed")
    manifest = json.loads((bundle / MANIFEST).read_text())
    run_info, rows = artifact_rows(bundle)
    extra = {"README.md": readme(manifest, rows, why).encode(),
             "lineage.json": json.dumps(lineage(manifest, run_info, rows), indent=2, default=str).encode()}
    out.parent.mkdir(parents=True, exist_ok=True)
    return pack(bundle, out, extra)


@app.command("sweep")
def sweep_cmd(
    file: Annotated[Path, typer.Argument(help="Sweep file: a config with a 'sweep:' section (configs/sweep.yaml).")],
    pick_: Annotated[str | None, typer.Option("--pick", help='Choose and pack a bundle, e.g. "device=local, '
                                                             'max_drop=1.0" or "max_latency_ms=20".')] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List the points and stop.")] = False,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Recompute every stage.")] = False,
    executor: Annotated[str | None, typer.Option(help="local or ray (overrides sweep.executor).")] = None,
) -> None:
    """Run every point of a grid over config keys through one shared cache; write sweep.json/.csv, the HTML
    report with per-device Pareto fronts, and (with --pick or select:) the chosen bundle's archive."""
    from edgeopt.sweep.pick import parse_pick, pick
    from edgeopt.sweep.run import finished_points, run_sweep
    from edgeopt.sweep.spec import expand, read_sweep

    section, base, source = read_sweep(file)
    points = expand(section, base, source)
    output = Path(section.output)
    console.print(f"{len(points)} point(s) over {', '.join(section.axes)}; {finished_points(points, output)} "
                  f"finished by an earlier sweep in {output} (their work comes from the cache)")
    for point in points:
        console.print(f"  {point.id}  {escape(point.label)}")
    if dry_run:
        return
    select = parse_pick(pick_) if pick_ else section.select
    executor = executor or section.executor
    if executor not in ("local", "ray"):
        raise ConfigError(f"--executor must be local or ray, got {executor!r}")
    if executor == "ray" and no_cache:
        raise ConfigError("--no-cache cannot be combined with the ray executor (its tasks hand work over through "
                          "the cache)", hint="delete the sweep's cache folder instead")
    if section.search.method != "grid":
        if executor == "ray":
            raise ConfigError("a random or TPE search runs its trials one after another", hint="use executor: local")
        from edgeopt.sweep.search import run_search

        result = run_search(points, section, output, err_console, use_cache=not no_cache)
    else:
        result = run_sweep(points, list(section.axes), output, err_console, use_cache=not no_cache,
                           executor=executor, address=section.address)
    console.print(f"sweep: {output / 'sweep.json'}  report: {output / 'report.html'}  "
                  f"cache: {result.reused} reused, {result.computed} computed")
    if select is not None:
        from edgeopt.sweep.run import write_sweep

        row, why = pick(result.rows, select)
        write_sweep(result, (row, why))  # the report says what to ship
        archive = write_bundle_archive(Path(row["artifact"]), output / f"picked-{row['target']}-{row['precision']}-"
                                                                          f"{row['point']}.tar.gz", why)
        console.print(f"picked {row['target']} {row['precision']} at {escape(row['point_label'])} on "
                      f"{row.get('device')}: {escape(why)}\nbundle: {archive}")
    failed = [r for r in result.rows if r["status"] in ("failed", "unverified")]
    if failed:
        err_console.print(f"[bold red]{len(failed)} row(s) failed or unverified[/] (see {output / 'sweep.json'})")


@app.command("schema")
def schema_cmd() -> None:
    """Print the JSON schema of the pipeline config."""
    from edgeopt.config.load import json_schema

    print(json.dumps(json_schema(), indent=2))


def _installed_targets() -> list[str]:
    from edgeopt.core.registry import TARGETS
    from edgeopt.errors import DependencyError
    from edgeopt.targets import get_target

    names = []
    for name in TARGETS.names:
        try:
            get_target(name).check_available()
        except DependencyError:
            continue
        names.append(name)
    return names


def _ship(records: list[dict], devices: list[str]) -> tuple[dict, str] | None:
    """The row to ship: the fastest passed one on the first device (every passed row is within its precision's
    mAP budget), and why."""
    passed = [r for r in records if r["status"] == "passed" and r.get("device") == devices[0]
              and r.get("latency_ms_median") is not None and r.get("artifact")]
    if not passed:
        return None
    best = min(passed, key=lambda r: r["latency_ms_median"])
    drop = f", mAP50-95 drop {best['map50_95_drop'] * 100:+.2f} pt against the model" \
        if best.get("map50_95_drop") is not None else ""
    return best, (f"fastest of {len(passed)} passed rows on {devices[0]}: {best['latency_ms_median']:.2f} ms"
                  f"{drop} (every passed row is within its precision's mAP budget)")


@app.command("compress")
def compress_cmd(
    model: Annotated[str, typer.Argument(help="The trained detector: a .pt checkpoint (see README, 'Bring your own "
                                              "detector'), an .onnx file, or 'reference'.")],
    data: Annotated[str, typer.Option(help="Its dataset: a YOLO data.yaml (train split calibrates, val split "
                                           "validates), or 'synthetic'.")],
    targets: Annotated[str | None, typer.Option(help="Comma-separated targets (default: every installed one).")]
    = None,
    device: Annotated[list[str] | None, typer.Option(help="Device profile(s) to benchmark on (default: local).")]
    = None,
    max_drop: Annotated[float | None, typer.Option(min=0.0, help="int8 accuracy budget in mAP50-95 points: int8 "
                                                                   "is searched to it and judged by it.")] = None,
    prune: Annotated[float | None, typer.Option(min=0.0, max=0.9, help="Prune to this MACs reduction (e.g. 0.3), "
                                                                        "recovered by fine-tuning on --data.")] = None,
    input_size: Annotated[int | None, typer.Option(help="Square input size (default: the checkpoint's).")] = None,
    out: Annotated[Path | None, typer.Option(help="Run directory (default: runs/<model name>).")] = None,
    trust_pickle: Annotated[bool, typer.Option("--trust-pickle", help="Allow a full-pickle checkpoint (some "
                                                                       "third-party .pt files): it runs code.")] = False,
) -> None:
    """Compress a trained detector in one command: writes the full config (RUN_DIR/config.yaml, to edit and re-run
    with `edgeopt run`), runs it, and names the bundle to ship."""
    import yaml

    from edgeopt.config.load import validate_config
    from edgeopt.config.quick import compress_config
    from edgeopt.core.cache import atomic_write
    from edgeopt.pipeline import run_pipeline
    from edgeopt.report.results import results_table

    names = [t.strip() for t in targets.split(",") if t.strip()] if targets else _installed_targets()
    output = (out or Path("runs") / (Path(model).stem if model != "reference" else "reference")).resolve()
    # files by absolute path: config.yaml re-runs from any directory
    model, data = (str(Path(p).resolve()) if Path(p).exists() else p for p in (model, data))
    config = compress_config(model, data, names, device or ["local"], str(output), max_drop, prune or None,
                             input_size, trust_pickle)
    path = output / "config.yaml"
    text = "# written by edgeopt compress; re-run with: edgeopt run " + str(path) + "\n" + \
        yaml.safe_dump(config, sort_keys=False)
    cfg = validate_config(config, str(path))  # a bad option is named before anything is written
    output.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: tmp.write_text(text))
    try:
        result = run_pipeline(cfg, console=err_console)
    except KeyboardInterrupt:  # typer would turn it into a silent exit 130
        err_console.print(f"interrupted; finished stages are cached: `edgeopt run {path}` resumes from them")
        raise typer.Exit(130) from None
    console.print(results_table(result.records, f"edgeopt compress '{cfg.name}' on {', '.join(cfg.devices)}"))
    console.print(f"config: {path}  results: {result.output / 'results.json'}  report: {result.output / 'report.md'}"
                  f"  cache: {len(result.cache_hits)} reused, {len(result.cache_misses)} computed")
    shipped = _ship(result.records, cfg.devices)
    if shipped is None:
        err_console.print("[bold red]no passed row to ship[/]: see the reasons above (edgeopt run "
                          f"{path} re-runs from the cache after an edit)")
        raise typer.Exit(1)
    row, why = shipped
    console.print(f"[bold green]ship[/] {row['artifact']}: {escape(why)}")
    console.print(f"  hand it over with: edgeopt bundle {row['artifact']} --out {row['target']}-{row['precision']}.tar.gz")


@app.command("init")
def init_cmd(
    out: Annotated[Path, typer.Argument(help="The config file to write.")] = Path("edgeopt.yaml"),
    model: Annotated[str, typer.Option(help="The detector (see `edgeopt compress --help`).")] = "reference",
    data: Annotated[str, typer.Option(help="Its dataset (a YOLO data.yaml or 'synthetic').")] = "synthetic",
    force: Annotated[bool, typer.Option("--force", help="Replace an existing file.")] = False,
) -> None:
    """Write a commented config with every key at its default, to edit and run with `edgeopt run`."""
    import yaml

    from edgeopt.config.load import validate_config
    from edgeopt.config.quick import template
    from edgeopt.core.cache import atomic_write

    if out.exists() and not force:
        raise ConfigError(f"{out} exists", hint="choose another path or add --force")
    text = template(model, data)
    validate_config(yaml.safe_load(text), str(out))  # what is written validates
    atomic_write(out, lambda tmp: tmp.write_text(text))
    console.print(f"wrote {out}: edit it, then `edgeopt validate {out}` and `edgeopt run {out}`")


@app.command("doctor")
def doctor_cmd(json_out: Annotated[bool, typer.Option("--json", help="Print the findings as JSON.")] = False) -> None:
    """What is installed: each target's runtime and each model source's package (or the extra to install), Python
    and torch, the CPU features that matter for int8, and the project's other environments (.venv-*)."""
    import platform
    from importlib.metadata import PackageNotFoundError, version
    from importlib.util import find_spec

    from edgeopt.core.registry import SOURCES, TARGETS
    from edgeopt.core.version import VERSION
    from edgeopt.devices import agent
    from edgeopt.errors import DependencyError
    from edgeopt.targets import get_target

    described = agent.describe([])  # its cpu_flags are already the int8-relevant ones (agent.INT8_FLAGS)
    rows: dict[str, str] = {"edgeopt": VERSION, "python": platform.python_version(), "cpu": str(described["cpu"]),
                            "int8 features": ", ".join(described["cpu_flags"]) or
                            "none of " + ", ".join(agent.INT8_FLAGS)}
    for package in ("torch", "torch-pruning", "ray", "optuna", "pycocotools", "faster-coco-eval"):
        try:
            rows[package] = version(package)
        except PackageNotFoundError:
            rows[package] = "missing"
    for name in TARGETS.names:
        target = get_target(name)
        try:
            target.check_available()
            rows[f"target {name}"] = ", ".join(f"{k} {v}" for k, v in target.versions().items())
        except DependencyError as exc:
            rows[f"target {name}"] = f"missing: {exc.message}"
    for entry in (SOURCES.entry(name) for name in SOURCES.names):
        if entry.extra:  # a source's extra installs the package of the same name
            rows[f"model source {entry.name}"] = "installed" if find_spec(entry.extra) else \
                f"missing: pip install 'edgeopt[{entry.extra}]' (see README: some need their own environment)"
    for python in sorted(Path(".").glob(".venv-*/bin/python")):  # environments set up beside the core one
        rows[f"environment {python.parent.parent}"] = "present"
    if json_out:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title="edgeopt doctor", show_header=False)
    for key, value in rows.items():
        table.add_row(key, escape(value))
    console.print(table)


@app.command("run")
def run_cmd(
    config: Annotated[Path, typer.Argument(help="Pipeline config YAML.")],
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a key: a.b=value (repeatable).")] = None,
    out: Annotated[Path | None, typer.Option(help="Run directory (overrides 'output').")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Recompute every stage.")] = False,
    device: Annotated[list[str] | None, typer.Option(
        "--device", help="Benchmark on this device profile (devices/NAME.yaml or a path; repeatable; "
                         "overrides 'device').")] = None,
) -> None:
    """Run a pipeline: calibrate -> quantize -> export (+ parity) -> benchmark -> report."""
    from edgeopt.config.load import load_config
    from edgeopt.pipeline import run_pipeline
    from edgeopt.report.results import results_table

    overrides = list(set_ or []) + ([f"output={out}"] if out else [])
    overrides += [f"device={json.dumps(device)}"] if device else []
    cfg = load_config(config, overrides)
    try:
        result = run_pipeline(cfg, use_cache=not no_cache, console=err_console)
    except KeyboardInterrupt:  # typer would turn it into a silent exit 130
        err_console.print("interrupted; finished stages are cached and the next run resumes from them")
        raise typer.Exit(130) from None
    console.print(results_table(result.records, f"edgeopt run '{cfg.name}' on {', '.join(cfg.devices)}"
                                f" ({result.run_info['threads']} thread(s) unless a device profile lists others)"))
    console.print(f"results: {result.output / 'results.json'}  report: {result.output / 'report.md'}  "
                  f"cache: {len(result.cache_hits)} reused, {len(result.cache_misses)} computed")
    if result.failed:
        err_console.print(f"[bold red]{len(result.failed)} artifact(s) failed or unverified, not shipped[/]: "
                          + ", ".join(f"{r['target']} {r['precision']}" for r in result.failed))
        raise typer.Exit(1)


def main() -> None:
    """Entry point: run the app; user errors become one or two lines and a non-zero exit code."""
    try:
        app()  # standalone: typer handles usage errors (exit 2), --help and Ctrl-C itself
    except EdgeoptError as exc:
        err_console.print(f"[bold red]error:[/] {escape(exc.message)}", highlight=False, soft_wrap=True)
        if exc.hint:
            err_console.print(f"  hint: {escape(exc.hint)}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err_console.print("interrupted; finished stages are cached and the next run resumes from them")
        sys.exit(130)
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EACCES):
            raise
        where = f": {exc.filename}" if exc.filename else ""
        err_console.print(f"[bold red]error:[/] {escape(exc.strerror or str(exc))}{escape(where)}", highlight=False)
        err_console.print("  hint: free space or choose a writable --out; partial files were removed and finished "
                          "stages are cached", highlight=False)
        sys.exit(1)


if __name__ == "__main__":
    main()
