"""Ultralytics YOLO checkpoints end to end (runs in .venv-ultralytics; skipped where Ultralytics is missing).

YOLOv8n and YOLO11n are built from Ultralytics' own yaml files and trained briefly on a generated
dataset (nothing downloaded); the checkpoints Ultralytics writes are what edgeopt loads. The dataset is the
generator's ``easy`` difficulty: on the hard one a few minutes of training from scratch leave mAP50-95 ~0.05 and
scores near the threshold, and such a model says little about int8 or pruning. YOLO26n needs far longer to
learn (10 to 25 epochs leave it at mAP 0), so the one trained by Ultralytics for 100 epochs on the same data ships
in tests/models/data (scripts/make_yolo26_fixture.py).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

if os.environ.get("EDGEOPT_REQUIRE_ULTRALYTICS") == "1":  # CI: a missing Ultralytics is a failure, not a skip
    import ultralytics  # noqa: F401
else:
    ultralytics = pytest.importorskip("ultralytics")

from edgeopt.config.load import load_config  # noqa: E402
from edgeopt.config.schema import DatasetConfig, ModelConfig  # noqa: E402
from edgeopt.pipeline import run_pipeline  # noqa: E402
from edgeopt.data.synthetic import generate  # noqa: E402
from edgeopt.errors import ModelError  # noqa: E402
from edgeopt.eval.coco_map import coco_map  # noqa: E402
from edgeopt.bundle.decode import Detections  # noqa: E402
from edgeopt.models.sources import load_model  # noqa: E402
from edgeopt.data.open import open_dataset  # noqa: E402

SIZE = 160
TARGETS = ["onnxruntime", "openvino", "tflite", "ncnn"]


def by_model(arch: str, *marks) -> pytest.param:
    """``arch`` as a test parameter, grouped with every test of that model: run with ``-n 2 --dist loadgroup``
    (scripts/test.sh), each worker trains only the models of the groups it runs."""
    return pytest.param(arch, marks=[pytest.mark.xdist_group(arch), *marks])


ARCHS = [by_model("yolov8n"), by_model("yolo11n")]


@pytest.fixture(scope="session")
def yolo_env(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ultralytics")
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ["YOLO_CONFIG_DIR"] = str(root / "config")
    return root


@pytest.fixture(scope="session")
def yolo_data(yolo_env) -> Path:
    # 128 validation images: on 32, int8 and fp32 of one model differed by up to 0.7 pt either way (noise above
    # a half-point budget); the first 32 are the same images (each is generated from its own index)
    return generate(yolo_env / "data", train=64, val=128, seed=0, difficulty="easy")


@pytest.fixture(scope="session")
def train_yolo(yolo_env, yolo_data):
    """Train an architecture once per session with Ultralytics' own trainer; returns its last.pt."""
    done: dict[str, Path] = {}

    def train(arch: str, epochs: int) -> Path:
        if arch not in done:
            from ultralytics import YOLO

            YOLO(f"{arch}.yaml").train(data=str(yolo_data), epochs=epochs, imgsz=SIZE, batch=16, workers=0,
                                       device="cpu", project=str(yolo_env / "runs"), name=arch, exist_ok=True,
                                       plots=False, val=False, amp=False, verbose=False, warmup_epochs=1,
                                       cache="ram", close_mosaic=5, seed=0, deterministic=True)
            done[arch] = yolo_env / "runs" / arch / "weights" / "last.pt"
        return done[arch]

    return train


