"""Feature imitation: the pruned model's head inputs pulled towards the unpruned model's."""

import copy

import pytest
import torch

from edgeopt.config.schema import PruneConfig, RecoveryConfig
from edgeopt.models.sources.reference.network import ReferenceConfig, build_reference
from edgeopt.models.sources.reference.source import PRUNING, TRAINING
from edgeopt.training.imitate import FeatureImitation

pytest.importorskip("torch_pruning", reason="the 'prune' extra is not installed")

from edgeopt.models.pruning import head_outputs, prune_once  # noqa: E402
from edgeopt.training.recover import recover  # noqa: E402

SIZE = 64


def _tiny_reference() -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = ReferenceConfig(widths=(16, 32, 32, 64, 64), depths=(1, 1, 1, 1), neck=(32, 32, 64), head=32,
                          input_size=SIZE, class_names=("a", "b", "c", "d", "e", "f"))
    return build_reference(cfg).eval()


def _hooks(model: torch.nn.Module) -> int:
    return sum(len(m._forward_pre_hooks) for m in model.modules())


def test_an_unpruned_copy_imitates_perfectly_and_the_hooks_go_on_close():
    teacher = _tiny_reference()
    student = copy.deepcopy(teacher)
    x = torch.rand(2, 3, SIZE, SIZE)
    with FeatureImitation(student, teacher, PRUNING.features, SIZE) as imitation:
        assert len(imitation.adaptors) == 3 and imitation.parameters() == []  # same channels: nothing to adapt
        head_outputs(teacher, x), head_outputs(student, x)
        assert imitation.loss().item() == pytest.approx(0.0, abs=1e-6)
    assert _hooks(student) == 0 and _hooks(teacher) == 0


def test_pruned_features_are_adapted_and_training_closes_the_gap():
    """Where pruning left fewer channels a 1x1 adaptor maps them to the teacher's; minimising the loss over the
    student and adaptors brings the features together."""
    teacher = _tiny_reference()
    student = prune_once(teacher, PruneConfig(ratio=0.5, ignored=list(PRUNING.keep)), 0.5, 8, SIZE, None,
                         PRUNING).train()
    x = torch.rand(4, 3, SIZE, SIZE)
    with FeatureImitation(student, teacher, PRUNING.features, SIZE) as imitation:
        assert any(isinstance(a, torch.nn.Conv2d) for a in imitation.adaptors)
        params = list(student.parameters()) + imitation.parameters()
        optimizer = torch.optim.Adam(params, lr=3e-3)
        losses = []
        for _ in range(60):
            with torch.no_grad():
                head_outputs(teacher, x)
            head_outputs(student, x)
            loss = imitation.loss()
            optimizer.zero_grad()
            loss.backward()
            assert all(p.grad is not None for p in imitation.parameters())
            optimizer.step()
            losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


def test_a_pass_that_records_the_wrong_number_of_features_is_an_error():
    teacher = _tiny_reference()
    student = copy.deepcopy(teacher)
    with FeatureImitation(student, teacher, PRUNING.features, SIZE) as imitation:
        head_outputs(student, torch.rand(1, 3, SIZE, SIZE))  # the teacher did not run
        with pytest.raises(RuntimeError, match="expected 3 features"):
            imitation.loss()


def test_an_unknown_module_name_is_refused_and_leaves_no_hook():
    teacher = _tiny_reference()
    student = copy.deepcopy(teacher)
    with pytest.raises(KeyError, match="heads.7"):
        FeatureImitation(student, teacher, ("heads.0", "heads.7"), SIZE)
    assert _hooks(student) == 0 and _hooks(teacher) == 0
    student.extra = torch.nn.Identity()  # a name the student has and the teacher lacks
    with pytest.raises(KeyError, match="extra"):
        FeatureImitation(student, teacher, ("extra",), SIZE)
    assert _hooks(student) == 0 and _hooks(teacher) == 0


def test_recovery_with_feature_weight_trains_and_leaves_no_hook(synth_dataset):
    """Fine-tuning with the family's loss plus imitation runs, records the weight, and removes its hooks (the
    EMA copy evaluated every epoch never had any)."""
    from edgeopt.data.yolo import read_yolo

    teacher = _tiny_reference()
    student = prune_once(teacher, PruneConfig(ratio=0.3, ignored=list(PRUNING.keep)), 0.3, 8, SIZE, None, PRUNING)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    seen = []

    def evaluate(model):
        seen.append(_hooks(model))
        return {"map50_95": 0.1 * len(seen), "map50": 0.0}

    cfg = PruneConfig(recovery=RecoveryConfig(mode="finetune", epochs=2, batch=8, feature_weight=2.0))
    student, info = recover(student, teacher, cfg, SIZE, read_yolo(synth_dataset, "train"), evaluate,
                            lambda msg: None, TRAINING, PRUNING.features)
    assert info["mode"] == "finetune" and info["feature_weight"] == 2.0 and info["epochs"] == 2
    assert seen == [0, 0, 0]
    assert _hooks(student) == 0 and _hooks(teacher) == 0
    assert any(not torch.equal(v, before[k]) for k, v in student.state_dict().items() if v.is_floating_point())


def test_a_family_without_named_features_matches_outputs_only(synth_dataset):
    from edgeopt.data.yolo import read_yolo

    teacher = _tiny_reference()
    student = prune_once(teacher, PruneConfig(ratio=0.3), 0.3, 8, SIZE, None)
    messages = []
    cfg = PruneConfig(recovery=RecoveryConfig(mode="distill", epochs=1, batch=8, feature_weight=1.0))
    _, info = recover(student, teacher, cfg, SIZE, read_yolo(synth_dataset, "train"),
                      lambda m: {"map50_95": 0.0, "map50": 0.0}, messages.append)
    assert info["feature_weight"] == 0.0
    assert any("names no head features" in m for m in messages)
