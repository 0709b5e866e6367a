"""The embedded reference detector: its network, its checkpoint format and its source (the committed weights,
or weights written by ``edgeopt train``).

May import: what ``edgeopt.models.sources`` may; never another family's package.
"""
