"""Inception preprocessing in TensorFlow: pure functions of the image and a seed; [-1, 1] out.

Training samples a distorted bounding box from the image's shape and the seed, then decodes
only that box (`tf.image.decode_and_crop_jpeg`, as slim, flax and big_vision do): the shape of
a JPEG is read from its header, so the pixels outside the crop are never decoded. Other
formats (PNG, GIF, BMP) are decoded whole and sliced to the same box. The crop's pixels are
those of a whole decode: libjpeg's chroma upsampling (4:2:0 and 4:2:2 JPEGs, most of
ImageNet) reads one chroma sample beyond each side of the decoded region, so the region is
widened by `JPEG_MARGIN` pixels left and right (where the image has them) and then sliced;
decoding the bare box instead changes its first or last column by up to ~60/255.
"""

from __future__ import annotations

import tensorflow as tf

from inception_jax.data.crops import multi_crop

JPEG_MARGIN = 2  # columns decoded beyond each side of a JPEG crop (1 is not always enough)


def _to_unit_range(image: tf.Tensor) -> tf.Tensor:
    return tf.image.convert_image_dtype(image, tf.float32)


def _to_model_range(image: tf.Tensor) -> tf.Tensor:
    return tf.clip_by_value(image, 0.0, 1.0) * 2.0 - 1.0


# slim's colour distortion (inception_preprocessing.distort_color). "fast", slim's default
# (preprocess_for_train(fast_mode=True) draws from 1 ordering): brightness then saturation.
# "full" (fast_mode=False): all four operations in one of slim's 4 orders, drawn per image.
COLOR_MODES = ("fast", "full")
_FULL_ORDERS = (
    ("brightness", "saturation", "hue", "contrast"),
    ("saturation", "brightness", "contrast", "hue"),
    ("contrast", "hue", "brightness", "saturation"),
    ("hue", "saturation", "contrast", "brightness"),
)
# slim's sample_distorted_bounding_box attempts (distorted_bounding_box_crop's default).
CROP_MAX_ATTEMPTS = 100


def _color_op(name: str, image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    if name == "brightness":
        return tf.image.stateless_random_brightness(image, 32.0 / 255.0, seed)
    if name == "saturation":
        return tf.image.stateless_random_saturation(image, 0.5, 1.5, seed)
    if name == "hue":
        return tf.image.stateless_random_hue(image, 0.2, seed)
    return tf.image.stateless_random_contrast(image, 0.5, 1.5, seed)


def _apply_colors(image: tf.Tensor, names: tuple[str, ...], seed: tf.Tensor) -> tf.Tensor:
    """The named operations in order, each with its own seed (split by operation name, so an
    operation's draw is the same in every order)."""
    seeds = tf.random.experimental.stateless_split(seed, 4)
    index = {"brightness": 0, "saturation": 1, "hue": 2, "contrast": 3}
    for name in names:
        image = _color_op(name, image, seeds[index[name]])
    return image


def distort_color(image: tf.Tensor, seed: tf.Tensor, mode: str = "fast") -> tf.Tensor:
    """slim's colour distortion of an image in [0, 1] (stateless): "fast" = random brightness
    (±32/255) then saturation ([0.5, 1.5]); "full" = brightness, saturation, hue (±0.2) and
    contrast ([0.5, 1.5]) in one of four orders drawn from the seed. Clipped to [0, 1]."""
    if mode == "fast":
        image = _apply_colors(image, _FULL_ORDERS[0][:2], seed)
    elif mode == "full":
        order_seed, ops_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        order = tf.random.stateless_uniform([], order_seed, 0, len(_FULL_ORDERS), tf.int32)
        image = tf.switch_case(order, [
            (lambda names=names: _apply_colors(image, names, ops_seed)) for names in _FULL_ORDERS
        ])
    else:
        raise ValueError(f"unknown colour distortion mode {mode!r}; one of {COLOR_MODES}")
    return tf.clip_by_value(image, 0.0, 1.0)


def crop_box(
    shape: tf.Tensor,
    seed: tf.Tensor,
    area_range: tuple[float, float] = (0.05, 1.0),
    aspect_range: tuple[float, float] = (3 / 4, 4 / 3),
) -> tf.Tensor:
    """The distorted bounding box [top, left, height, width] (int32) of an image of `shape`.

    `shape` is [height, width, channels]; `seed` is the crop's own seed (see `_seeds`).
    """
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        shape,
        bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], shape=[1, 1, 4]),
        seed=seed,
        min_object_covered=0.1,
        aspect_ratio_range=aspect_range,
        area_range=area_range,
        max_attempts=CROP_MAX_ATTEMPTS,
        use_image_if_no_bounding_boxes=True,
    )
    return tf.concat([begin[:2], size[:2]], axis=0)


