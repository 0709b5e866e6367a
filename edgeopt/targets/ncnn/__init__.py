"""NCNN: pnnx converts the torch module to .param/.bin (fp32 or fp16-stored weights); int8 is calibrated and
written by edgeopt's own writer (``int8.py``), since no package in reach ships ncnn2table/ncnn2int8.

May import: what ``edgeopt.targets`` may, and ``edgeopt.targets.graph`` / ``onnx_export``; never another
runtime's package.
"""