def ultralytics_val(checkpoint: Path, data: Path, out: Path) -> tuple[float, float]:
    """Ultralytics' own validation (square letterbox as deployed, its default NMS): (its mAP50-95, the mAP50-95
    of its predictions scored by pycocotools).

    The second is the like-for-like figure: Ultralytics integrates AP its own way (0.229 where COCO's 101-point
    rule gives 0.252 on the same predictions, measured), and scores COCO itself with pycocotools the same way.
    """
    from ultralytics import YOLO

    metrics = YOLO(str(checkpoint)).val(data=str(data), imgsz=SIZE, batch=1, workers=0, device="cpu", rect=False,
                                        conf=0.001, iou=0.7, plots=False, verbose=False, save_json=True,
                                        project=str(out), name="val", exist_ok=True)
    by_image: dict[str, list[dict]] = {}
    for p in json.loads((out / "val" / "predictions.json").read_text()):
        by_image.setdefault(str(p["image_id"]), []).append(p)
    dataset = open_dataset(DatasetConfig(path=str(data), split="val"))
    detections = []
    for sample in dataset.samples:
        rows = by_image.get(Path(sample.image).stem, [])
        boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (r["bbox"] for r in rows)]).reshape(-1, 4)
        detections.append(Detections(boxes, np.array([r["score"] for r in rows]),
                                     np.array([r["category_id"] - 1 for r in rows], int)))  # ids are 1-based there
    return float(metrics.box.map), coco_map(dataset, detections)["map50_95"]


