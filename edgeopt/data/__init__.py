"""Datasets: YOLO, COCO and image-folder readers, the synthetic reference dataset and its cache.

May import: ``edgeopt.errors``, ``edgeopt.core``, ``edgeopt.bundle`` (letterbox).
"""
