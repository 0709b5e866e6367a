"""Evaluation: COCO mAP (faster-coco-eval / pycocotools), prediction over a dataset through the shared
letterbox and decoder, and numerical parity of an artifact against its reference.

May import: ``edgeopt.errors``, ``edgeopt.core``, ``edgeopt.bundle``, ``edgeopt.config``, ``edgeopt.data``,
``edgeopt.models``.
"""