def write_config(path: Path, checkpoint: Path, data: Path, stages: list[str], **extra) -> Path:
    cfg = {
        "version": 1, "name": path.stem, "output": str(path.parent / f"out-{path.stem}"), "stages": stages,
        "model": {"source": str(checkpoint), "trust_pickle": True},
        "data": {"calibration": {"path": str(data), "split": "train", "images": 32},
                 "validation": {"path": str(data), "split": "val"}},
        "calibrate": {"images": 32, "parity_images": 16},
        "targets": [{"name": t, "precisions": ["fp32", "int8"]} for t in TARGETS],
        "benchmark": {"warmup": 2, "runs": 50, "threads": 1, "map": True},
        **extra,
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.xdist_group("yolov8n")
def test_wrapper_output_is_ultralytics_prediction(train_yolo):
    det = load_model(ModelConfig(source=str(train_yolo("yolov8n", 40)), trust_pickle=True))
    assert det.input_size == SIZE and det.class_names[0] == "circle"
    x = torch.rand(2, 3, SIZE, SIZE)
    head = det.module.model.model[-1]
    with torch.no_grad():
        ours = det.module(x)
        head.export = False
        theirs = det.module.model(x)[0]  # Ultralytics' own decoded output, boxes in pixels
        head.export = True
    torch.testing.assert_close(ours[:, :4] * SIZE, theirs[:, :4], atol=1e-3, rtol=1e-5)
    torch.testing.assert_close(ours[:, 4:], theirs[:, 4:])


@pytest.fixture(scope="session")
def plain_run(train_yolo, yolo_data, tmp_path_factory):
    """calibrate -> quantize -> export -> benchmark, fp32 + int8 on every target, once per architecture; int8 with
    no rule keeping anything float (``keep_head_float: false``), searched to a 0.5 pt mAP budget."""
    runs: dict[str, dict] = {}

    def run(arch: str) -> dict:
        if arch not in runs:
            cfg = write_config(tmp_path_factory.mktemp(arch) / "plain.yaml", train_yolo(arch, 40), yolo_data,
                               ["calibrate", "quantize", "export", "benchmark"],
                               quantize={"keep_head_float": False, "max_drop": 0.5})
            result = run_pipeline(load_config(cfg))
            runs[arch] = {(r["target"], r["precision"]): {**r, "manifest": _cached_manifest(result, r)}
                          for r in result.records if r.get("cache_key")}
            runs[arch][("torch", "fp32")] = next(r for r in result.records if r["status"] == "reference")
        return runs[arch]

    return run


@pytest.mark.parametrize("arch", ARCHS)
def test_fp32_on_every_runtime_scores_like_ultralytics_val(arch, plain_run, train_yolo, yolo_data, tmp_path):
    rows = plain_run(arch)
    own_metric, theirs = ultralytics_val(train_yolo(arch, 40), yolo_data, tmp_path)
    ours = {t: rows[(t, "fp32")]["map50_95"] for t in TARGETS}
    print(f"{arch}: Ultralytics val mAP50-95 {own_metric:.4f} (its AP rule), {theirs:.4f} (its predictions, "
          f"pycocotools); edgeopt fp32 per runtime {ours}")
    assert all(rows[(t, "fp32")]["status"] == "passed" for t in TARGETS)
    assert theirs > 0.1  # the brief training learned to detect, so the comparison means something
    for target, value in ours.items():
        assert abs(value - theirs) <= 0.010, f"{target}: {value:.4f} vs Ultralytics {theirs:.4f}"


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("target", TARGETS)
def test_int8_meets_a_half_point_budget_with_no_hand_written_rule(arch, target, plain_run):
    """Measured on this AVX2 CPU (128 validation images): YOLOv8n / YOLO11n lose (pt) ONNX Runtime 0.14 / 0.29,
    OpenVINO 0.38 / 0.39, TFLite 0.24 / -0.04, ncnn -0.13 / 0.11. On a CPU with AMX int8, OpenVINO with NNCF's fast
    bias correction: YOLOv8n 0.51-0.62 at every step (failed), YOLO11n 0.29; with the full one (the default now)
    0.29 / 0.04 (YOLO11n at the decode step, 0.59 before it)."""
    row = plain_run(arch)[(target, "int8")]
    search = row["manifest"]["quantization"]["accuracy_search"]
    print(f"{arch} {target} int8: " + "; ".join(f"{s['step'][:40]}: {s['drop_points']:.2f} pt" for s in search["steps"]))
    assert row["status"] == "passed", row["reason"]
    assert not search["steps"][0]["keep_head_float"] and search["met"]
    assert row["parity_box_agreement"] >= 0.75 and row["map50_95_drop"] <= 0.005, row


@pytest.mark.timeout(1800)  # prune, distil and eight exports: ~10 min alone, over 900 s on a loaded machine
# YOLO11n is marked slow (run with -m slow): its pruned model has nothing left to compare (every row unverified,
# asserted below), and its ~9 minutes kept CI over its time budget
@pytest.mark.parametrize("arch", [by_model("yolov8n"), by_model("yolo11n", pytest.mark.slow)])
def test_pruned_and_distilled_exports_to_every_target(arch, train_yolo, yolo_data, tmp_path):
    """C2f/C3k2 normalised, head and attention kept, recovered without Ultralytics' trainer, then every target.

    YOLOv8n: ``recovery.mode: auto`` with labelled data fine-tunes with Ultralytics' own loss (plus distillation
    from the unpruned model); YOLO11n: distillation alone."""
    mode = "auto" if arch == "yolov8n" else "distill"
    pruned = write_config(tmp_path / "pruned.yaml", train_yolo(arch, 40), yolo_data,
                          ["calibrate", "quantize", "prune", "export"],
                          # BN scale (network slimming) keeps these nano models best; recovery at a low rate,
                          # 8 epochs of the 64 training images (32 steps)
                          prune={"ratio": 0.2, "importance": "bn_scale",
                                 "recovery": {"mode": mode, "epochs": 8, "lr": 2e-4, "batch": 16,
                                              "data": {"path": str(yolo_data), "split": "train"}}})
    result = run_pipeline(load_config(pruned))
    report = result.run_info["prune"]
    print(f"{arch} pruned: MACs {report['before']['macs'] / 1e6:.0f}M -> {report['after_recovery']['macs'] / 1e6:.0f}M, "
          f"mAP50-95 {report['before']['map50_95']:.4f} -> {report['after_prune']['map50_95']:.4f} -> "
          f"{report['after_recovery']['map50_95']:.4f} after {report['recovery']['mode']}")
    assert report["macs_reduction"] > 0.1
    assert report["recovery"]["mode"] == ("finetune" if arch == "yolov8n" else "distill")
    # distillation recovers accuracy, and the model still detects, so the parity below compares real boxes
    assert report["after_recovery"]["map50_95"] >= report["after_prune"]["map50_95"] + 0.02
    assert len(result.records) == 2 * len(TARGETS)
    parities = [_cached_manifest(result, r)["parity"] for r in result.records]
    print(f"{arch} pruned: verdicts {[r['status'] for r in result.records]}, detections compared "
          f"{[(p['boxes_compared'], round(p['threshold'], 3)) for p in parities]}")
    for row, par in zip(result.records, parities):  # the exports match the pruned model, number for number
        tol = par["tolerance"]
        assert par["score_cosine"] >= tol["min_score_cosine"] and par["box_max_abs"] <= tol["max_box_error"], row
    if arch == "yolov8n":  # it still detects: every row compared real detections and passed
        assert [r["status"] for r in result.records] == ["passed"] * len(result.records), result.records
        assert all(p["boxes_compared"] >= p["tolerance"]["min_boxes"] for p in parities), parities
    else:  # measured: the distilled YOLO11n (mAP 0.103) scores 0.002-0.042 at most on the 16 parity images, so
        # no detection is left to compare; the gate says so instead of passing on nothing (as it once did)
        assert [r["status"] for r in result.records] == ["unverified"] * len(result.records), result.records


@pytest.mark.parametrize("arch", ["yolov8n", "yolo26n"])
def test_label_fine_tuning_uses_ultralytics_own_loss(arch, yolo_env):
    """The recovery loss of an Ultralytics detector is the one its trainer computes (``DetectionModel.loss``:
    v8DetectionLoss, or E2ELoss with both heads for YOLO26) on the same batch, and it trains the model."""
    from ultralytics import YOLO

    from edgeopt.models.sources.ultralytics.training import TRAINING, ultralytics_batch
    from edgeopt.models.sources.ultralytics.wrapper import UltralyticsDetector

    torch.manual_seed(0)
    model = UltralyticsDetector(YOLO(f"{arch}.yaml").model, SIZE).train()
    x = torch.rand(2, 3, SIZE, SIZE)
    targets = [torch.tensor([[0, 10, 20, 60, 90.0], [3, 80, 80, 150, 120]]), torch.zeros(0, 5)]
    raw = TRAINING.raw_forward(model, x)
    ours = TRAINING.loss(model, raw, targets, SIZE)
    theirs, _ = model.model.loss(ultralytics_batch(targets, SIZE), raw)
    assert torch.allclose(ours, theirs.sum()), (ours, theirs)
    assert len(TRAINING.deploy(model, raw, SIZE)) == (2 if arch == "yolo26n" else 1)
    ours.backward()
    assert model.model.model[0].conv.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("arch", ["yolov8n", "yolo26n"])
def test_pruned_head_inputs_imitate_the_unpruned_ones(arch, yolo_env):
    """The head's input features are found in the wrapped model and in its pruned (C2f-normalised) copy, one per
    scale on the training pass and on the teacher's pass, and the imitation loss trains the pruned model."""
    from ultralytics import YOLO

    from edgeopt.config.schema import PruneConfig
    from edgeopt.models.pruning import head_outputs, prune_once
    from edgeopt.models.sources.ultralytics.normalize import normalize_for_pruning
    from edgeopt.models.sources.ultralytics.training import TRAINING
    from edgeopt.models.sources.ultralytics.wrapper import UltralyticsDetector, head_inputs, prune_keep
    from edgeopt.models.detector import PruningHints
    from edgeopt.training.imitate import FeatureImitation

    torch.manual_seed(0)
    teacher = UltralyticsDetector(YOLO(f"{arch}.yaml").model, SIZE).eval()
    hints = PruningHints(keep=prune_keep(teacher), normalize=normalize_for_pruning, features=head_inputs(teacher))
    student = prune_once(teacher, PruneConfig(ratio=0.3), 0.3, 8, SIZE, None, hints).train()
    with FeatureImitation(student, teacher, hints.features, SIZE) as imitation:
        assert len(imitation.adaptors) == 3  # three scales
        # YOLOv8n's neck outputs lose channels (64/128/256 -> 48/88/176), so they are adapted; YOLO26n's keep theirs
        assert bool(imitation.parameters()) == (arch == "yolov8n")
        x = torch.rand(2, 3, SIZE, SIZE)
        with torch.no_grad():
            head_outputs(teacher, x)
        TRAINING.raw_forward(student, x)
        loss = imitation.loss()
        loss.backward()
    assert loss.item() > 0 and all(p.grad.abs().sum() > 0 for p in imitation.parameters())  # the backbone moved
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())


