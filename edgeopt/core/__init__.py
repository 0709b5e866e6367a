"""The ground floor: what every other layer builds on.

Lives here: the content-addressed cache and the one atomic-write helper (``cache``), the registry of plug-ins
(``registry``: name -> lazy ``module:Class``, with did-you-mean), the bundle manifest (``manifest``), the
contracts every plug-in implements (``contracts``: Target, Stage, Source, Device), the values passed between
stages and targets (``quant``: CalibrationSet, QuantPlan), code fingerprints for cache keys (``fingerprint``),
output capture for chatty converters (``capture``) and two artifacts timed in alternation (``paired_timing``).

May import: ``edgeopt.errors`` only (and the standard library, numpy, rich).
"""
