"""A deterministic generator of a synthetic detection dataset in YOLO format.

The data is built to be *hard enough that compression losses show*: six object classes that differ in shape
and in colour/texture, sizes from ~10 px to half the image, several objects per image with occlusion and
truncation at the borders, cluttered textured backgrounds with distractor shapes, lighting and colour jitter,
blur, sensor noise and JPEG artefacts.

Every image is drawn from its own random stream seeded by ``(seed, split, index)``, so the same seed gives a
byte-identical dataset whatever the number of worker processes.
"""

from __future__ import annotations

import io
import math
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

CLASS_NAMES: tuple[str, ...] = ("circle", "triangle", "square", "star", "cross", "hexagon")
# base hue (0..1) per class; each object jitters it a little
CLASS_HUES: tuple[float, ...] = (0.0, 0.33, 0.62, 0.15, 0.83, 0.5)
IMAGE_SIZES: tuple[tuple[int, int], ...] = ((320, 320), (352, 288), (288, 352), (336, 336), (320, 256))
MIN_OBJECT = 10
DIFFICULTIES: tuple[str, ...] = ("hard", "easy")


@dataclass(frozen=True)
class SynthObject:
    """One drawn object: class id and its box x1, y1, x2, y2 in pixels (clipped to the image)."""

    cls: int
    box: tuple[float, float, float, float]


