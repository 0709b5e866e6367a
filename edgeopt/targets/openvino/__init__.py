"""OpenVINO: IR with fp32 or fp16-compressed weights, NNCF post-training int8, bf16 where the CPU has it.

May import: what ``edgeopt.targets`` may, and ``edgeopt.targets.graph`` / ``onnx_export``; never another
runtime's package.
"""
