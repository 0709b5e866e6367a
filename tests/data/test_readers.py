import json

import numpy as np
import pytest
from PIL import Image

from edgeopt.data.coco import read_coco, write_coco
from edgeopt.data.folder import read_image_folder
from edgeopt.data.load import read_dataset
from edgeopt.data.yolo import read_yolo
from edgeopt.errors import DataError


def test_yolo_coco_round_trip(synth_dataset, tmp_path):
    yolo = read_yolo(synth_dataset, "val")
    coco_file = write_coco(yolo, tmp_path / "instances.json")
    coco = read_coco(coco_file, images_dir=synth_dataset.parent / "images" / "val")
    assert coco.class_names == yolo.class_names
    assert len(coco) == len(yolo)
    for a, b in zip(yolo.samples, coco.samples, strict=True):
        assert a.image.name == b.image.name and (a.width, a.height) == (b.width, b.height)
        np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-3)
        np.testing.assert_array_equal(a.classes, b.classes)


def _mini_yolo(tmp_path, label: str, names=("a", "b")):
    (tmp_path / "images" / "val").mkdir(parents=True)
    (tmp_path / "labels" / "val").mkdir(parents=True)
    Image.new("RGB", (64, 48), (10, 20, 30)).save(tmp_path / "images" / "val" / "x.jpg")
    (tmp_path / "labels" / "val" / "x.txt").write_text(label)
    (tmp_path / "data.yaml").write_text(f"path: .\nval: images/val\nnames: {list(names)}\n")
    return tmp_path / "data.yaml"


def test_yolo_reader_converts_to_pixels(tmp_path):
    ds = read_yolo(_mini_yolo(tmp_path, "1 0.5 0.5 0.5 0.25\n"), "val")
    np.testing.assert_allclose(ds.samples[0].boxes, [[16, 18, 48, 30]])
    assert ds.samples[0].classes.tolist() == [1]


@pytest.mark.parametrize(
    "label, message",
    [
        ("0 0.5 0.5 0.2\n", "x.txt:1: expected 5 fields"),
        ("0 0.5 0.5 0.2 0.2\n7 0.5 0.5 0.2 0.2\n", "x.txt:2: class id 7 out of range"),
        ("0 0.95 0.5 0.4 0.2\n", "x.txt:1: box outside the image"),
        ("0 a b c d\n", "x.txt:1: not numbers"),
        ("0 nan 0.5 0.2 0.2\n", "x.txt:1: non-finite coordinate"),
        ("0 0.5 0.5 inf 0.2\n", "x.txt:1: non-finite coordinate"),
    ],
)
def test_malformed_label_names_file_and_line(tmp_path, label, message):
    with pytest.raises(DataError, match=message.replace("(", r"\(")):
        read_yolo(_mini_yolo(tmp_path, label), "val")


def test_missing_and_corrupt_images(tmp_path):
    data_yaml = _mini_yolo(tmp_path, "")
    (tmp_path / "images" / "val" / "x.jpg").write_bytes(b"this is not a jpeg")
    with pytest.raises(DataError, match="not a readable image: .*x.jpg"):
        read_yolo(data_yaml, "val")
    coco = {"images": [{"id": 1, "file_name": "gone.jpg", "width": 10, "height": 10}], "annotations": [],
            "categories": [{"id": 1, "name": "a"}]}
    (tmp_path / "c.json").write_text(json.dumps(coco))
    with pytest.raises(DataError, match="image not found: .*gone.jpg"):
        read_coco(tmp_path / "c.json")


def test_image_folder_errors(tmp_path):
    with pytest.raises(DataError, match="no images"):
        read_image_folder(tmp_path)
    Image.new("RGB", (8, 8)).save(tmp_path / "ok.png")
    (tmp_path / "notes.jpg").write_text("not an image")
    with pytest.raises(DataError, match="notes.jpg"):
        read_image_folder(tmp_path)
    (tmp_path / "notes.jpg").unlink()
    ds = read_dataset(tmp_path)
    assert len(ds) == 1 and not ds.labelled


@pytest.mark.parametrize("bbox", [[float("nan"), 1, 2, 2], [1, 1, 2], ["1", 1, 2, 2], None, [1, 1, True, 2]])
def test_coco_bbox_must_be_four_finite_numbers(tmp_path, bbox):
    Image.new("RGB", (10, 10)).save(tmp_path / "a.png")
    ann = {"id": 7, "image_id": 1, "category_id": 1}
    if bbox is not None:
        ann["bbox"] = bbox
    coco = {"images": [{"id": 1, "file_name": "a.png", "width": 10, "height": 10}], "annotations": [ann],
            "categories": [{"id": 1, "name": "a"}]}
    # json cannot hold NaN by the standard; Python writes it as NaN, which is what a careless exporter emits
    (tmp_path / "c.json").write_text(json.dumps(coco))
    with pytest.raises(DataError, match="annotation 7 has bbox"):
        read_coco(tmp_path / "c.json")
