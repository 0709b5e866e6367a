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


def _net(model_dir: Path, manifest: dict, threads: int, lightmode: bool = True):
    import ncnn

    net = ncnn.Net()
    options = session_options(threads, manifest)
    net.opt.num_threads = threads
    net.opt.use_vulkan_compute = False
    net.opt.lightmode = lightmode
    net.opt.use_int8_inference = options["use_int8_inference"]
    for name in ("use_fp16_storage", "use_fp16_packed", "use_fp16_arithmetic"):
        setattr(net.opt, name, options[name])
    model_dir = Path(model_dir)
    param, weights = manifest["model_files"]
    if net.load_param(str(model_dir / param)) != 0 or net.load_model(str(model_dir / weights)) != 0:
        raise RuntimeError(f"ncnn could not load {model_dir / param}")
    return net


def load_session(model_dir: Path, manifest: dict, threads: int):
    """Return ``run(batch) -> list of outputs`` for the bundle's net (batch of one, NCHW float32)."""
    import ncnn
    import numpy as np

    net = _net(model_dir, manifest, threads)
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


def _layers(param_file: Path) -> list[tuple[str, str, str, bool]]:
    """(type, name, first output blob, has int8 scales) of every layer of a .param file, in execution order
    (ncnn's format: magic line, counts line, then ``type name n_in n_out inputs... outputs... key=value...``)."""
    layers = []
    for line in param_file.read_text().splitlines()[2:]:
        fields = line.split()
        if len(fields) < 4 or fields[0] == "Input" or int(fields[3]) == 0:
            continue
        n_in, n_out = int(fields[2]), int(fields[3])
        values = fields[4 + n_in + n_out:]
        # int8_scale_term (key 8) of Convolution / ConvolutionDepthWise / InnerProduct: quantized weights
        int8 = fields[0] in ("Convolution", "ConvolutionDepthWise", "InnerProduct") and \
            any(v.startswith("8=") and v != "8=0" for v in values)
        layers.append((fields[0], fields[1], fields[4 + n_in], int8))
    return layers


def profile(model_dir: Path, manifest: dict, threads: int, batch, warmup: int, runs: int) -> list[dict]:
    """Per-layer milliseconds per inference. ncnn's profiler is a compile-time switch its wheels do not set, so
    each layer is timed by extracting its output in execution order from one extractor: the extractor computes
    only what is not computed yet, i.e. that layer. The binding's own cost per call (measured by extracting the
    same, now cached, blob again) is subtracted. Intermediate blobs are kept (``lightmode`` off) to be cached."""
    import time

    import ncnn
    import numpy as np

    net = _net(model_dir, manifest, threads, lightmode=False)
    layers = _layers(Path(model_dir) / manifest["model_files"][0])
    x = np.ascontiguousarray(np.asarray(batch, dtype=np.float32)[0])
    float_kind = "fp32" if manifest.get("precision") == "fp32" else "float"  # fp16 where the CPU has it
    totals = np.zeros(len(layers))
    for call in range(warmup + runs):
        ex = net.create_extractor()
        ex.input(manifest["runtime"]["inputs"][0], ncnn.Mat(x).clone())
        for i, (_, _, blob, _) in enumerate(layers):
            start = time.perf_counter()
            ex.extract(blob, 1)  # 1: the blob as computed (no conversion back to plain fp32 layout)
            computed = time.perf_counter()
            ex.extract(blob, 1)
            again = time.perf_counter()
            if call >= warmup:
                totals[i] += max(0.0, (computed - start) - (again - computed))
    # layer names may repeat (two "splitncnn_0" seen): each stays its own row
    return [{"name": name, "type": kind, "precision": "int8" if int8 else float_kind,
             "ms": float(total / runs * 1000.0), "calls": 1}
            for (kind, name, _, int8), total in zip(layers, totals)]
