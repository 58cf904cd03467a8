"""The crop schemes cut the expected regions: checked on an image whose pixels hold their own
coordinates (bilinear sampling of a linear ramp is exact), so every crop's corner pixels tell
where it came from."""

import numpy as np
import pytest
import tensorflow as tf

from inception_jax.data.crop_schemes import SCHEMES, check_scheme
from inception_jax.data.crops import multi_crop
from inception_jax.errors import UserError

H, W, S = 120, 200, 60


def coordinate_image(h: int = H, w: int = W) -> np.ndarray:
    yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    return np.stack([yy / (h - 1), xx / (w - 1), np.zeros((h, w))], -1).astype(np.float32)


def sampled_corners(crop: np.ndarray, h: int = H, w: int = W) -> np.ndarray:
    """(y, x) input-pixel coordinates sampled at the crop's top-left and bottom-right pixels."""
    unit = (crop[..., :2] + 1.0) / 2.0 * np.array([h - 1, w - 1])
    return np.array([unit[0, 0], unit[-1, -1]])


def expected_corners(top, left, bh, bw, mirror=False):
    """Half-pixel-centred resize of the region [top, top+bh) x [left, left+bw) to S pixels."""
    y0, y1 = top + 0.5 * bh / S - 0.5, top + bh - 0.5 * bh / S - 0.5
    x0, x1 = left + 0.5 * bw / S - 0.5, left + bw - 0.5 * bw / S - 0.5
    if mirror:
        x0, x1 = x1, x0
    return np.array([[y0, x0], [y1, x1]])


def crops(scheme, h=H, w=W):
    return multi_crop(tf.constant(coordinate_image(h, w)), scheme, S).numpy()


def test_center_crop_is_the_central_87_5_percent():
    out = crops("center")
    assert out.shape == (1, S, S, 3)
    np.testing.assert_allclose(
        sampled_corners(out[0]), expected_corners(7.5, 12.5, 105, 175), atol=1e-3
    )


def test_ten_crop_is_four_corners_and_center_each_mirrored():
    out = crops("10")
    assert out.shape == (10, S, S, 3)
    c = H * 0.875  # shorter side resized to S / 0.875: an SxS crop covers 105 input pixels
    places = [(0, 0), (0, W - c), (H - c, 0), (H - c, W - c), ((H - c) / 2, (W - c) / 2)]
    for i, (top, left) in enumerate(places):
        for mirror in (0, 1):
            np.testing.assert_allclose(
                sampled_corners(out[2 * i + mirror]),
                expected_corners(top, left, c, c, bool(mirror)),
                atol=1e-3,
                err_msg=f"crop {2 * i + mirror}",
            )
    np.testing.assert_allclose(out[1], out[0][:, ::-1], atol=1e-6)  # mirror = flipped pixels


@pytest.mark.parametrize("h,w", [(H, W), (W, H)])
def test_googlenet_144_crops(h, w):
    out = crops("144", h, w)
    assert out.shape == (144, S, S, 3)
    short, long = min(h, w), max(h, w)
    index = 0
    for side in (256, 288, 320, 352):
        c = short * 224 / side  # an SxS crop at this scale, in input pixels
        for offset in (0, (long - short) / 2, long - short):
            top, left = (offset, 0) if h > w else (0, offset)
            far = short - c
            regions = [(top, left, c), (top, left + far, c), (top + far, left, c),
                       (top + far, left + far, c), (top + far / 2, left + far / 2, c),
                       (top, left, short)]
            for t, lft, size in regions:
                for mirror in (False, True):
                    np.testing.assert_allclose(
                        sampled_corners(out[index], h, w),
                        expected_corners(t, lft, size, size, mirror),
                        atol=1e-3,
                        err_msg=f"crop {index}",
                    )
                    index += 1
    assert index == 144


def test_upsampled_crop_matches_resize_at_the_border():
    """Samples half a pixel outside the image read the edge pixel, as tf.image.resize does."""
    image = np.random.default_rng(0).uniform(size=(30, 30, 3)).astype(np.float32)
    whole_square = multi_crop(tf.constant(image), "144", S).numpy()[10]  # scale 0, 1st square
    ref = tf.image.resize(image[None], [S, S]).numpy()[0] * 2 - 1
    np.testing.assert_allclose(whole_square, ref, atol=1e-5)


def test_unknown_scheme_is_one_clear_error():
    with pytest.raises(UserError, match="Unknown crop scheme '12'.*center, 10, 144"):
        check_scheme("12")
    assert SCHEMES == {"center": 1, "10": 10, "144": 144}
