"""What benchmarking over SSH costs, and that it does not change the figure: one bundle benchmarked on this
machine directly (the local device) and through a real OpenSSH server on loopback (the SSH device, this same
CPU), alternating, in one run.

Reports per benchmark call the wall time of each (so the SSH overhead: connection, agent, checksum check on the
device) and the ratio of the latency medians each reported (1.0 means SSH does not distort the measurement).

    python benchmarks/ssh_overhead.py [--bundle runs/default/artifacts/onnxruntime-fp32] [--rounds 5]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import emulated_pi  # noqa: E402  (the loopback sshd)


def _timed(call) -> tuple[float, dict]:
    started = time.perf_counter()
    figures = call()
    return time.perf_counter() - started, figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default=str(ROOT / "runs" / "default" / "artifacts" / "onnxruntime-fp32"))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    bundle = Path(args.bundle)
    if not (bundle / "edgeopt.json").is_file():
        sys.exit(f"{bundle} is not a bundle: run `edgeopt run configs/default.yaml` first, or pass --bundle")

    from edgeopt.devices.local import LocalDevice
    from edgeopt.devices.ssh import SshDevice

    with tempfile.TemporaryDirectory() as state:
        profile = emulated_pi.start_sshd(Path(state), python=sys.executable, name="loopback")
        try:
            devices = {"local": LocalDevice(), "ssh": SshDevice(profile)}
            devices["ssh"].push(bundle)  # the first push copies the bundle; later ones find nothing changed
            walls: dict[str, list[float]] = {k: [] for k in devices}
            medians: dict[str, list[float]] = {k: [] for k in devices}
            for _ in range(args.rounds):
                for name, device in devices.items():
                    def call(device=device):
                        device.push(bundle)
                        assert device.verify(bundle) == []
                        return device.bench(bundle, args.threads, 5, args.runs)
                    wall, figures = _timed(call)
                    walls[name].append(wall)
                    medians[name].append(figures["latency_ms_median"])
        finally:
            emulated_pi.stop_sshd(Path(state))
    local_wall, ssh_wall = np.median(walls["local"]), np.median(walls["ssh"])
    ratio = np.median(medians["ssh"]) / np.median(medians["local"])
    print(f"bundle {bundle.name}: {args.rounds} rounds, {args.runs} timed runs per call, {args.threads} thread(s)")
    print(f"wall per benchmark call (push + verify + bench): local {local_wall:.2f} s, ssh {ssh_wall:.2f} s, "
          f"overhead {ssh_wall - local_wall:+.2f} s")
    print(f"latency median: local {np.median(medians['local']):.2f} ms, ssh {np.median(medians['ssh']):.2f} ms, "
          f"ssh/local {ratio:.3f}")


if __name__ == "__main__":
    main()
