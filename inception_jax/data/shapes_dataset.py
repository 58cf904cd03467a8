"""`inception_shapes`: a small labelled image dataset drawn locally, with no download.

Ten classes of procedurally drawn shapes and textures (circle, square, triangle, cross, ring,
horizontal/vertical/diagonal stripes, checkerboard, dots) in random colours, positions and
sizes over a noisy background. Every image is a pure function of (seed, split, index), so two
builds are identical; a small CNN learns it in a few hundred steps.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

CLASSES = (
    "circle", "square", "triangle", "cross", "ring",
    "h_stripes", "v_stripes", "d_stripes", "checkerboard", "dots",
)
_SPLIT_IDS = {"train": 1, "test": 2}


@dataclasses.dataclass
class InceptionShapesConfig(tfds.core.BuilderConfig):
    """Image size, examples per split and the generation seed."""

    image_size: int = 64
    num_train: int = 2000
    num_test: int = 500
    seed: int = 0


def shapes_config(image_size: int, num_train: int, num_test: int, seed: int):
    """A builder config whose name encodes its fields (so each variant has its own files)."""
    return InceptionShapesConfig(
        name=f"s{image_size}_tr{num_train}_te{num_test}_seed{seed}",
        image_size=image_size,
        num_train=num_train,
        num_test=num_test,
        seed=seed,
    )


def _mask(kind: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Boolean foreground mask of class `kind`."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    cy, cx = rng.uniform(0.3, 0.7, 2)
    r = rng.uniform(0.15, 0.3)
    period = rng.uniform(0.1, 0.25)
    phase = rng.uniform(0, 1)
    if kind == 0:
        return (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
    if kind == 1:
        return (np.abs(yy - cy) < r) & (np.abs(xx - cx) < r)
    if kind == 2:
        return (yy - cy < r) & (yy - cy > -r + 2 * np.abs(xx - cx))
    if kind == 3:
        w = r / 3
        inside = (np.abs(yy - cy) < r) & (np.abs(xx - cx) < r)
        return inside & ((np.abs(yy - cy) < w) | (np.abs(xx - cx) < w))
    if kind == 4:
        d = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
        return (d < r) & (d > 0.6 * r)
    if kind == 5:
        return ((yy / period + phase) % 1.0) < 0.5
    if kind == 6:
        return ((xx / period + phase) % 1.0) < 0.5
    if kind == 7:
        return (((xx + yy) / period + phase) % 1.0) < 0.5
    if kind == 8:
        return ((np.floor(yy / period) + np.floor(xx / period)) % 2) == 0
    spacing = period
    dy = (yy / spacing + phase) % 1.0 - 0.5
    dx = (xx / spacing + phase) % 1.0 - 0.5
    return dy**2 + dx**2 < 0.09


def draw_example(kind: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """One uint8 HxWx3 image of class `kind`."""
    background = rng.uniform(0, 255, 3)
    foreground = rng.uniform(0, 255, 3)
    while np.abs(foreground - background).sum() < 150:
        foreground = rng.uniform(0, 255, 3)
    mask = _mask(kind, size, rng)[..., None]
    image = np.where(mask, foreground, background) + rng.normal(0, 12, (size, size, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


class InceptionShapes(tfds.core.GeneratorBasedBuilder):
    """The built-in dataset (see the module docstring)."""

    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIGS = [shapes_config(64, 2000, 500, 0)]

    def _info(self) -> tfds.core.DatasetInfo:
        size = self.builder_config.image_size
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(size, size, 3)),
                    "label": tfds.features.ClassLabel(names=CLASSES),
                }
            ),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download
        cfg = self.builder_config
        return {
            "train": self._generate_examples("train", cfg.num_train),
            "test": self._generate_examples("test", cfg.num_test),
        }

    def _generate_examples(self, split: str, count: int):
        cfg = self.builder_config
        for index in range(count):
            rng = np.random.default_rng([cfg.seed, _SPLIT_IDS[split], index])
            label = index % len(CLASSES)
            yield index, {"image": draw_example(label, cfg.image_size, rng), "label": label}