@pytest.mark.parametrize("arch", ["yolov8n", "yolo11n", "yolo26n"])
def test_residual_blocks_drop_from_every_family_member_and_reload(arch, yolo_env, tmp_path):
    """Depth pruning finds, by tracing, the shortcut bottlenecks of each architecture (and YOLO26's SPPF, which
    adds its input to its output; never an attention block), and the model with the least distorting ones dropped and its channels pruned still
    computes the family's training loss, and reloads from its checkpoint with the same outputs."""
    from ultralytics import YOLO

    from edgeopt.config.schema import PruneConfig
    from edgeopt.models.checkpoint import load_pruned, save_pruned
    from edgeopt.models.depth import choose_blocks, hints_dropping, rank_blocks, residual_blocks
    from edgeopt.models.detector import PruningHints
    from edgeopt.models.pruning import prunable_copy, prune_once
    from edgeopt.models.sources.ultralytics.normalize import normalize_for_pruning
    from edgeopt.models.sources.ultralytics.training import TRAINING
    from edgeopt.models.sources.ultralytics.wrapper import UltralyticsDetector, prune_keep

    torch.manual_seed(0)
    teacher = UltralyticsDetector(YOLO(f"{arch}.yaml").model, SIZE).eval()
    hints = PruningHints(keep=prune_keep(teacher), normalize=normalize_for_pruning)
    prunable = prunable_copy(teacher, hints)
    found = residual_blocks(prunable)
    kinds = {type(prunable.get_submodule(n)).__name__ for n in found}
    assert "Bottleneck" in kinds and kinds <= {"Bottleneck", "SPPF"}, kinds  # YOLO26's SPPF adds its input too
    images = np.random.default_rng(0).integers(0, 256, (2, SIZE, SIZE, 3), dtype=np.uint8)
    ranked = rank_blocks(teacher, hints, list(hints.keep), images)
    assert {b["block"] for b in ranked} <= set(found)
    dropped = choose_blocks(ranked, 2)
    student = prune_once(teacher, PruneConfig(ratio=0.2), 0.2, 8, SIZE, None, hints_dropping(hints, dropped))
    assert all(isinstance(student.get_submodule(n), torch.nn.Identity) for n in dropped)
    x = torch.rand(2, 3, SIZE, SIZE)
    targets = [torch.tensor([[0, 10, 20, 60, 90.0]]), torch.zeros(0, 5)]
    loss = TRAINING.loss(student.train(), TRAINING.raw_forward(student, x), targets, SIZE)
    assert torch.isfinite(loss) and loss.item() > 0
    loaded = load_pruned(save_pruned(student.eval(), tmp_path / "pruned.pt"), teacher, normalize_for_pruning)
    with torch.no_grad():
        assert torch.allclose(loaded(x), student(x), atol=1e-5)


