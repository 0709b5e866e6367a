"""Load and run an ncnn model (.param/.bin). Needs only numpy and the ``ncnn`` package: shipped in bundles."""

from __future__ import annotations

from pathlib import Path


def session_options(threads: int, manifest: dict | None = None) -> dict:
    """The net options used for every measurement (recorded in results)."""
    precision = (manifest or {}).get("precision")
    # ncnn computes in fp16 wherever the CPU can (ARMv8.2 asimdhp: a Pi 5) unless told not to, and x86 cannot:
    # an fp32 bundle scored 0.92 mAP points apart on an emulated Cortex-A76 and on x86. fp32 means fp32.
    fp16 = precision != "fp32"
    return {"num_threads": threads, "use_int8_inference": precision == "int8", "use_vulkan_compute": False,
            "use_fp16_storage": fp16, "use_fp16_packed": fp16, "use_fp16_arithmetic": fp16, "lightmode": True}


def load_session(model_dir: Path, manifest: dict, threads: int):
    """Return ``run(batch) -> list of outputs`` for the bundle's net (batch of one, NCHW float32)."""
    import ncnn
    import numpy as np

    net = ncnn.Net()
    options = session_options(threads, manifest)
    net.opt.num_threads = threads
    net.opt.use_vulkan_compute = False
    net.opt.use_int8_inference = options["use_int8_inference"]
    for name in ("use_fp16_storage", "use_fp16_packed", "use_fp16_arithmetic"):
        setattr(net.opt, name, options[name])
    model_dir = Path(model_dir)
    param, weights = manifest["model_files"]
    if net.load_param(str(model_dir / param)) != 0 or net.load_model(str(model_dir / weights)) != 0:
        raise RuntimeError(f"ncnn could not load {model_dir / param}")
    inputs, outputs = manifest["runtime"]["inputs"], manifest["runtime"]["outputs"]

    def run(batch):
        x = np.ascontiguousarray(np.asarray(batch, dtype=np.float32)[0])
        ex = net.create_extractor()
        ex.input(inputs[0], ncnn.Mat(x).clone())  # Mat wraps the array without copying
        results = []
        for name in outputs:
            ret, out = ex.extract(name)
            if ret != 0:
                raise RuntimeError(f"ncnn extract {name} failed ({ret})")
            results.append(np.array(out, copy=True)[None])
        return results

    return run
