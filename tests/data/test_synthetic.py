import hashlib
from pathlib import Path

from edgeopt.data.synthetic import CLASS_NAMES, generate, render_image
from edgeopt.data.yolo import read_yolo


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_same_seed_gives_byte_identical_dataset(tmp_path):
    generate(tmp_path / "a", train=6, val=3, seed=3, workers=1)
    generate(tmp_path / "b", train=6, val=3, seed=3, workers=2)  # worker count must not matter
    generate(tmp_path / "c", train=6, val=3, seed=4, workers=1)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_dataset_has_the_promised_variety(synth_dataset):
    ds = read_yolo(synth_dataset, "train")
    assert ds.class_names == list(CLASS_NAMES) and len(ds.class_names) >= 6
    sizes = [max(b[2] - b[0], b[3] - b[1]) for s in ds.samples for b in s.boxes]
    counts = [len(s.boxes) for s in ds.samples]
    assert min(sizes) < 20 and max(sizes) > 100  # from ~10 px to half the image
    assert max(counts) >= 4  # several objects per image
    truncated = sum(1 for s in ds.samples for b in s.boxes if b[0] <= 0 or b[1] <= 0 or b[2] >= s.width or b[3] >= s.height)
    assert truncated > 0  # objects cut at the borders
    assert len({s.classes[i] for s in ds.samples for i in range(len(s.classes))}) == len(CLASS_NAMES)


def test_render_is_a_pure_function_of_seed_split_index():
    a = render_image(1, "val", 5)
    b = render_image(1, "val", 5)
    c = render_image(1, "train", 5)
    assert a[0] == b[0] and a[3] == b[3]
    assert a[0] != c[0]


def test_easy_difficulty_draws_few_large_objects(tmp_path):
    ds = read_yolo(generate(tmp_path, train=12, val=0, seed=0, difficulty="easy"), "train")
    counts = [len(s.boxes) for s in ds.samples]
    assert 1 <= min(counts) and max(counts) <= 4
    full = [max(b[2] - b[0], b[3] - b[1]) / min(s.width, s.height) for s in ds.samples for b in s.boxes
            if b[0] > 0 and b[1] > 0 and b[2] < s.width and b[3] < s.height]  # untruncated objects
    assert full and min(full) > 0.1
    assert render_image(0, "train", 0, "easy")[0] != render_image(0, "train", 0)[0]
