"""Inception preprocessing in TensorFlow: pure functions of the image and a seed; [-1, 1] out."""

from __future__ import annotations

import tensorflow as tf

from inception_jax.data.crops import multi_crop


def _to_unit_range(image: tf.Tensor) -> tf.Tensor:
    return tf.image.convert_image_dtype(image, tf.float32)


def _to_model_range(image: tf.Tensor) -> tf.Tensor:
    return tf.clip_by_value(image, 0.0, 1.0) * 2.0 - 1.0


def distort_color(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Random brightness, saturation, hue and contrast (stateless; image in [0, 1])."""
    seeds = tf.random.experimental.stateless_split(seed, 4)
    image = tf.image.stateless_random_brightness(image, 32.0 / 255.0, seeds[0])
    image = tf.image.stateless_random_saturation(image, 0.5, 1.5, seeds[1])
    image = tf.image.stateless_random_hue(image, 0.2, seeds[2])
    image = tf.image.stateless_random_contrast(image, 0.5, 1.5, seeds[3])
    return tf.clip_by_value(image, 0.0, 1.0)


def train_preprocess(
    image: tf.Tensor,
    image_size: int,
    seed: tf.Tensor,
    color_distortion: bool,
    area_range: tuple[float, float] = (0.05, 1.0),
    aspect_range: tuple[float, float] = (3 / 4, 4 / 3),
) -> tf.Tensor:
    """Distorted bounding-box crop, resize, random flip, optional colour distortion."""
    seeds = tf.random.experimental.stateless_split(seed, 3)
    begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image),
        bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], shape=[1, 1, 4]),
        seed=seeds[0],
        min_object_covered=0.1,
        aspect_ratio_range=aspect_range,
        area_range=area_range,
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    image = tf.slice(image, begin, crop_size)
    image = tf.image.resize(_to_unit_range(image), [image_size, image_size], "bilinear")
    image = tf.image.stateless_random_flip_left_right(image, seeds[1])
    if color_distortion:
        image = distort_color(image, seeds[2])
    image.set_shape([image_size, image_size, 3])
    return _to_model_range(image)


def eval_preprocess(image: tf.Tensor, image_size: int, crops: str = "center") -> tf.Tensor:
    """The eval crops of `crops` (see `crops.py`): [S, S, 3] for "center", else [K, S, S, 3]."""
    out = multi_crop(image, crops, image_size)
    return out[0] if crops == "center" else out
