"""Structured pruning: C2f normalisation, ignored layers, round_to, persistence, recovery."""

import pytest
import torch
from torch import nn

from edgeopt.config.schema import PruneConfig, RecoveryConfig
from edgeopt.models.sources.reference.checkpoint import load_detector, save_detector
from edgeopt.models.sources.ultralytics.normalize import normalize_for_pruning
from edgeopt.models.sources.reference.network import ReferenceConfig, build_reference

tp = pytest.importorskip("torch_pruning", reason="the 'prune' extra is not installed")

from edgeopt.models.pruning import count, kept_channels, output_convs, prune_once  # noqa: E402
from edgeopt.training.recover import recover  # noqa: E402


class Conv(nn.Module):
    """Ultralytics-style conv block: .conv, .bn, .act."""

    def __init__(self, c1, c2, k=1, s=1):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, k // 2, bias=False)
        self.bn = nn.BatchNorm2d(c2)
        self.act = nn.SiLU()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.cv1, self.cv2 = Conv(c, c, 3), Conv(c, c, 3)

    def forward(self, x):
        return x + self.cv2(self.cv1(x))


class C2f(nn.Module):
    """The YOLOv8 block: one conv's output is chunked in two."""

    def __init__(self, c1, c2, n=1):
        super().__init__()
        self.c = c2 // 2
        self.cv1 = Conv(c1, 2 * self.c, 1)
        self.cv2 = Conv((2 + n) * self.c, c2, 1)
        self.m = nn.ModuleList(Bottleneck(self.c) for _ in range(n))

    def forward(self, x):
        y = list(self.cv1(x).chunk(2, 1))
        y.extend(m(y[-1]) for m in self.m)
        return self.cv2(torch.cat(y, 1))


def _c2f_net():
    torch.manual_seed(0)
    net = nn.Sequential(Conv(3, 32, 3, 2), C2f(32, 64, 2), Conv(64, 64, 3, 2), C2f(64, 64, 1), nn.Conv2d(64, 10, 1))
    net.train()
    with torch.no_grad():
        net(torch.rand(4, 3, 64, 64))  # non-trivial BatchNorm statistics
    return net.eval()


def test_c2f_normalisation_is_output_identical_and_prunable():
    net = _c2f_net()
    x = torch.rand(2, 3, 64, 64)
    before = net(x)
    replaced = normalize_for_pruning(net)
    assert replaced == ["1", "3"]
    assert torch.allclose(net(x), before, atol=1e-6)
    pruner = tp.pruner.BasePruner(net, x[:1], importance=tp.importance.MagnitudeImportance(p=2), pruning_ratio=0.5,
                                  ignored_layers=[net[4]], round_to=8)
    pruner.step()
    assert net(x).shape == before.shape
    assert net[1].cv1a.conv.out_channels < 32 and net[1].cv1b.conv.out_channels < 32


def _tiny_reference():
    cfg = ReferenceConfig(widths=(16, 32, 32, 64, 64), depths=(1, 1, 1, 1), neck=(32, 32, 64), head=32,
                          input_size=64, class_names=("a", "b", "c", "d", "e", "f"))
    return build_reference(cfg).eval()


def test_ignored_layers_untouched_and_round_to_respected():
    model = _tiny_reference()
    cfg = PruneConfig(ratio=0.4, ignored=["stem.*", "heads.*"])
    pruned = prune_once(model, cfg, 0.4, 16, 64, None)
    orig = dict(model.named_modules())
    outputs = output_convs(model, torch.zeros(1, 3, 64, 64))
    assert outputs == sorted(f"heads.{i}.{b}.1" for i in range(len(model.heads)) for b in ("box", "cls"))
    changed = 0
    for name, m in pruned.named_modules():
        if not isinstance(m, nn.Conv2d):
            continue
        if name.startswith(("stem", "heads")) or name in outputs:
            assert m.out_channels == orig[name].out_channels, name  # ignored: output channels kept
        elif m.out_channels != orig[name].out_channels:
            changed += 1
            assert m.out_channels % 16 == 0, (name, m.out_channels)
    assert changed > 5
    assert count(pruned, 64)[0] < 0.8 * count(model, 64)[0]
    assert pruned(torch.rand(1, 3, 64, 64)).shape == model(torch.rand(1, 3, 64, 64)).shape