def _cached_manifest(result, row) -> dict:
    """A row's bundle manifest in the cache (shipped or not)."""
    return json.loads((result.output / "cache" / "export" / row["cache_key"] / "edgeopt.json").read_text())


# slow (run with -m slow): two ExecuTorch exports and their mAP add ~10 min to the yolov8n worker, which would take
# CI past its 50-minute budget; measured passing: fp32 drop 0.00 pt, int8 -0.62 pt
@pytest.mark.slow
@pytest.mark.timeout(1800)  # the first test of its group on a worker trains the model (~8 min) before exporting
@pytest.mark.xdist_group("yolov8n")
def test_executorch_fp32_and_int8_pass_on_yolov8n_within_a_point(train_yolo, yolo_data, tmp_path):
    """ExecuTorch (XNNPACK) on a third-party detector: fp32 matches the checkpoint, int8 (the default plan: head
    tail float) passes parity within 1.0 mAP50-95 point, and its delegation is recorded."""
    cfg = write_config(tmp_path / "et.yaml", train_yolo("yolov8n", 40), yolo_data,
                       ["calibrate", "quantize", "export", "benchmark"],
                       targets=[{"name": "executorch", "precisions": ["fp32", "int8"]}])
    result = run_pipeline(load_config(cfg))
    rows = {r["precision"]: r for r in result.records if r["target"] == "executorch"}
    print("yolov8n executorch: " + "; ".join(f"{p} {r['status']} mAP50-95 {r.get('map50_95')} drop "
                                             f"{r.get('map50_95_drop')} {r.get('latency_ms_median')} ms"
                                             for p, r in rows.items()))
    assert {p: r["status"] for p, r in rows.items()} == {"fp32": "passed", "int8": "passed"}, rows
    assert abs(rows["fp32"]["map50_95_drop"]) < 0.001 and rows["int8"]["map50_95_drop"] <= 0.010, rows
    delegation = _cached_manifest(result, rows["int8"])["runtime"]["delegation"]
    assert delegation["delegated_share"] > 0.5 and delegation["xnnpack_ops"], delegation


