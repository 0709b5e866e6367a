import numpy as np
import pytest
from PIL import Image, ImageDraw

from edgeopt.bundle.letterbox import PAD_VALUE, Letterbox, letterbox_image, to_tensor


@pytest.mark.parametrize("w, h", [(352, 288), (288, 352), (320, 320), (640, 123), (97, 311)])
def test_inverse_mapping_within_one_pixel(w, h):
    rng = np.random.default_rng(0)
    x1, y1 = rng.uniform(0, w * 0.6, 20), rng.uniform(0, h * 0.6, 20)
    boxes = np.stack([x1, y1, x1 + rng.uniform(1, w * 0.4, 20), y1 + rng.uniform(1, h * 0.4, 20)], 1)
    _, lb = letterbox_image(Image.new("RGB", (w, h)), 320)
    back = lb.to_original(lb.to_input(boxes))
    assert np.abs(back - boxes).max() < 1.0


def test_drawn_rectangle_lands_where_the_mapping_says():
    # a white rectangle drawn in the original must appear at the mapped place in the letterboxed input
    img = Image.new("RGB", (400, 200), (0, 0, 0))
    ImageDraw.Draw(img).rectangle((100, 50, 299, 149), fill=(255, 255, 255))
    hwc, lb = letterbox_image(img, 320)
    x1, y1, x2, y2 = lb.to_input(np.array([[100, 50, 300, 150]]))[0]
    ys, xs = np.nonzero(hwc[..., 0] > 128)
    assert abs(xs.min() - x1) <= 1 and abs(xs.max() + 1 - x2) <= 1
    assert abs(ys.min() - y1) <= 1 and abs(ys.max() + 1 - y2) <= 1
    assert (hwc[0, :, 0] == PAD_VALUE).all()  # top padding row


def test_tensor_layouts_and_dtypes():
    hwc = np.arange(4 * 4 * 3, dtype=np.uint8).reshape(4, 4, 3)
    nchw = to_tensor(hwc)
    assert nchw.shape == (1, 3, 4, 4) and nchw.dtype == np.float32 and nchw.max() <= 1.0
    assert to_tensor(hwc, "NHWC", "uint8").shape == (1, 4, 4, 3)
    np.testing.assert_array_equal(to_tensor(hwc, "NCHW", "uint8")[0, 1], hwc[..., 1])
    assert Letterbox.fit(640, 480, 320).scale == 0.5
