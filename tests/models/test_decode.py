import numpy as np

from edgeopt.bundle.decode import DecoderConfig, box_iou, decode


def _brute_force(output, size, cfg):
    """Reference decoder written the slow, obvious way: per class, repeatedly take the best remaining box."""
    out = output[0]
    boxes = out[:4].T * size
    boxes = np.concatenate([boxes[:, :2] - boxes[:, 2:] / 2, boxes[:, :2] + boxes[:, 2:] / 2], 1)
    scores = out[4:].T
    cls = scores.argmax(1)
    conf = scores.max(1)
    kept = []
    for c in np.unique(cls):
        cand = [i for i in range(len(conf)) if cls[i] == c and conf[i] > cfg.score_threshold]
        while cand:
            best = max(cand, key=lambda i: conf[i])
            kept.append(best)
            cand = [i for i in cand if i != best and
                    box_iou(boxes[best][None], boxes[i][None])[0, 0] <= cfg.iou_threshold]
    kept.sort(key=lambda i: -conf[i])
    kept = kept[: cfg.max_detections]
    return boxes[kept], conf[kept], cls[kept]


def test_decoder_matches_brute_force():
    rng = np.random.default_rng(0)
    n, c, size = 400, 4, 320
    centers = rng.uniform(0.1, 0.9, (8, 2))  # clusters of overlapping boxes, as a detector produces
    xy = centers[rng.integers(0, 8, n)] + rng.normal(0, 0.01, (n, 2))
    wh = rng.uniform(0.05, 0.2, (n, 2))
    scores = rng.uniform(0, 1, (n, c)) ** 3
    output = np.concatenate([xy, wh, scores], 1).T[None].astype(np.float32)
    cfg = DecoderConfig(score_threshold=0.2, iou_threshold=0.5, max_detections=50)
    det = decode(output, size, cfg)
    boxes, conf, cls = _brute_force(output, size, cfg)
    assert len(det) == len(conf) > 10
    np.testing.assert_allclose(det.scores, conf, rtol=1e-6)
    np.testing.assert_array_equal(det.classes, cls)
    np.testing.assert_allclose(det.boxes, boxes, atol=1e-3)


def test_nms_is_class_aware_and_multi_label():
    # two identical boxes of different classes both survive; same class -> one survives
    out = np.zeros((1, 6, 2), np.float32)
    out[0, :4] = [[0.5, 0.5], [0.5, 0.5], [0.2, 0.2], [0.2, 0.2]]
    out[0, 4] = [0.9, 0.0]
    out[0, 5] = [0.0, 0.8]
    assert len(decode(out, 320, DecoderConfig(score_threshold=0.1))) == 2
    out[0, 5] = [0.0, 0.0]
    out[0, 4] = [0.9, 0.8]
    assert len(decode(out, 320, DecoderConfig(score_threshold=0.1))) == 1
    out[0, 5] = [0.7, 0.0]
    multi = decode(out, 320, DecoderConfig(score_threshold=0.1, multi_label=True))
    assert sorted(multi.classes.tolist()) == [0, 1]
