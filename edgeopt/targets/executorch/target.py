"""ExecuTorch target: torch.export -> edge dialect -> XNNPACK delegate -> ``.pte`` program.

Precisions, exactly:

* ``fp32``: float32 weights and compute, in XNNPACK where it takes the op (the rest on ExecuTorch's portable
  kernels; the manifest's ``runtime.delegation`` counts both per op type);
* ``int8``: PT2E static quantization with ExecuTorch's XNNPACK quantizer: int8 symmetric weights (per channel
  unless the plan says per tensor) and int8 activations, calibrated on the shared calibration tensors; what the
  plan keeps float (the head's tail and ``keep_float`` regexes over the FX node names of the exported graph) is
  left out of the annotation, so it runs float inside the same delegate.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path
from typing import Any

from edgeopt.core.contracts import Capabilities, ExportResult, Target
from edgeopt.errors import ExportError, first_line
from edgeopt.targets.graph import head_tail, kept_float


class ExecuTorchTarget(Target):
    name = "executorch"
    extra = "executorch"
    modules = ("executorch", "torchao")
    device_modules = ("executorch",)
    # the binding links libtorch (the wheel does not list it); the wheel declares coremltools (Apple's
    # converter, no aarch64 Linux build) among a dozen exporter needs: installed without them, with what the
    # runner and its profile (executorch.devtools' Inspector) import
    device_packages = ("executorch", "torch", "pandas", "tabulate", "flatbuffers", "ruamel.yaml", "pydot", "torchao")
    device_no_deps = ("executorch",)
    runner = "edgeopt.targets.executorch.runner"
    capabilities = Capabilities(precisions=("fp32", "int8"), model_kinds=("torch",), refusals={
        "onnx": "ExecuTorch programs are made from a torch module by torch.export, not from ONNX"})

    def versions(self) -> dict[str, str]:
        from importlib.metadata import version

        return {p: version(p) for p in ("executorch", "torchao")}

    def export(self, detector, precision: str, plan, calib, out_dir: Path, options: Any) -> ExportResult:
        import torch

        module, example = detector.module.eval(), detector.example_input()
        try:
            with torch.no_grad():
                program = torch.export.export(module, (example,))
            quantization = None
            if precision == "int8":
                program, quantization = _quantize(program, example, plan, calib)
            buffer, delegation = _lower(program)
        except ExportError:
            raise
        except Exception as exc:  # torch.export and the lowering raise many types for an unsupported model
            raise ExportError(f"ExecuTorch export failed: {type(exc).__name__}: {first_line(exc)}") from None
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "model.pte").write_bytes(buffer)
        return ExportResult(["model.pte"], quantization or {"type": "none (float32)"},
                            runtime={"delegate": "XNNPACK", "delegation": delegation})


def _tensor_shape(node: Any) -> tuple[int, ...] | None:
    """The shape of the tensor a graph node stands for (a weight's ``get_attr``, or any node with metadata)."""
    val = node.meta.get("val")
    if val is not None and hasattr(val, "shape"):
        return tuple(val.shape)
    if node.op == "get_attr":
        target: Any = node.graph.owning_module
        for part in node.target.split("."):
            target = getattr(target, part)
        return tuple(target.shape)
    return None


def head_tail_nodes(graph_module: Any, depth: int = 1) -> list[str]:
    """FX node names of the head's tail (see :mod:`edgeopt.targets.graph`) in an exported graph module."""
    import torch

    convs = {torch.ops.aten.conv2d.default, torch.ops.aten.convolution.default}
    output = next(n for n in graph_module.graph.nodes if n.op == "output")
    outputs: list[Any] = []
    torch.fx.node.map_arg(output.args, outputs.append)

    def kernel(node: Any) -> tuple[int, int, int] | None:
        shape = _tensor_shape(node.args[1])
        return (shape[0], shape[2], shape[3]) if shape and len(shape) == 4 else None

    found, others = head_tail(outputs, lambda n: n.all_input_nodes,
                              lambda n: n.op == "call_function" and n.target in convs, lambda n: n.name, kernel, depth)
    return [n.name for n in found + others if n.op == "call_function"]


def _quantizer(plan: Any, kept: set[str]) -> Any:
    """ExecuTorch's XNNPACK quantizer for ``plan``, leaving the ``kept`` FX nodes float: symmetric int8,
    per-channel weights as planned; min-max activation ranges for ``minmax``, else its default histogram observer
    (the closest PT2E offers to entropy and percentile calibration)."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e import MinMaxObserver

    class KeepFloat(XNNPACKQuantizer):
        """Its filter function is not consulted for every op (ExecuTorch 1.5.1 annotates ``cat`` and what
        follows it regardless: the output's box concat went int8, and int8 mAP50-95 lost 6 points), so kept
        nodes also lose any annotation after the fact."""

        def annotate(self, model: Any) -> Any:
            model = super().annotate(model)
            for node in model.graph.nodes:
                if node.name in kept:
                    node.meta.pop("quantization_annotation", None)
            return model

    config = get_symmetric_quantization_config(is_per_channel=plan.per_channel)
    if plan.method == "minmax":
        activation = dataclasses.replace(config.input_activation,
                                         observer_or_fake_quant_ctr=MinMaxObserver.with_args(eps=2**-12))
        config = dataclasses.replace(config, input_activation=activation, output_activation=activation)
    quantizer = KeepFloat().set_global(config)
    quantizer.set_filter_function(lambda node: node.name not in kept)
    return quantizer


def _quantize(program: Any, example: Any, plan: Any, calib: Any) -> tuple[Any, dict[str, Any]]:
    """PT2E: annotate all but the kept-float nodes, calibrate on the shared tensors, convert, re-export."""
    import torch
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    graph = program.module()
    names = [n.name for n in graph.graph.nodes if n.op == "call_function"]
    kept = kept_float(plan, lambda depth: head_tail_nodes(graph, depth), names)
    prepared = prepare_pt2e(graph, _quantizer(plan, set(kept)))
    with torch.no_grad():
        for batch in calib.batches("NCHW"):
            prepared(torch.from_numpy(batch))
        converted = convert_pt2e(prepared)
        program = torch.export.export(converted, (example,))
    activation = "min-max" if plan.method == "minmax" else "histogram"
    return program, {"type": "PT2E static int8 (XNNPACK quantizer)", "weights": "int8 symmetric",
                     "activations": "int8", "per_channel": plan.per_channel, "calibration": plan.method,
                     "activation_observer": activation, "calibration_images": int(len(calib.images)),
                     "kept_float": kept}


def _lower(program: Any) -> tuple[bytes, dict[str, Any]]:
    """The ``.pte`` bytes of ``program`` lowered to XNNPACK, and the delegation per op type."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.devtools.backend_debug import get_delegation_info
    from executorch.exir import to_edge_transform_and_lower

    edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
    info = get_delegation_info(edge.exported_program().graph_module)
    delegated = Counter({op: b.delegated for op, b in info.delegation_by_operator.items() if b.delegated})
    portable = Counter({op: b.non_delegated for op, b in info.delegation_by_operator.items() if b.non_delegated})
    total = sum(delegated.values()) + sum(portable.values())
    delegation = {"xnnpack_ops": dict(sorted(delegated.items())), "portable_ops": dict(sorted(portable.items())),
                  "delegated_subgraphs": info.num_delegated_subgraphs,
                  "delegated_share": round(sum(delegated.values()) / total, 4) if total else None}
    return edge.to_executorch().buffer, delegation