def _seeds(seed: tf.Tensor) -> tf.Tensor:
    """Seeds of the crop box, the flip and the colour distortion, in that order."""
    return tf.random.experimental.stateless_split(seed, 3)


def _slice(image: tf.Tensor, box: tf.Tensor) -> tf.Tensor:
    return image[box[0]:box[0] + box[2], box[1]:box[1] + box[3]]


def decode_train_crop(
    encoded: tf.Tensor,
    seed: tf.Tensor,
    area_range: tuple[float, float] = (0.05, 1.0),
    aspect_range: tuple[float, float] = (3 / 4, 4 / 3),
) -> tf.Tensor:
    """The training crop of an encoded image, uint8 [h, w, 3]: only the crop of a JPEG is
    decoded; other formats are decoded whole, then sliced. Raises InvalidArgumentError on
    data that cannot be decoded."""
    box_seed = _seeds(seed)[0]

    def jpeg() -> tf.Tensor:
        shape = tf.image.extract_jpeg_shape(encoded)
        top, left, height, width = tf.unstack(
            crop_box(shape, box_seed, area_range, aspect_range)
        )
        start = tf.maximum(left - JPEG_MARGIN, 0)
        end = tf.minimum(left + width + JPEG_MARGIN, shape[1])
        wider = tf.image.decode_and_crop_jpeg(
            encoded, tf.stack([top, start, height, end - start]), channels=3
        )
        return wider[:, left - start:left - start + width]

    def other() -> tf.Tensor:
        image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
        return train_crop(image, seed, area_range, aspect_range)

    crop = tf.cond(tf.io.is_jpeg(encoded), jpeg, other)
    crop.set_shape([None, None, 3])
    return crop


def finish_train_crop(
    crop: tf.Tensor, image_size: int, seed: tf.Tensor, color_distortion: str | None
) -> tf.Tensor:
    """Resize a training crop to `image_size`, random flip, colour distortion (a mode of
    `distort_color`, or None for none)."""
    seeds = _seeds(seed)
    image = tf.image.resize(_to_unit_range(crop), [image_size, image_size], "bilinear")
    image = tf.image.stateless_random_flip_left_right(image, seeds[1])
    if color_distortion:
        image = distort_color(image, seeds[2], color_distortion)
    image.set_shape([image_size, image_size, 3])
    return _to_model_range(image)


def train_crop(
    image: tf.Tensor,
    seed: tf.Tensor,
    area_range: tuple[float, float] = (0.05, 1.0),
    aspect_range: tuple[float, float] = (3 / 4, 4 / 3),
) -> tf.Tensor:
    """The training crop of a decoded image: the box `decode_train_crop` decodes."""
    return _slice(image, crop_box(tf.shape(image), _seeds(seed)[0], area_range, aspect_range))


def train_preprocess(
    image: tf.Tensor,
    image_size: int,
    seed: tf.Tensor,
    color_distortion: str | None,
    area_range: tuple[float, float] = (0.05, 1.0),
    aspect_range: tuple[float, float] = (3 / 4, 4 / 3),
) -> tf.Tensor:
    """Distorted bounding-box crop, resize, random flip, optional colour distortion of a
    decoded image (the training pipeline uses `decode_train_crop` + `finish_train_crop`)."""
    crop = train_crop(image, seed, area_range, aspect_range)
    return finish_train_crop(crop, image_size, seed, color_distortion)


def eval_preprocess(image: tf.Tensor, image_size: int, crops: str = "center") -> tf.Tensor:
    """The eval crops of `crops` (see `crops.py`): [S, S, 3] for "center", else [K, S, S, 3]."""
    out = multi_crop(image, crops, image_size)
    return out[0] if crops == "center" else out
