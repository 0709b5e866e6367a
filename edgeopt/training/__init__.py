"""Training: the reference detector's loss, augmentation, EMA and train loop (``edgeopt train``), and the
recovery of a pruned detector by label fine-tuning or distillation (``recover``).

May import: ``edgeopt.errors``, ``edgeopt.core``, ``edgeopt.bundle``, ``edgeopt.config``, ``edgeopt.data``,
``edgeopt.models``, ``edgeopt.eval``.
"""
