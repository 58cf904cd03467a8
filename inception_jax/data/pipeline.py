"""The input pipeline over TensorFlow Datasets.

`data_cfg` (the config's `data` section) fields: `name` ("inception_shapes", "imagenet2012"
or "image_folder"), `data_dir` (TFDS directory; None = TFDS default), `image_size` (model
input), `train_split`, `eval_split`, `shuffle_buffer`, `color_distortion`, `min_crop_area`
(lower end of the random crop's area fraction), `folder` (root/split/label/*.jpg for
image_folder) and `builder` (image_size, num_train, num_test, seed of inception_shapes).

The training stream is a pure function of (config, seed, global batch, process index/count):
epoch e is shuffled with a seed made from (seed, e), each example is augmented with a seed
made from its position in the stream, and `train_batches(..., start_step=k)` yields exactly
batch k onwards — skipping still-encoded records, so resuming decodes nothing twice.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
from collections.abc import Iterator
from typing import Any

import jax
import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from jax.experimental import multihost_utils

from inception_jax.data.crops import check_scheme
from inception_jax.data.preprocess import eval_preprocess, train_preprocess

DATASETS = ("inception_shapes", "imagenet2012", "image_folder")


class DatasetNotPreparedError(FileNotFoundError):
    """The dataset's files are not there; the message says how to prepare them."""


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """Sizes the trainer needs."""

    num_train_examples: int
    num_eval_examples: int
    num_classes: int
    image_size: int


def _imagenet_instructions(data_dir: str) -> str:
    manual = os.path.join(data_dir, "downloads", "manual")
    return (
        f"ImageNet-2012 is not prepared in {data_dir}. To prepare it:\n"
        "  1. Download ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar from "
        "image-net.org (requires an account).\n"
        f"  2. Put both files in {manual}/\n"
        f"  3. Run: tfds build imagenet2012 --data_dir={data_dir}\n"
        "     (or in Python: tfds.builder('imagenet2012', "
        f"data_dir='{data_dir}').download_and_prepare())\n"
        "  4. Set --config.data.data_dir to that directory if it is not the default."
    )


def get_builder(data_cfg: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
    """The TFDS builder of `data_cfg.name`, built locally first for inception_shapes."""
    data_dir = data_cfg.data_dir or os.path.expanduser("~/tensorflow_datasets")
    if data_cfg.name == "inception_shapes":
        from inception_jax.data.shapes_dataset import InceptionShapes, shapes_config

        b = data_cfg.builder
        config = shapes_config(b.image_size, b.num_train, b.num_test, b.seed)
        registered = {c.name for c in InceptionShapes.BUILDER_CONFIGS}
        make = lambda: InceptionShapes(  # noqa: E731
            config=config.name if config.name in registered else config, data_dir=data_dir
        )
        if jax.process_index() == 0:
            make().download_and_prepare()
        if jax.process_count() > 1:  # the others read it once process 0 has written it
            multihost_utils.sync_global_devices(f"prepared {config.name}")
        return make()
    if data_cfg.name == "imagenet2012":
        builder = tfds.builder("imagenet2012", data_dir=data_dir)
        if not _is_prepared(builder):
            raise DatasetNotPreparedError(_imagenet_instructions(data_dir))
        return builder
    if data_cfg.name == "image_folder":
        if not data_cfg.folder or not os.path.isdir(data_cfg.folder):
            raise DatasetNotPreparedError(
                f"data.folder={data_cfg.folder!r} is not a directory. Point it at a folder laid "
                "out as <folder>/<split>/<label>/<image>.jpg."
            )
        return tfds.folder_dataset.ImageFolder(data_cfg.folder)
    raise ValueError(f"Unknown dataset {data_cfg.name!r}. Known datasets: {', '.join(DATASETS)}.")


def _is_prepared(builder: tfds.core.DatasetBuilder) -> bool:
    # tfds.testing.mock_data replaces as_dataset; its builders count as prepared.
    if getattr(tfds.core.DatasetBuilder.as_dataset, "__name__", "") != "as_dataset":
        return True
    return tf.io.gfile.exists(os.path.join(builder.data_dir, "dataset_info.json"))


def _num_examples(builder: tfds.core.DatasetBuilder, split: str) -> int:
    if builder.info.splits:
        return int(builder.info.splits[split].num_examples)
    # Builders without split metadata (tfds.testing.mock_data): count the records.
    return int(builder.as_dataset(split=split).reduce(0, lambda n, _: n + 1))


def dataset_info(data_cfg: ml_collections.ConfigDict) -> DatasetInfo:
    """Example counts and class count of the configured dataset."""
    builder = get_builder(data_cfg)
    for split in (data_cfg.train_split, data_cfg.eval_split):
        if builder.info.splits and split not in builder.info.splits:
            raise ValueError(
                f"{data_cfg.name} has no split {split!r}; it has {sorted(builder.info.splits)}."
            )
    return DatasetInfo(
        num_train_examples=_num_examples(builder, data_cfg.train_split),
        num_eval_examples=_num_examples(builder, data_cfg.eval_split),
        num_classes=int(builder.info.features["label"].num_classes),
        image_size=data_cfg.image_size,
    )


def _local_batch(global_batch_size: int) -> int:
    p = jax.process_count()
    if global_batch_size % p:
        raise ValueError(f"global batch {global_batch_size} is not divisible by {p} processes")
    return global_batch_size // p


def _raw(builder, split: Any) -> tf.data.Dataset:
    """Records in file order with the image still encoded."""
    return builder.as_dataset(
        split=split,
        shuffle_files=False,
        decoders={"image": tfds.decode.SkipDecoding()},
        read_config=tfds.ReadConfig(try_autocache=False, shuffle_seed=None),
    )


def process_records(
    builder: tfds.core.DatasetBuilder,
    split: str,
    drop_remainder: bool,
    process: tuple[int, int] | None = None,
) -> tuple[tf.data.Dataset, int]:
    """Process `index` of `count`'s share of `split` (encoded, file order) and its size.

    `process` defaults to (jax.process_index(), jax.process_count()).
    """
    index, count = process or (jax.process_index(), jax.process_count())
    if isinstance(builder, tfds.folder_dataset.ImageFolder):  # no sub-split API: shard paths
        total = _num_examples(builder, split)
        ds = _raw(builder, split).shard(count, index)
        size = total // count if drop_remainder else len(range(index, total, count))
        return ds.take(size), size
    # tfds.split_for_jax_process, with the process given explicitly:
    process_split = tfds.even_splits(split, n=count, drop_remainder=drop_remainder)[index]
    return _raw(builder, process_split), _num_examples(builder, process_split)


def _decode(image: tf.Tensor) -> tf.Tensor:
    if image.dtype == tf.string:
        return tf.io.decode_image(image, channels=3, expand_animations=False)
    return image


def _epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7_919 + 17) % (2**31 - 1)


