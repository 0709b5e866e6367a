"""In one run: latency of pruned vs unpruned bundles per target/precision, and what pruning cost in mAP.

Runs the unpruned default config and a prune config (cached stages are reused), then times the matching
bundles round-robin in this process, so machine noise hits both alike.

    python benchmarks/prune_speedup.py [--prune-config configs/prune.yaml] [--threads 1]
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
    parser.add_argument("--base-config", default=str(ROOT / "configs" / "default.yaml"))
    parser.add_argument("--prune-config", default=str(ROOT / "configs" / "prune.yaml"))
    add_timing_args(parser)
    args = parser.parse_args()

    import edgeopt
    from edgeopt.targets import get_target

    pruned_cfg = edgeopt.load_config(args.prune_config, [f"benchmark.threads={args.threads}"])
    pruned = edgeopt.run(pruned_cfg)
    wanted = [f"targets={json.dumps([t.model_dump() for t in pruned_cfg.targets])}",
              f"benchmark.threads={args.threads}"]
    base = edgeopt.run(edgeopt.load_config(args.base_config, wanted))
    rows = {}
    for tag, result in (("unpruned", base), ("pruned", pruned)):
        for r in result.records:
            if r["status"] == "passed":
                rows[(r["target"], r["precision"], tag)] = r
    sessions, inputs = {}, {}
    for key, r in rows.items():
        bundle = Path(r["artifact"])
        manifest = json.loads((bundle / "edgeopt.json").read_text())
        sessions[key] = get_target(key[0]).open(bundle, manifest, args.threads)
        inputs[key] = bundle_input(manifest, pruned_cfg.model.input_size)
    times = time_interleaved(sessions, inputs, args.rounds, args.runs)

    report = pruned.run_info["prune"]
    print(f"\npruning: ratio {report['ratio']:.3f}, MACs {report['before']['macs'] / 1e6:.0f}M -> "
          f"{report['after_recovery']['macs'] / 1e6:.0f}M (-{report['macs_reduction'] * 100:.1f}%), params "
          f"{report['before']['params'] / 1e6:.2f}M -> {report['after_recovery']['params'] / 1e6:.2f}M; recovery "
          f"{report['recovery']['mode']} {report['recovery']['epochs']} epochs in {report['recovery'].get('seconds', 0):.0f} s")
    print(f"{'target':12s} {'precision':9s} {'unpruned ms':>11s} {'pruned ms':>9s} {'ratio':>6s} "
          f"{'mAP unpruned':>12s} {'mAP pruned':>10s}")
    for (target, precision, tag) in sorted(k for k in sessions if k[2] == "pruned"):
        if (target, precision, "unpruned") not in sessions:
            continue
        a, b = times[(target, precision, "unpruned")], times[(target, precision, "pruned")]
        print(f"{target:12s} {precision:9s} {np.median(a):11.2f} {np.median(b):9.2f} {np.median(b) / np.median(a):6.3f} "
              f"{rows[(target, precision, 'unpruned')]['map50_95']:12.4f} {rows[(target, precision, 'pruned')]['map50_95']:10.4f}")


if __name__ == "__main__":
    main()