def test_kept_channels_round_to_the_nearest_multiple():
    assert kept_channels(16, 1, 8) == 16  # a 5% ratio must not halve a small layer (torch-pruning floors: 8)
    assert kept_channels(64, 13, 8) == 48  # 51 -> 48
    assert kept_channels(64, 10, 8) == 56  # 54 -> 56
    assert kept_channels(32, 30, 8) == 8  # at least one multiple
    assert kept_channels(8, 4, 8) == 8  # a layer of one multiple is not pruned


def test_small_ratio_keeps_small_layers():
    model = _tiny_reference()
    pruned = prune_once(model, PruneConfig(ratio=0.05), 0.05, 8, 64, None)
    orig = dict(model.named_modules())
    for name, m in pruned.named_modules():
        if isinstance(m, nn.Conv2d) and orig[name].out_channels <= 16:
            assert m.out_channels == orig[name].out_channels, name


def test_pruned_model_round_trips_weights_only(tmp_path):
    """A channel-pruned reference detector, and one with a residual block dropped too, reload from the file
    `edgeopt eval` opens (weights_only) with the same outputs."""
    from edgeopt.models.depth import drop_blocks, residual_blocks

    pruned = prune_once(_tiny_reference(), PruneConfig(ratio=0.3), 0.3, 8, 64, None)
    shallower = prune_once(drop_blocks(_tiny_reference(), residual_blocks(_tiny_reference())[:1]),
                           PruneConfig(ratio=0.3), 0.3, 8, 64, None)
    x = torch.rand(1, 3, 64, 64)
    for name, model in (("pruned", pruned), ("shallower", shallower)):
        path = save_detector(model, tmp_path / f"{name}.pt")
        data = torch.load(path, weights_only=True)
        assert "channels" in data
        assert torch.equal(load_detector(path)(x), model(x))
    assert len(torch.load(tmp_path / "shallower.pt", weights_only=True)["identity"]) == 1


def test_taylor_importance_and_distillation_recovery(synth_dataset):
    from edgeopt.data.yolo import read_yolo

    import numpy as np

    teacher = _tiny_reference()
    images = (np.random.default_rng(0).random((8, 64, 64, 3)) * 255).astype(np.uint8)
    student = prune_once(teacher, PruneConfig(ratio=0.3, importance="taylor"), 0.3, 8, 64, images)
    train = read_yolo(synth_dataset, "train")
    train.labelled = False  # distillation must work without labels
    cfg = PruneConfig(recovery=RecoveryConfig(mode="auto", epochs=1, batch=8))
    calls = []
    student, info = recover(student, teacher, cfg, 64, train, lambda m: calls.append(1) or {"map50_95": 0.0},
                            lambda msg: None)
    assert info["mode"] == "distill" and info["epochs"] == 1 and len(calls) == 2


def _snapshots(scores):
    """An evaluation stub scoring successive calls with ``scores`` and keeping a copy of each model it saw."""
    seen = []

    def evaluate(model):
        seen.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return {"map50_95": scores[len(seen) - 1], "map50": 0.0}

    return evaluate, seen


def test_recovery_keeps_the_best_epoch_and_training_moves_the_weights(synth_dataset):
    """Distillation changes the weights and lowers the loss; the epoch that scored best is the one returned."""
    import numpy as np

    from edgeopt.data.yolo import read_yolo

    teacher = _tiny_reference()
    student = prune_once(teacher, PruneConfig(ratio=0.3), 0.3, 8, 64, None)
    train = read_yolo(synth_dataset, "train")
    train.labelled = False
    before = {k: v.clone() for k, v in student.state_dict().items()}
    evaluate, seen = _snapshots([0.0, 0.2, 0.5, 0.1])  # the initial model, then epochs 1, 2, 3
    cfg = PruneConfig(recovery=RecoveryConfig(mode="distill", epochs=3, batch=4, lr=3e-3))
    student, info = recover(student, teacher, cfg, 64, train, evaluate, lambda msg: None)
    assert info["mode"] == "distill" and info["epochs"] == 3 and info["best_map50_95"] == 0.5
    final = student.state_dict()
    assert all(torch.equal(final[k], seen[2][k]) for k in final)  # epoch 2's weights, not the last epoch's
    assert any(not torch.equal(final[k], before[k]) for k in final if final[k].is_floating_point())
    losses = [h["loss"] for h in info["history"][1:]]
    assert losses[-1] < losses[0], losses  # the distillation loss falls epoch after epoch


