"""TFLite / LiteRT, TensorFlow-free: litert-torch converts, ai-edge-quantizer writes fp16 and int8 models, and
the bundle runner accepts ai_edge_litert or tflite_runtime.

May import: what ``edgeopt.targets`` may, and ``edgeopt.targets.graph`` / ``onnx_export``; never another
runtime's package.
"""
