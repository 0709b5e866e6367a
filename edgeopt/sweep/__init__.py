"""Sweeps: one base config, axes over any of its keys, every point run through the shared content-addressed
cache (so each piece of work happens once), all rows in one table, Pareto fronts per device, and a pick by
budget that writes the bundle to hand over.

May import: everything below ``edgeopt.pipeline`` and the pipeline itself.
"""