def test_finetune_recovery_uses_the_families_loss_with_labels(synth_dataset):
    """With labels and a family that has a training loss (the reference), recovery fine-tunes on it."""
    from edgeopt.data.yolo import read_yolo
    from edgeopt.models.sources.reference.source import TRAINING

    teacher = _tiny_reference()
    student = prune_once(teacher, PruneConfig(ratio=0.3), 0.3, 8, 64, None)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    evaluate, _ = _snapshots([0.0, 0.3])
    cfg = PruneConfig(recovery=RecoveryConfig(mode="auto", epochs=1, batch=8))
    student, info = recover(student, teacher, cfg, 64, read_yolo(synth_dataset, "train"), evaluate,
                            lambda msg: None, TRAINING)
    assert info["mode"] == "finetune" and info["best_map50_95"] == 0.3
    assert any(not torch.equal(v, before[k]) for k, v in student.state_dict().items() if v.is_floating_point())
    with pytest.raises(Exception, match="needs a detector with a training loss"):
        recover(student, teacher, PruneConfig(recovery=RecoveryConfig(mode="finetune", epochs=1)), 64,
                read_yolo(synth_dataset, "train"), evaluate, lambda msg: None, None)


def test_an_unpruned_and_a_pruned_run_share_the_work_before_pruning(tmp_path):
    """Recovery data shapes only the pruned model: calibration, the reference and its float mAP are computed once
    for a run without pruning and one with it (as in a sweep over prune ratios)."""
    from edgeopt.config.load import load_config
    from edgeopt.pipeline import run_pipeline
    from helpers import write_config

    cache = tmp_path / "cache"
    recovery = {"mode": "none", "data": {"path": "synthetic", "split": "train", "seed": 5, "images": 8}}
    for stages in (["calibrate", "export", "benchmark"], ["calibrate", "prune", "export", "benchmark"]):
        folder = tmp_path / str(len(stages))
        folder.mkdir()
        config = write_config(folder, stages=stages, prune={"ratio": 0.05, "recovery": recovery},
                              targets=[{"name": "onnxruntime", "precisions": ["fp32"]}])
        result = run_pipeline(load_config(config), cache_dir=cache)
    assert not [e for e in result.cache_misses if e.startswith(("calibrate/", "float-map/"))], result.cache_misses
    assert len(list((cache / "calibrate").iterdir())) == 1


def test_prune_input_size_prunes_once_for_every_exported_size(tmp_path):
    """With prune.input_size, runs differing only in model.input_size share one pruned model (a cache hit), and
    the weights pruned at one size export and pass parity at another."""
    from edgeopt.config.load import load_config
    from edgeopt.pipeline import run_pipeline
    from helpers import write_config

    cache = tmp_path / "cache"
    prune = {"ratio": 0.05, "input_size": 320, "recovery": {"mode": "none"}}
    results = []
    for size in (320, 256):
        folder = tmp_path / str(size)
        folder.mkdir()
        config = write_config(folder, stages=["calibrate", "prune", "export", "benchmark"], prune=prune,
                              model={"source": "reference", "input_size": size},
                              targets=[{"name": "onnxruntime", "precisions": ["fp32"]}])
        results.append(run_pipeline(load_config(config), cache_dir=cache))
    first, second = results
    pruned = [e for e in first.cache_misses if e.startswith("prune/")]
    assert len(pruned) == 1 and pruned[0] in second.cache_hits, (first.cache_misses, second.cache_hits)
    assert len(list((cache / "prune").iterdir())) == 1
    for result in results:
        rows = [r for r in result.records if r["status"] != "reference"]
        assert rows and all(r["status"] == "passed" for r in rows), [r.get("reason") for r in rows]
        assert result.run_info["prune"]["after_prune"]["macs"] < result.run_info["prune"]["before"]["macs"]
    # the artifact at 256 is judged against the pruned torch model at 256, not the prune report's figure at 320
    assert "at_exported_size" not in first.run_info["prune"]
    at_256 = second.run_info["prune"]["at_exported_size"]
    assert at_256["input_size"] == 256 and at_256["map50_95"] != second.run_info["prune"]["after_recovery"]["map50_95"]
    row = next(r for r in second.records if r["target"] == "onnxruntime")
    assert abs(row["map50_95"] - at_256["map50_95"]) < 0.005


