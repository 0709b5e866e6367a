"""ExecuTorch (PyTorch's on-device runtime): ``.pte`` programs lowered to the XNNPACK delegate, fp32 and int8
(PT2E with the XNNPACK quantizer), and their bundle runner.

May import: what ``edgeopt.targets`` may, and ``edgeopt.targets.graph``; never another runtime's package.
"""