@pytest.mark.xdist_group("yolov8n")
def test_onnx_exported_by_ultralytics_matches_the_checkpoint(plain_run, train_yolo, yolo_data, tmp_path):
    """Ultralytics' own ONNX export as the model: class names from its metadata, same mAP as the .pt route."""
    from ultralytics import YOLO

    checkpoint = tmp_path / "yolov8n.pt"
    checkpoint.write_bytes(train_yolo("yolov8n", 40).read_bytes())
    onnx_path = Path(YOLO(str(checkpoint)).export(format="onnx", imgsz=SIZE))
    targets = ["onnxruntime", "openvino"]  # tflite and ncnn convert from torch, not ONNX
    cfg = write_config(tmp_path / "onnx.yaml", onnx_path, yolo_data, ["calibrate", "quantize", "export", "benchmark"])
    raw = yaml.safe_load(cfg.read_text())
    raw["model"] = {"source": str(onnx_path)}
    raw["targets"] = [{"name": t, "precisions": ["fp32", "int8"]} for t in targets]
    cfg.write_text(yaml.safe_dump(raw))
    result = run_pipeline(load_config(cfg))
    rows = {(r["target"], r["precision"]): r for r in result.records}
    failed = [f"{t} {p}: {r['reason']}" for (t, p), r in rows.items() if r["status"] not in ("passed", "reference")]
    assert not failed
    via_checkpoint = plain_run("yolov8n")[("onnxruntime", "fp32")]["map50_95"]
    for target in targets:
        assert abs(rows[(target, "fp32")]["map50_95"] - via_checkpoint) <= 0.002
        assert rows[(target, "int8")]["map50_95_drop"] <= 0.02
    manifest = json.loads((result.output / "artifacts" / "onnxruntime-fp32" / "edgeopt.json").read_text())
    assert manifest["class_names"][0] == "circle"


# A YOLO26n trained by Ultralytics for 100 epochs on ``yolo_data`` (scripts/make_yolo26_fixture.py): its one-to-many
# head scores ~7 points above its end-to-end head, and its own flag names the one-to-many head.
YOLO26_CHECKPOINT = Path(__file__).parent / "data" / "yolo26n_shapes.pt"


