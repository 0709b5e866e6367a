"""Depth pruning: residual blocks found by tracing, dropped whole, ranked by distortion, saved and reloaded."""

import numpy as np
import pytest
import torch
from torch import nn

from edgeopt.config.schema import PruneConfig
from edgeopt.errors import ModelError
from edgeopt.models.checkpoint import load_pruned, save_pruned
from edgeopt.models.depth import choose_blocks, drop_blocks, hints_dropping, rank_blocks, residual_blocks
from edgeopt.models.detector import PruningHints

pytest.importorskip("torch_pruning", reason="the 'prune' extra is not installed")

from edgeopt.models.pruning import prune_once  # noqa: E402


def _conv(c: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU())


class Residual(nn.Module):
    """Input plus a branch, the input added on the right as some families write it."""

    def __init__(self, c: int, input_first: bool = True):
        super().__init__()
        self.branch, self.input_first = nn.Sequential(_conv(c), nn.Conv2d(c, c, 1, bias=False)), input_first

    def forward(self, x):
        return x + self.branch(x) if self.input_first else torch.add(self.branch(x), x)


class TwoBranches(nn.Module):
    """Same shape in and out, a sum, but not of the input: removing it is not dropping a branch."""

    def __init__(self, c: int):
        super().__init__()
        self.a, self.b = _conv(c), _conv(c)

    def forward(self, x):
        return self.a(x) + self.b(x)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU())
        self.res1 = Residual(16)
        self.wrapped = nn.Sequential(Residual(16, input_first=False))  # the block is the inner module
        self.plain = _conv(16)  # same shape, no residual
        self.pair = TwoBranches(16)
        self.res2 = Residual(16)
        self.head = nn.Conv2d(16, 6, 1)

    def forward(self, x):
        return self.head(self.res2(self.pair(self.plain(self.wrapped(self.res1(self.stem(x))))))).flatten(2)


def _net(seed: int = 0) -> Net:
    torch.manual_seed(seed)
    net = Net().train()
    with torch.no_grad():
        net(torch.rand(4, 3, 32, 32))  # non-trivial BatchNorm statistics
    return net.eval()


def _images(n: int = 4) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


def test_residual_blocks_are_found_by_tracing_not_by_name():
    assert residual_blocks(_net()) == ["res1", "wrapped.0", "res2"]


def test_a_dropped_block_passes_its_input_on():
    net, x = _net(), torch.rand(2, 3, 32, 32)
    dropped = drop_blocks(_net(), ["res1"])
    with torch.no_grad():
        net.res1.branch[1].weight.zero_()  # a branch adding nothing: the block is its input
        assert isinstance(dropped.res1, nn.Identity)
        assert torch.allclose(dropped(x), net(x), atol=1e-6)


def test_the_least_distorting_blocks_are_dropped_and_kept_layers_are_not():
    net = _net()
    with torch.no_grad():
        net.res2.branch[1].weight.mul_(1e-3)  # res2's branch barely matters
    ranked = rank_blocks(net, PruningHints(), [], _images())
    assert [b["block"] for b in ranked][0] == "res2" and len(ranked) == 3
    assert ranked[0]["distortion"] < ranked[1]["distortion"] <= ranked[2]["distortion"]
    kept = rank_blocks(net, PruningHints(), ["res2.*"], _images())
    assert [b["block"] for b in kept] == [b["block"] for b in ranked[1:]]
    assert choose_blocks(ranked, 2) == [b["block"] for b in ranked[:2]]


class PlusOffset(nn.Module):
    """Input plus a learned tensor (its convolution unused): no branch to drop."""

    def __init__(self, c: int):
        super().__init__()
        self.conv, self.offset = _conv(c), nn.Parameter(torch.ones(1, c, 1, 1))

    def forward(self, x):
        return x + self.offset


class ReadsItsBlock(nn.Module):
    """A parent that reads a weight of its residual block: the model cannot run with the block dropped."""

    def __init__(self):
        super().__init__()
        self.stem, self.res, self.offset = nn.Conv2d(3, 16, 3, 2, 1), Residual(16), PlusOffset(16)
        self.head = nn.Conv2d(16, 6, 1)

    def forward(self, x):
        y = self.offset(self.res(self.stem(x)))
        return self.head(y * self.res.branch[1].weight.mean()).flatten(2)


def test_a_block_the_model_cannot_run_without_and_an_added_tensor_are_not_candidates():
    model = ReadsItsBlock().eval()
    assert residual_blocks(model) == ["res"]
    assert rank_blocks(model, PruningHints(), [], _images()) == []


def test_a_block_inside_a_chosen_one_is_not_counted_again():
    ranked = [{"block": "a", "distortion": 0.1}, {"block": "a.m.0", "distortion": 0.2}, {"block": "b", "distortion": 0.3}]
    assert choose_blocks(ranked, 2) == ["a", "b"]
    assert choose_blocks(ranked, 5) == ["a", "b"]


def test_a_depth_and_channel_pruned_model_round_trips_weights_only(tmp_path):
    net = _net()
    hints = hints_dropping(PruningHints(), ["res1", "wrapped.0"])
    student = prune_once(net, PruneConfig(ratio=0.5, ignored=["stem.*"]), 0.5, 4, 32, None, hints)
    assert isinstance(student.res1, nn.Identity) and student.res2.branch[0][0].out_channels < 16
    path = save_pruned(student, tmp_path / "pruned.pt")
    loaded = load_pruned(path, net)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(loaded(x), student(x), atol=1e-6)
    data = torch.load(path, weights_only=True)
    data["identity"] = ["no.such.block"]
    torch.save(data, tmp_path / "bad.pt")
    with pytest.raises(ModelError, match="identity modules"):
        load_pruned(tmp_path / "bad.pt", net)