def _hsv_to_rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
    i = int(h * 6.0) % 6
    f = h * 6.0 - math.floor(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    r, g, b = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return int(r * 255), int(g * 255), int(b * 255)


def _polygon(cls: int, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    """Vertices of a class shape of circumradius ``r``; circles are handled separately."""
    if cls == 1:  # triangle
        pts = [(r, a) for a in (0, 2 * math.pi / 3, 4 * math.pi / 3)]
    elif cls == 2:  # square
        pts = [(r, a) for a in (math.pi / 4, 3 * math.pi / 4, 5 * math.pi / 4, 7 * math.pi / 4)]
    elif cls == 3:  # five-pointed star
        pts = [(r if k % 2 == 0 else 0.45 * r, k * math.pi / 5) for k in range(10)]
    elif cls == 4:  # plus-shaped cross, arm half-width 0.3 r
        w = 0.3
        xy = [(w, 1), (w, w), (1, w), (1, -w), (w, -w), (w, -1), (-w, -1), (-w, -w), (-1, -w), (-1, w), (-w, w), (-w, 1)]
        pts = [(r * math.hypot(x, y), math.atan2(y, x)) for x, y in xy]
    elif cls == 5:  # hexagon
        pts = [(r, k * math.pi / 3) for k in range(6)]
    else:
        raise ValueError(f"no polygon for class {cls}")
    return [(cx + d * math.cos(a + angle), cy + d * math.sin(a + angle)) for d, a in pts]


def _background(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    """A textured, noisy, low-saturation background: gradient + multi-scale noise + clutter rectangles."""
    base = rng.uniform(60, 200, 3)
    tint = rng.uniform(-40, 40, 3)
    gy, gx = np.mgrid[0:h, 0:w].astype(np.float32)
    direction = rng.uniform(0, 2 * math.pi)
    grad = (np.cos(direction) * gx / w + np.sin(direction) * gy / h)[..., None]
    img = base + tint * grad
    for cell in (4, 16, 48):  # coarse-to-fine value noise for texture
        small = rng.normal(0, 1, (h // cell + 2, w // cell + 2, 1)).astype(np.float32)
        noise = np.asarray(Image.fromarray(small[..., 0]).resize((w + 2 * cell, h + 2 * cell), Image.BILINEAR))
        img = img + rng.uniform(4, 14) * noise[:h, :w, None]
    canvas = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    for _ in range(int(rng.integers(3, 9))):  # muted clutter blocks
        x0, y0 = rng.uniform(0, w), rng.uniform(0, h)
        x1, y1 = x0 + rng.uniform(10, w / 2), y0 + rng.uniform(10, h / 2)
        grey = int(rng.uniform(50, 210))
        fill = tuple(int(np.clip(grey + d, 0, 255)) for d in rng.uniform(-25, 25, 3))
        draw.rectangle((x0, y0, x1, y1), fill=fill)
    return canvas


def _distractors(rng: np.random.Generator, draw: ImageDraw.ImageDraw, w: int, h: int) -> None:
    """Shapes that are not objects: lines, arcs, thin ellipses and irregular blobs in muted colours."""
    for _ in range(int(rng.integers(4, 12))):
        grey = rng.uniform(30, 230)
        color = tuple(int(np.clip(grey + d, 0, 255)) for d in rng.uniform(-40, 40, 3))
        kind = int(rng.integers(0, 4))
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        size = rng.uniform(8, min(w, h) / 2.5)
        if kind == 0:
            a = rng.uniform(0, 2 * math.pi)
            draw.line((x, y, x + size * math.cos(a), y + size * math.sin(a)), fill=color, width=int(rng.integers(1, 5)))
        elif kind == 1:
            draw.arc((x, y, x + size, y + size), rng.uniform(0, 360), rng.uniform(0, 360), fill=color, width=3)
        elif kind == 2:
            draw.ellipse((x, y, x + size, y + size * rng.uniform(0.15, 0.35)), fill=color)
        else:
            n = int(rng.integers(5, 9))
            angles = np.sort(rng.uniform(0, 2 * math.pi, n))
            radii = rng.uniform(0.3, 1.0, n) * size / 2
            draw.polygon([(x + r * math.cos(a), y + r * math.sin(a)) for r, a in zip(radii, angles)], fill=color)


def _object_fill(rng: np.random.Generator, cls: int, size: int) -> Image.Image:
    """Colour or texture of a class: jittered base hue; squares are striped, hexagons checkered."""
    hue = (CLASS_HUES[cls] + rng.uniform(-0.035, 0.035)) % 1.0
    rgb = _hsv_to_rgb(hue, rng.uniform(0.6, 1.0), rng.uniform(0.55, 1.0))
    tile = Image.new("RGB", (size, size), rgb)
    if cls in (2, 5):
        second = tuple(int(c * 0.45) for c in rgb)
        draw = ImageDraw.Draw(tile)
        period = max(3, size // int(rng.integers(3, 6)))
        for k in range(0, 2 * size, period):
            if cls == 2:  # diagonal stripes
                draw.line((k, 0, k - size, size), fill=second, width=max(1, period // 2))
            else:  # checker
                for j in range(0, size, period):
                    if (k // period + j // period) % 2 == 0 and k < size:
                        draw.rectangle((k, j, k + period // 2, j + period // 2), fill=second)
    return tile


def _overlaps_too_much(box: tuple[float, float, float, float], placed: list[tuple[float, float, float, float]]) -> bool:
    """True if ``box`` would hide more than 40% of an earlier box (targets must stay recognisable)."""
    for p in placed:
        ix = max(0.0, min(box[2], p[2]) - max(box[0], p[0]))
        iy = max(0.0, min(box[3], p[3]) - max(box[1], p[1]))
        if ix * iy > 0.4 * (p[2] - p[0]) * (p[3] - p[1]):
            return True
    return False


def _plain_background(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    """A flat, low-saturation background with a soft gradient (the ``easy`` difficulty)."""
    base = rng.uniform(90, 170, 3)
    gy = np.mgrid[0:h, 0:w][0].astype(np.float32)[..., None] / h
    return Image.fromarray(np.clip(base + rng.uniform(-20, 20) * gy, 0, 255).astype(np.uint8))


def render_image(seed: int, split: str, index: int, difficulty: str = "hard") -> tuple[bytes, int, int, list[SynthObject]]:
    """Draw one image; returns JPEG bytes, width, height and its objects.

    ``difficulty="easy"`` draws 1-4 large objects on a plain background without distractors or degradations, for
    detectors trained from scratch in a few minutes (their confidences must be high enough to compare).
    """
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"difficulty must be one of {DIFFICULTIES}, got {difficulty!r}")
    easy = difficulty == "easy"
    split_id = {"train": 1, "val": 2, "test": 3}.get(split, 4) + (100 if easy else 0)
    rng = np.random.default_rng([seed, split_id, index])
    w, h = IMAGE_SIZES[int(rng.integers(len(IMAGE_SIZES)))]
    canvas = _plain_background(rng, w, h) if easy else _background(rng, w, h)
    draw = ImageDraw.Draw(canvas)
    if not easy:
        _distractors(rng, draw, w, h)
    objects: list[SynthObject] = []
    placed: list[tuple[float, float, float, float]] = []
    max_size = min(w, h) / 2
    min_size = min(w, h) / 6 if easy else MIN_OBJECT + 2
    for _ in range(int(rng.integers(1, 5) if easy else rng.integers(2, 9))):
        cls = int(rng.integers(len(CLASS_NAMES)))
        size = float(np.exp(rng.uniform(math.log(min_size), math.log(max_size))))
        r = size / 2
        # centres may fall slightly outside the image: objects get truncated at the borders
        cx, cy = rng.uniform(-0.15 * size, w + 0.15 * size), rng.uniform(-0.15 * size, h + 0.15 * size)
        angle = rng.uniform(0, 2 * math.pi)
        if cls == 0:
            pts = None
            full = (cx - r, cy - r, cx + r, cy + r)
        else:
            pts = _polygon(cls, cx, cy, r, angle)
            xs, ys = [p[0] for p in pts], [p[1] for p in pts]
            full = (min(xs), min(ys), max(xs), max(ys))
        box = (max(0.0, full[0]), max(0.0, full[1]), min(float(w), full[2]), min(float(h), full[3]))
        bw, bh = box[2] - box[0], box[3] - box[1]
        full_area = (full[2] - full[0]) * (full[3] - full[1])
        if bw < MIN_OBJECT * 0.6 or bh < MIN_OBJECT * 0.6 or bw * bh < 0.45 * full_area:
            continue  # mostly outside the image
        if _overlaps_too_much(box, placed):
            continue
        mask = Image.new("L", (w, h), 0)
        mdraw = ImageDraw.Draw(mask)
        if pts is None:
            mdraw.ellipse(full, fill=255)
        else:
            mdraw.polygon(pts, fill=255)
        side = int(math.ceil(size)) + 2
        fill = _object_fill(rng, cls, side)
        layer = Image.new("RGB", (w, h))
        layer.paste(fill, (int(full[0]) - 1, int(full[1]) - 1))
        canvas.paste(layer, (0, 0), mask)
        objects.append(SynthObject(cls, box))
        placed.append(box)
    if easy:
        buf = io.BytesIO()
        canvas.save(buf, format="JPEG", quality=95)
        return buf.getvalue(), w, h, objects
    # photometric degradations: lighting/colour jitter, blur, sensor noise, JPEG
    arr = np.asarray(canvas).astype(np.float32)
    arr = arr * rng.uniform(0.7, 1.25) * rng.uniform(0.9, 1.1, 3) + rng.uniform(-25, 25)
    canvas = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    if rng.random() < 0.5:
        canvas = canvas.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 1.3))))
    arr = np.asarray(canvas).astype(np.float32) + rng.normal(0, rng.uniform(1, 8), (h, w, 3))
    canvas = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    buf = io.BytesIO()
    canvas.save(buf, format="JPEG", quality=int(rng.integers(45, 95)))
    return buf.getvalue(), w, h, objects


def _yolo_label(objects: list[SynthObject], w: int, h: int) -> str:
    lines = []
    for o in objects:
        x1, y1, x2, y2 = o.box
        lines.append(f"{o.cls} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} {(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}")
    return "\n".join(lines) + ("\n" if lines else "")


def _write_one(args: tuple[Path, int, str, int, str]) -> None:
    out, seed, split, index, difficulty = args
    jpeg, w, h, objects = render_image(seed, split, index, difficulty)
    stem = f"{split}_{index:06d}"
    (out / "images" / split / f"{stem}.jpg").write_bytes(jpeg)
    (out / "labels" / split / f"{stem}.txt").write_text(_yolo_label(objects, w, h))


def generate(out: Path, train: int, val: int, seed: int = 0, workers: int = 1, progress: bool = False,
             difficulty: str = "hard") -> Path:
    """Write a YOLO-format dataset (``images/{train,val}``, ``labels/{train,val}``, ``data.yaml``) to ``out``.

    Returns the path of ``data.yaml``. The content depends only on ``(train, val, seed, difficulty)``; see
    ``render_image`` for ``difficulty``.
    """
    out = Path(out)
    jobs: list[tuple[Path, int, str, int, str]] = []
    for split, count in (("train", train), ("val", val)):
        if count <= 0:
            continue
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        (out / "labels" / split).mkdir(parents=True, exist_ok=True)
        jobs += [(out, seed, split, i, difficulty) for i in range(count)]
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            results = pool.map(_write_one, jobs, chunksize=32)
            _drain(results, len(jobs), progress)
    else:
        _drain(map(_write_one, jobs), len(jobs), progress)
    names = "\n".join(f"  {i}: {n}" for i, n in enumerate(CLASS_NAMES))
    splits = "".join(f"{s}: images/{s}\n" for s, c in (("train", train), ("val", val)) if c > 0)
    yaml_path = out / "data.yaml"
    # no "path:" key: readers (edgeopt and other YOLO-format tools) resolve the splits next to data.yaml
    yaml_path.write_text(f"# edgeopt synthetic dataset, seed {seed}, {difficulty}\n{splits}names:\n{names}\n")
    return yaml_path


def _drain(results, total: int, progress: bool) -> None:
    if not progress:
        for _ in results:
            pass
        return
    from rich.progress import Progress

    with Progress(transient=True) as bar:
        task = bar.add_task("generating images", total=total)
        for _ in results:
            bar.advance(task)
