"""Sweep points on Ray: each point's stages up to the benchmark (calibrate, quantize, prune + recovery, export
with its parity gate) run as Ray tasks, one CPU each, writing into the sweep's shared cache (entries are
content-addressed and written atomically, so two tasks building the same entry is waste, never damage). The
driver then runs each point whole, which finds that work in the cache and only benchmarks, one point after
another: latency is never measured while other work shares the device.

A cluster (``address``) needs the sweep directory on storage every node sees.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeopt.errors import DependencyError, missing_extra
from edgeopt.sweep.spec import Point


def _prepare(config_data: dict[str, Any], output: str, cache_dir: str, use_cache: bool) -> str | None:
    """Run one point without its benchmark; None, or the user-facing reason it failed."""
    from rich.console import Console

    from edgeopt.config.schema import PipelineConfig
    from edgeopt.errors import EdgeoptError
    from edgeopt.pipeline import run_pipeline

    config = PipelineConfig.model_validate(config_data)
    stages = [s for s in config.stages if s != "benchmark"]
    config = config.model_copy(update={"output": output, "stages": stages, "device": "local"})
    try:
        run_pipeline(config, use_cache=use_cache, console=Console(stderr=True, quiet=True), cache_dir=Path(cache_dir))
    except EdgeoptError as exc:
        return exc.message
    return None


def prepare_on_ray(points: list[Point], output: Path, cache_dir: Path, address: str | None,
                   use_cache: bool) -> dict[str, str]:
    """Every point's pre-benchmark work as Ray tasks; point id -> reason for the points that failed."""
    try:
        import ray
    except ImportError:
        raise missing_extra("ray", "ray") from None
    started = not ray.is_initialized()
    if started:
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False,
                     configure_logging=False, runtime_env={"env_vars": {"RAY_DEDUP_LOGS": "0"}})
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise DependencyError(f"cannot start or reach Ray ({address or 'local'}): {exc}",
                                  hint="check sweep.address, or use executor: local") from None
    try:
        task = ray.remote(num_cpus=1)(_prepare)
        refs = {p.id: task.remote(p.config.model_dump(mode="json"), str(output / "prepared" / p.id),
                                  str(cache_dir), use_cache) for p in points}
        return {pid: reason for pid, reason in zip(refs, ray.get(list(refs.values()))) if reason}
    finally:
        if started:
            ray.shutdown()
