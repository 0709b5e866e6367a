"""In one run: what INT8 to an accuracy budget (``quantize.max_drop``) costs in speed and in export time.

Runs the default config's targets three ways (cached stages are reused): fp32; plain int8 with the head quantized
(``keep_head_float: false``, no search); and int8 searched to a budget from that same plan. Then times the
bundles round-robin in this process, so machine noise hits every row alike, and reports per target:

- the accuracy each int8 variant keeps (mAP50-95 drop against fp32 torch) and what the search kept float;
- speed: the searched artifact's speed-up over fp32 as a share of plain int8's (target: >= 90%; undefined where
  int8 is not faster than fp32), and its latency over plain int8's;
- cost: the search's total time (its exports and mAP evaluations) over one plain int8 export (target: <= 3x).

    python benchmarks/int8_budget.py [--max-drop 0.5] [--threads 1]
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
    parser.add_argument("--max-drop", type=float, default=0.5)
    parser.add_argument("--out", default=str(ROOT / "runs" / "int8_budget"))
    add_timing_args(parser)
    args = parser.parse_args()

    import edgeopt
    from edgeopt.targets import get_target

    base = edgeopt.load_config(args.config)
    names = [t.name for t in base.targets]
    common = [f"benchmark.threads={args.threads}", "quantize.keep_head_float=false"]
    variants = {
        "fp32": [f"targets={json.dumps([{'name': n, 'precisions': ['fp32']} for n in names])}"],
        "plain": [f"targets={json.dumps([{'name': n, 'precisions': ['int8']} for n in names])}"],
        "searched": [f"targets={json.dumps([{'name': n, 'precisions': ['int8']} for n in names])}",
                     f"quantize.max_drop={args.max_drop}"],
    }
    rows, sessions, inputs = {}, {}, {}
    for tag, overrides in variants.items():
        cfg = edgeopt.load_config(args.config, [*common, *overrides, f"output={args.out}/{tag}"])
        for r in edgeopt.run(cfg).records:
            if r["status"] == "reference" or "artifact" not in r and "cache_key" not in r:
                continue
            bundle = Path(r["artifact"]) if r.get("artifact") else Path(cfg.output_dir) / "cache" / "export" / r["cache_key"]
            manifest = json.loads((bundle / "edgeopt.json").read_text())
            rows[(r["target"], tag)] = {**r, "manifest": manifest}
            sessions[(r["target"], tag)] = get_target(r["target"]).open(bundle, manifest, args.threads)
            inputs[(r["target"], tag)] = bundle_input(manifest, base.model.input_size)
    times = {k: float(np.median(v)) for k, v in time_interleaved(sessions, inputs, args.rounds, args.runs).items()}

    print(f"\n{'target':12s} {'fp32 ms':>8s} {'plain ms':>8s} {'search ms':>9s} {'speed-up kept':>13s} "
          f"{'search/plain':>12s} {'plain drop':>10s} {'search drop':>11s} {'steps':>5s} {'kept float':>10s} {'cost':>6s}")
    for name in names:
        if not all((name, tag) in times for tag in variants):
            print(f"{name:12s} (a variant did not export: "
                  f"{[rows.get((name, t), {}).get('reason') for t in variants]})")
            continue
        fp32, plain, searched = (times[(name, tag)] for tag in variants)
        kept_share = (fp32 / searched - 1) / (fp32 / plain - 1) if fp32 > plain else float("nan")
        search = rows[(name, "searched")]["manifest"]["quantization"]["accuracy_search"]
        steps = search["steps"]
        cost = search["seconds"] / steps[0]["export_seconds"]
        # one step: the searched bundle is the plain one, so its ratios show only the timing noise
        same = " (same)" if len(steps) == 1 else ""
        print(f"{name:12s} {fp32:8.2f} {plain:8.2f} {searched:9.2f} {kept_share * 100:12.0f}% "
              f"{searched / plain:12.2f}{same} "
              f"{(rows[(name, 'plain')].get('map50_95_drop') or 0) * 100:9.2f}pt "
              f"{(rows[(name, 'searched')].get('map50_95_drop') or 0) * 100:10.2f}pt {len(steps):5d} "
              f"{len(steps[-1]['kept_float']):10d} {cost:5.1f}x")


if __name__ == "__main__":
    main()
