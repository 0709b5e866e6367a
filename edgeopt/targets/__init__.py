"""Registry of target runtimes. A new runtime is one module plus one line here.

Only names live here, so validating a config imports no runtime; :func:`get_target` imports the module on use.
"""

from __future__ import annotations

import importlib

from edgeopt.errors import ConfigError, did_you_mean

# name -> (module, class, pip extra that installs its runtime)
TARGETS: dict[str, tuple[str, str, str]] = {
    "onnxruntime": ("edgeopt.targets.onnxruntime", "OnnxRuntimeTarget", "onnx"),
    "openvino": ("edgeopt.targets.openvino", "OpenVinoTarget", "openvino"),
    "tflite": ("edgeopt.targets.tflite", "TFLiteTarget", "tflite"),
    "ncnn": ("edgeopt.targets.ncnn", "NcnnTarget", "ncnn"),
}


def get_target(name: str):
    """Instantiate the target called ``name``; an unknown name gets a did-you-mean."""
    if name not in TARGETS:
        raise ConfigError(f"unknown target '{name}'", hint=did_you_mean(name, TARGETS) or f"targets: {', '.join(TARGETS)}")
    module, cls, _ = TARGETS[name]
    return getattr(importlib.import_module(module), cls)()
