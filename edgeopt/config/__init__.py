"""The pipeline configuration: pydantic v2 models (unknown keys are errors with a did-you-mean), YAML loading
and ``--set`` overrides. Each target's section (its precisions and typed options) is a member of a discriminated
union on ``name``, defined in the target's own package and found through the registry.

May import: ``edgeopt.errors``, ``edgeopt.core``.
"""
