"""The head-tail walk every target uses to name what an int8 plan keeps float, on a graph small enough to check
by hand."""

import pytest

from edgeopt.targets.graph import head_tail

# out = concat(convB(shared), r1(r2(shared))), shared = act(convS(convT(x))): `shared` is reached from the output
# through no convolution (r1, r2) and through one (convB), so convS is one of the head's last convolutions.
PARENTS = {"out": ["convB", "r1"], "convB": ["shared"], "r1": ["r2"], "r2": ["shared"], "shared": ["convS"],
           "convS": ["convT"], "convT": ["x"], "x": []}


def walk(depth: int) -> tuple[set[str], set[str]]:
    convs, others = head_tail(["out"], PARENTS.__getitem__, lambda n: n.startswith("conv"), lambda n: n,
                              depth=depth)
    return set(convs), set(others)


@pytest.mark.parametrize("depth, convs", [(0, set()), (1, {"convB", "convS"}), (2, {"convB", "convS", "convT"})])
def test_levels_count_the_fewest_convolutions_to_an_output(depth, convs):
    walked_convs, others = walk(depth)
    assert walked_convs == convs
    assert others == {"out", "r1", "r2", "shared"}  # never what lies beyond the deepest convolutions kept


def test_projections_are_decode_not_convolutions():
    parents = {"out": ["proj"], "proj": ["conv"], "conv": ["x"], "x": []}
    kernels = {"proj": (1, 1, 1), "conv": (64, 3, 3)}
    convs, others = head_tail(["out"], parents.__getitem__, lambda n: n in kernels, lambda n: n, kernels.get)
    assert convs == ["conv"] and set(others) == {"out", "proj"}
