"""Ultralytics YOLO detection checkpoints (YOLOv8, YOLO11, YOLO26, ...): everything edgeopt knows about that
family, and nothing of it outside this package: reading the checkpoint (``checkpoint``), the wrapper giving it
edgeopt's output layout with DFL written as decode (``wrapper``), the C2f/C3k2 rewrite that makes it prunable
(``normalize``), and the source (``source``).

May import: what ``edgeopt.models.sources`` may; never another family's package.
"""
