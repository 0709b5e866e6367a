"""Detectors: the ``Detector`` value every stage and target reads (``detector``), torch-pruning mechanics on any
module (``pruning``), architecture-independent checkpoints (``checkpoint``), and the sources that build a
Detector from ``model.source`` (``sources/``: one module or package per origin; family knowledge stays there).

May import: ``edgeopt.errors``, ``edgeopt.core``, ``edgeopt.bundle``, ``edgeopt.config``, ``edgeopt.data``.
"""