def test_prunable_blocks_split_the_prunable_layers_in_order_into_blocks_of_similar_macs():
    """Every group root pruning may cut is in exactly one block, kept layers in none, in module order; a
    ratio on one block's roots prunes that block and nothing else."""
    from edgeopt.models.pruning import prunable_blocks

    model = _tiny_reference()
    cfg = PruneConfig(ratio=0.0, ignored=["stem.*", "heads.*"])
    blocks = prunable_blocks(model, cfg, 64, 3)
    names = [n for block in blocks for n in block]
    order = [n for n, _ in model.named_modules()]
    assert len(blocks) == 3 and all(blocks) and len(set(names)) == len(names)
    assert names == sorted(names, key=order.index)
    assert not any(n.startswith(("stem", "heads")) for n in names)
    everything = prune_once(model, cfg, 0.5, 1, 64, None)  # multiples of 1: no layer too small to cut
    changed = {n for n, m in everything.named_modules()
               if isinstance(m, nn.Conv2d) and m.out_channels != dict(model.named_modules())[n].out_channels}
    assert set(names) <= changed  # a uniform cut thins every root (and the layers coupled to them)
    only_last = prune_once(model, cfg.model_copy(update={"overrides": dict.fromkeys(blocks[-1], 0.5)}), 0.0, 1, 64, None)
    thinned = {n for n, m in only_last.named_modules()
               if isinstance(m, nn.Conv2d) and m.out_channels != dict(model.named_modules())[n].out_channels}
    assert set(blocks[-1]) <= thinned and not thinned & set(names) - set(blocks[-1])
    assert len(prunable_blocks(model, cfg, 64, 100)) == len(names)  # no more blocks than layers


def test_output_distortion_is_zero_for_the_same_model_and_grows_with_the_cut():
    from edgeopt.models.pruning import output_distortion

    model = _tiny_reference()
    images = torch.randint(0, 256, (4, 64, 64, 3), dtype=torch.uint8).numpy()
    cfg = PruneConfig(ratio=0.0, ignored=["stem.*", "heads.*"])
    assert output_distortion(model, prune_once(model, cfg, 0.0, 8, 64, None), images) == pytest.approx(0.0, abs=1e-9)
    light, heavy = (output_distortion(model, prune_once(model, cfg, r, 8, 64, None), images) for r in (0.25, 0.75))
    assert 0 < light < heavy


def test_drop_blocks_ships_fewer_operators_and_refuses_what_it_cannot_do(tmp_path):
    """prune.drop_blocks: the least distorting residual blocks are recorded and gone from the exported graph
    (fewer operators than the unpruned artifact), the manifest names them, and the rows pass parity against the
    depth-pruned model reloaded from its checkpoint. A block holding a convolution prune.overrides names is not
    dropped (the CLI's refusals: tests/test_cli_errors.py)."""
    import json

    import onnx

    from edgeopt.config.load import load_config
    from edgeopt.pipeline import run_pipeline
    from helpers import write_config

    targets = [{"name": "onnxruntime", "precisions": ["fp32"]}]
    operators = {}
    for drop in (0, 2):
        folder = tmp_path / str(drop)
        folder.mkdir()
        config = write_config(folder, stages=["calibrate", "prune", "export"], targets=targets,
                              prune={"ratio": 0.0, "drop_blocks": drop, "recovery": {"mode": "none"}})
        result = run_pipeline(load_config(config), cache_dir=tmp_path / "cache")
        row = next(r for r in result.records if r["target"] == "onnxruntime")
        assert row["status"] == "passed", row.get("reason")
        bundle = tmp_path / "cache" / "export" / row["cache_key"]
        operators[drop] = sum(len(onnx.load(str(f)).graph.node) for f in bundle.glob("*.onnx"))
        lineage = json.loads((bundle / "edgeopt.json").read_text())["lineage"]["pruning"]
    depth = result.run_info["prune"]["depth"]
    assert len(depth["dropped"]) == 2 and lineage["dropped_blocks"] == depth["dropped"]
    assert depth["dropped"] == [b["block"] for b in depth["ranked"][:2]]  # the least distorting (none nested here)
    assert operators[2] < operators[0]
    assert "Residual blocks dropped whole before channel pruning (prune.drop_blocks 2)" in \
        (tmp_path / "2" / "run" / "report.md").read_text()
    assert result.run_info["prune"]["after_prune"]["macs"] < result.run_info["prune"]["before"]["macs"]
    first = depth["dropped"][0]  # a block whose convolutions prune.overrides names is the user's to cut: kept
    overridden = write_config(tmp_path, stages=["calibrate", "prune", "export"], targets=targets,
                              prune={"ratio": 0.1, "drop_blocks": 2, "overrides": {f"{first}.*": 0.2},
                                     "recovery": {"mode": "none"}})
    depth = run_pipeline(load_config(overridden), cache_dir=tmp_path / "cache").run_info["prune"]["depth"]
    assert len(depth["dropped"]) == 2 and first not in depth["dropped"]
    assert first not in [b["block"] for b in depth["ranked"]]
