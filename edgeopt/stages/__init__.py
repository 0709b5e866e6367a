"""The pipeline's verbs, one ``Stage`` class per module: calibrate, quantize, prune, export, benchmark. Each owns
its config section, its preflight checks, its cache key (which includes the fingerprint of its code) and how
its output is computed and read back. ``context`` holds the run's shared state; ``reference`` the reference
inference of a detector of any kind.

May import: every layer below (core, config, data, models, eval, targets, training, devices, report).
"""