def train_batches(
    data_cfg: ml_collections.ConfigDict,
    global_batch_size: int,
    seed: int,
    start_step: int = 0,
    process: tuple[int, int] | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """This process's share of every training batch from `start_step` on (endless).

    Yields {"image": float32 [b, S, S, 3] in [-1, 1], "label": int32 [b]} with
    b = global_batch_size / process_count. `process` = (index, count) overrides JAX's, to
    reproduce another process's share. Epochs end on a whole batch (the remainder of an
    epoch is dropped), so batch k is batch k % steps_per_epoch of epoch k // steps_per_epoch.
    """
    builder = get_builder(data_cfg)
    process = process or (jax.process_index(), jax.process_count())
    if global_batch_size % process[1]:
        raise ValueError(
            f"global batch {global_batch_size} is not divisible by {process[1]} processes"
        )
    local_b = global_batch_size // process[1]
    records, per_process = process_records(
        builder, data_cfg.train_split, drop_remainder=True, process=process
    )
    steps_per_epoch = per_process // local_b
    if steps_per_epoch < 1:
        raise ValueError(
            f"{data_cfg.name} has {per_process} training examples per process, fewer than one "
            f"batch of {local_b}; lower train.global_batch_size."
        )
    size, color = data_cfg.image_size, data_cfg.color_distortion
    area = (data_cfg.min_crop_area, 1.0)
    first_epoch, batch_in_epoch = divmod(start_step, steps_per_epoch)
    for epoch in itertools.count(first_epoch):
        first = epoch * steps_per_epoch * local_b  # stream position of the epoch's 1st example

        def augment(index, example, first=first):
            example_seed = tf.stack(
                [tf.constant(seed * 9_973 + process[0], tf.int64), first + index]
            )
            image = train_preprocess(_decode(example["image"]), size, example_seed, color, area)
            return {"image": image, "label": tf.cast(example["label"], tf.int32)}

        ds = records.shuffle(
            min(data_cfg.shuffle_buffer, per_process),
            seed=_epoch_seed(seed, epoch),
            reshuffle_each_iteration=False,
        )
        ds = ds.take(steps_per_epoch * local_b).enumerate()
        ds = ds.skip(batch_in_epoch * local_b)
        ds = ds.map(augment, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        ds = ds.batch(local_b, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
        yield from tfds.as_numpy(ds)
        batch_in_epoch = 0


def eval_batches(
    data_cfg: ml_collections.ConfigDict,
    global_batch_size: int,
    crops: str = "center",
    max_examples: int | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """One pass over this process's share of the eval split (or its first `max_examples`).

    "image" is [b, S, S, 3] for the central crop, [b, K, S, S, 3] for a K-crop scheme (see
    `crops.py`). Every process yields the same number of batches (so collective eval steps
    line up); the padding examples have "mask" 0, real ones 1.
    """
    num_crops = check_scheme(crops)
    builder = get_builder(data_cfg)
    local_b = _local_batch(global_batch_size)
    split = data_cfg.eval_split
    if max_examples:
        split = f"{split}[:{min(max_examples, _num_examples(builder, split))}]"
    records, _ = process_records(builder, split, drop_remainder=False)
    total = _num_examples(builder, split)
    num_batches = math.ceil(math.ceil(total / jax.process_count()) / local_b)
    size = data_cfg.image_size

    def prepare(example):
        return {
            "image": eval_preprocess(_decode(example["image"]), size, crops),
            "label": tf.cast(example["label"], tf.int32),
            "mask": tf.constant(1.0, tf.float32),
        }

    ds = records.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
    padding = tf.data.Dataset.from_tensors(
        {
            "image": tf.zeros([size, size, 3] if num_crops == 1 else [num_crops, size, size, 3]),
            "label": tf.constant(0, tf.int32),
            "mask": tf.constant(0.0, tf.float32),
        }
    ).repeat()
    ds = ds.concatenate(padding).take(num_batches * local_b).batch(local_b)
    yield from tfds.as_numpy(ds.prefetch(tf.data.AUTOTUNE))