def run_yolo26(yolo_data: Path, out: Path, head: str, precisions: list[str], **extra):
    cfg = write_config(out / f"yolo26-{head}.yaml", YOLO26_CHECKPOINT, yolo_data,
                       ["calibrate", "quantize", "export", "benchmark"],
                       model={"source": str(YOLO26_CHECKPOINT), "trust_pickle": True, "head": head},
                       targets=[{"name": t, "precisions": precisions} for t in TARGETS], **extra)
    return run_pipeline(load_config(cfg))


@pytest.mark.xdist_group("yolo26n")
@pytest.mark.timeout(1800)  # eight exports (two TFLite int8 searches) and their mAP: ~6 min, more when loaded
def test_yolo26_head_is_chosen_by_measurement_and_every_row_keeps_its_accuracy(yolo_data, tmp_path):
    """Both heads scored; the better one-to-many head is exported on every target (ONNX Runtime, OpenVINO and
    TFLite could run the end-to-end one); fp32 within 0.5 pt and int8 (searched to a 1.0 pt budget) within 1.0 pt
    of the reference, which is scored with its better head."""
    result = run_yolo26(yolo_data, tmp_path, "auto", ["fp32", "int8"], quantize={"max_drop": 1.0})
    rows = {(r["target"], r["precision"]): r for r in result.records}
    reference = rows[("torch", "fp32")]
    scores = reference["heads_map50_95"]
    print(f"YOLO26n heads mAP50-95 {scores}; rows "
          f"{[(t, p, r['status'], r.get('map50_95_drop')) for (t, p), r in rows.items()]}")
    assert scores["nms"] - scores["end2end"] > 0.03 and reference["head"] == "nms"
    assert reference["map50_95"] == scores["nms"]
    for target in TARGETS:
        for precision, budget in (("fp32", 0.005), ("int8", 0.010)):
            row = rows[(target, precision)]
            assert row["status"] == "passed" and row["head"] == "nms", row
            assert row["map50_95_drop"] <= budget, row
        head = _cached_manifest(result, rows[(target, "fp32")])["head"]
        assert head["choice"]["head"] == "nms" and head["choice"]["map50_95"] == scores
        assert "over the fp32 budget" in head["choice"]["reason"] and head["saved_head"] == "nms"


@pytest.mark.xdist_group("yolo26n")
def test_yolo26_forced_end_to_end_head_is_faithful_but_fails_the_map_budget(yolo_data, tmp_path):
    """The case that shipped green before: the end-to-end export matches its torch head (parity passes) and is
    ~7 points less accurate than the model, so the mAP budget fails it; ncnn cannot convert that head and exports
    the one-to-many one, which passes."""
    result = run_yolo26(yolo_data, tmp_path, "end2end", ["fp32"])
    for row in (r for r in result.records if r["status"] != "reference"):
        manifest = _cached_manifest(result, row)
        assert manifest["parity"]["verdict"] == "passed", row
        if row["target"] == "ncnn":
            assert row["head"] == "nms" and "pnnx" in manifest["head"]["reason"] and row["status"] == "passed"
            assert manifest["output"]["decoder"]["layout"] == "dense"
        else:
            assert row["head"] == "end2end" and manifest["output"]["decoder"]["layout"] == "end2end"
            assert row["status"] == "failed" and "parity.max_map_drop" in row["reason"], row


def test_real_segmentation_checkpoint_is_refused(yolo_env):
    from ultralytics import YOLO

    path = yolo_env / "seg.pt"
    YOLO("yolov8n-seg.yaml").save(str(path))
    with pytest.raises(ModelError, match="Ultralytics segmentation checkpoint"):
        load_model(ModelConfig(source=str(path), trust_pickle=True))
