"""ONNX Runtime: fp32 ONNX and static QDQ int8 (onnxruntime.quantization), its bundle runner, and the in-process
reference for detectors given as ONNX graphs.

May import: what ``edgeopt.targets`` may, and ``edgeopt.targets.graph`` / ``onnx_export``; never another
runtime's package.
"""
