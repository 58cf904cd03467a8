"""Evaluation crop schemes: single central crop, 10-crop and GoogLeNet's 144-crop.

Every scheme is a list of crop boxes (in pixels of the original image, with a mirror flag)
computed from the image's height and width; `multi_crop` cuts all of them out in one
`crop_and_resize` call, so a scheme is one op in the input pipeline and one compiled model
function (the model sees `[batch * crops, S, S, 3]` and averages the crops' probabilities).

- "center": the central 87.5% of each side, resized to S×S (Inception's eval crop).
- "10": the image resized so its shorter side is S / 0.875; the four corner and the central
  S×S squares, each also mirrored (AlexNet/ResNet 10-crop).
- "144": GoogLeNet's scheme scaled from 224 to S: the shorter side resized to
  S·{256, 288, 320, 352}/224; the left, centre and right squares (top, centre, bottom for
  portrait images); in each square the four corner and the central S×S crops plus the whole
  square resized to S×S; each mirrored. 4 × 3 × 6 × 2 = 144 crops.
"""

from __future__ import annotations

import tensorflow as tf

from inception_jax.data.crop_schemes import SCHEMES, check_scheme

CENTER_FRACTION = 0.875
GOOGLENET_SCALES = (256, 288, 320, 352)
GOOGLENET_SIZE = 224


def _squares_in(top, left, side, crop):
    """Four corners and the centre `crop`-sized squares inside a square of `side`."""
    far = side - crop
    return [(top, left), (top, left + far), (top + far, left), (top + far, left + far),
            (top + far / 2, left + far / 2)]


def crop_boxes(scheme: str, height: tf.Tensor, width: tf.Tensor, size: int) -> tf.Tensor:
    """`[K, 5]` float32 boxes (top, left, box height, box width, mirrored) in input pixels."""
    check_scheme(scheme)
    h, w = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    boxes = []
    if scheme == "center":
        bh, bw = h * CENTER_FRACTION, w * CENTER_FRACTION
        boxes.append(((h - bh) / 2, (w - bw) / 2, bh, bw, 0.0))
    elif scheme == "10":
        scale = (size / CENTER_FRACTION) / tf.minimum(h, w)  # resized pixels per input pixel
        c = size / scale  # an S×S crop of the resized image, in input pixels
        # Corners and centre of the whole (non-square) image.
        for top, left in [(0.0, 0.0), (0.0, w - c), (h - c, 0.0), (h - c, w - c),
                          ((h - c) / 2, (w - c) / 2)]:
            for mirror in (0.0, 1.0):
                boxes.append((top, left, c, c, mirror))
    else:
        short = tf.minimum(h, w)
        portrait = h > w
        for scale_side in GOOGLENET_SCALES:
            scale = (size * scale_side / GOOGLENET_SIZE) / short
            c = size / scale  # S×S crop of the resized image, in input pixels
            long_side = tf.maximum(h, w)
            for offset in (0.0, (long_side - short) / 2, long_side - short):
                top = tf.where(portrait, offset, 0.0)
                left = tf.where(portrait, 0.0, offset)
                regions = [(*corner, c, c) for corner in _squares_in(top, left, short, c)]
                regions.append((top, left, short, short))  # the whole square, resized
                for t, lft, bh, bw in regions:
                    for mirror in (0.0, 1.0):
                        boxes.append((t, lft, bh, bw, mirror))
    return tf.stack([tf.stack([tf.cast(v, tf.float32) for v in b]) for b in boxes])


def _normalized(boxes: tf.Tensor, height: tf.Tensor, width: tf.Tensor, size: int) -> tf.Tensor:
    """Pixel boxes → `crop_and_resize` boxes whose samples sit at half-pixel centres.

    `crop_and_resize` samples the S points of a box evenly from y1·(h-1) to y2·(h-1); a
    resize of the region [top, top+bh) to S pixels samples at top + (i + ½)·bh/S - ½.
    A mirrored crop swaps x1 and x2. The image is edge-padded by one pixel (so coordinates
    shift by one): samples up to half a pixel outside then read the edge, as `resize` does.
    """
    h, w = tf.cast(height, tf.float32) + 2.0, tf.cast(width, tf.float32) + 2.0
    top, left, bh, bw, mirror = tf.unstack(boxes, axis=1)
    y1 = (top + 0.5 * bh / size + 0.5) / (h - 1)
    y2 = (top + bh - 0.5 * bh / size + 0.5) / (h - 1)
    x1 = (left + 0.5 * bw / size + 0.5) / (w - 1)
    x2 = (left + bw - 0.5 * bw / size + 0.5) / (w - 1)
    flip = mirror > 0.5
    return tf.stack([y1, tf.where(flip, x2, x1), y2, tf.where(flip, x1, x2)], axis=1)


def multi_crop(image: tf.Tensor, scheme: str, size: int) -> tf.Tensor:
    """`[K, size, size, 3]` float32 crops in [-1, 1] of a uint8 (or [0, 1] float) image."""
    image = tf.image.convert_image_dtype(image, tf.float32)
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    boxes = _normalized(crop_boxes(scheme, height, width, size), height, width, size)
    padded = tf.pad(image, [[1, 1], [1, 1], [0, 0]], mode="SYMMETRIC")
    crops = tf.image.crop_and_resize(
        padded[None], boxes, tf.zeros([tf.shape(boxes)[0]], tf.int32), [size, size], "bilinear"
    )
    crops.set_shape([SCHEMES[scheme], size, size, 3])
    return tf.clip_by_value(crops, 0.0, 1.0) * 2.0 - 1.0
