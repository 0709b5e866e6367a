"""Per target, in one run: latency of each precision relative to fp32, and its mAP drop vs torch fp32.

Runs the pipeline config (cached stages are reused), then times every shipped bundle of the chosen targets
round-robin in this process (blocks of runs, alternating), so machine noise hits every row alike. mAP figures
come from the run's results.json (measured through each runtime on the validation set).

    python benchmarks/target_ratios.py --target openvino [--target onnxruntime] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from common import add_timing_args, bundle_input, time_interleaved

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "default.yaml"))
    parser.add_argument("--target", action="append", help="target name (repeatable; default: all in the config)")
    add_timing_args(parser)
    args = parser.parse_args()

    import edgeopt
    from edgeopt.targets import get_target

    config = edgeopt.load_config(args.config, [f"benchmark.threads={args.threads}"])
    result = edgeopt.run(config)
    wanted = set(args.target or [t.name for t in config.targets])
    ref = next(r for r in result.records if r["target"] == "torch")
    rows = [r for r in result.records if r["target"] in wanted and r["status"] == "passed"]
    runs, inputs = {}, {}
    for r in rows:
        bundle = Path(r["artifact"])
        manifest = json.loads((bundle / "edgeopt.json").read_text())
        runs[(r["target"], r["precision"])] = get_target(r["target"]).open(bundle, manifest, args.threads)
        inputs[(r["target"], r["precision"])] = bundle_input(manifest, config.model.input_size)
    times = time_interleaved(runs, inputs, args.rounds, args.runs)

    print(f"\n{args.threads} thread(s); torch fp32 mAP50-95 {ref['map50_95']:.4f}; "
          f"{args.rounds}x{args.runs} interleaved timed runs per row")
    print(f"{'target':12s} {'precision':9s} {'median ms':>9s} {'p90 ms':>7s} {'vs fp32':>8s} {'mAP50-95':>9s} "
          f"{'drop pt':>8s}")
    for (target, precision), t in times.items():
        fp32 = times.get((target, "fp32"))
        ratio = np.median(t) / np.median(fp32) if fp32 is not None else float("nan")
        row = next(r for r in rows if (r["target"], r["precision"]) == (target, precision))
        print(f"{target:12s} {precision:9s} {np.median(t):9.2f} {np.percentile(t, 90):7.2f} {ratio:8.3f} "
              f"{row['map50_95']:9.4f} {row['map50_95_drop'] * 100:8.2f}")


if __name__ == "__main__":
    main()
