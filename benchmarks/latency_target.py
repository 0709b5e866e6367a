"""In one run: pruning to a measured latency target (prune.target_speedup) per target at one precision.

For each target: a run with ``prune.target_speedup`` measured on that target (the ratio the search chose, its
table), and the same config unpruned; then the two bundles are timed side by side in this process (round-robin,
so machine noise hits both alike): the speed-up pruning bought, and the mAP before and after.

    python benchmarks/latency_target.py [--config configs/default.yaml] [--speedup 0.75]
        [--targets onnxruntime tflite ncnn openvino] [--precision int8] [--recovery-epochs 0] [--threads 1]
        [--set KEY=VALUE ...]

``--recovery-epochs 0`` (the default) measures latency only (no recovery: the pruned model's mAP is that of the
pruned weights); give epochs (and the config's prune.recovery data) to measure what recovery keeps.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from common import add_timing_args, bundle_input, time_interleaved

ROOT = Path(__file__).resolve().parents[1]


def bundle_session(result, cache: Path, target: str, precision: str, threads: int, size: int):
    """The row of ``target``/``precision`` in a run, a session on its bundle (shipped or not) and an input in the
    model's own form."""
    from edgeopt.targets import get_target

    row = next(r for r in result.records if r["target"] == target and r["precision"] == precision
               and r.get("cache_key"))
    bundle = cache / "export" / row["cache_key"]
    manifest = json.loads((bundle / "edgeopt.json").read_text())
    return row, get_target(target).open(bundle, manifest, threads), bundle_input(manifest, size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "default.yaml"))
    parser.add_argument("--speedup", type=float, default=0.75)
    parser.add_argument("--targets", nargs="+", default=["onnxruntime", "tflite", "ncnn", "openvino"])
    parser.add_argument("--precision", default="int8")
    parser.add_argument("--recovery-epochs", type=int, default=0)
    parser.add_argument("--output", default=str(ROOT / "runs" / "latency-target"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override for both runs (repeatable), e.g. 'prune.ignored=[]'")
    add_timing_args(parser)
    args = parser.parse_args()

    import edgeopt

    lines = []
    for target in args.targets:
        common = [f"targets={json.dumps([{'name': target, 'precisions': [args.precision]}])}",
                  f"benchmark.threads={args.threads}", *args.set]
        cache = Path(args.output) / "cache"  # one cache: the unpruned run reuses the pruned run's calibration
        recovery = [f"prune.recovery.epochs={args.recovery_epochs}"] + (
            ["prune.recovery.mode=none"] if args.recovery_epochs == 0 else [])
        pruned_cfg = edgeopt.load_config(args.config, [
            *common, f"output={args.output}/{target}", "stages=[calibrate, quantize, prune, export, benchmark]",
            "prune.ratio=null", "prune.target_macs_reduction=null", f"prune.target_speedup={args.speedup}", f"prune.latency.threads={args.threads}",
            *recovery])
        pruned = edgeopt.run(pruned_cfg, cache_dir=cache)
        base = edgeopt.run(edgeopt.load_config(args.config, [*common, f"output={args.output}/{target}-unpruned",
                                                             "stages=[calibrate, quantize, export, benchmark]",
                                                             # no prune stage: its latency-only settings do not apply
                                                             "prune.allocation=uniform"]),
                           cache_dir=cache)
        size = pruned_cfg.model.input_size
        base_row, base_run, x = bundle_session(base, cache, target, args.precision, args.threads, size)
        pruned_row, pruned_run, _ = bundle_session(pruned, cache, target, args.precision, args.threads, size)
        times = time_interleaved({"unpruned": base_run, "pruned": pruned_run}, x, args.rounds, args.runs)
        report = pruned.run_info["prune"]
        latency = report["latency"]
        side_by_side = np.median(times["pruned"]) / np.median(times["unpruned"])
        print(f"\n{target} {args.precision}: the search's measurements (ratio, MACs, candidate ms, unpruned ms "
              "timed beside it, ratio of the two)")
        for t in latency["table"]:
            beside = t.get("unpruned_ms", t["latency_ms"])
            print(f"  {t['ratio']:.3f} {t['macs'] / 1e6:8.1f}M {t['latency_ms']:8.3f} {beside:8.3f} {t['speedup']:.3f}")
        for b in (report.get("allocation_measured") or {}).get("blocks", []):
            print(f"  block {b['first']} .. {b['last']}: saved {b['saved']:.1%} pruned alone, distortion "
                  f"{b['distortion']:.4g}, weight {b['weight']:.2f}")
        lines.append(f"{target:12s} {args.precision:9s} {report['ratio']:6.3f} {report['macs_reduction'] * 100:6.1f}% "
                     f"{latency['speedup']:8.3f} {np.median(times['unpruned']):9.2f} {np.median(times['pruned']):9.2f} "
                     f"{side_by_side:8.3f} {'met' if side_by_side <= args.speedup else 'MISSED':6s} "
                     f"{base_row.get('map50_95', float('nan')):8.4f} {pruned_row.get('map50_95', float('nan')):8.4f}")
    print(f"\ntarget speed-up {args.speedup:g} at {args.precision}, {args.threads} thread(s); search: the ratio's "
          "latency / unpruned as the search measured it (the bundles' own run.py); side by side: timed here, "
          "round-robin")
    print(f"{'target':12s} {'precision':9s} {'ratio':>6s} {'MACs':>7s} {'search':>8s} {'unpr. ms':>9s} "
          f"{'pruned ms':>9s} {'side':>8s} {'':6s} {'mAP unpr':>8s} {'mAP pr.':>8s}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
