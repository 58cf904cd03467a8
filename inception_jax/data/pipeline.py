"""The input pipeline over TensorFlow Datasets.

`data_cfg` (the config's `data` section) fields: `name` ("inception_shapes", "imagenet2012"
or "image_folder"), `data_dir` (TFDS directory; None = TFDS default), `image_size` (model
input), `train_split`, `eval_split`, `shuffle_buffer`, `color_distortion` (on/off) and
`color_distortion_mode` (see `preprocess.distort_color`), `min_crop_area`
(lower end of the random crop's area fraction), `folder` (root/split/label/*.jpg for
image_folder) and `builder` (image_size, num_train, num_test, seed of inception_shapes).

The training stream is a pure function of (config, seed, global batch, process index/count):
epoch e is shuffled with a seed made from (seed, e), each example is augmented with a seed
made from its position in the stream, and `train_batches(..., start_step=k)` yields exactly
batch k onwards — skipping still-encoded records, so resuming decodes nothing twice.

Training decodes only each JPEG's sampled crop (see `preprocess.py`). A record that does not
decode is handled as `data.on_bad_image` says (see `bad_images.py`): "error" stops naming it;
"skip" fills its place in the training batch with a copy of the batch's previous good
example (the next one if it is the first), so that batches keep their size and their records,
and resuming still counts records; in evaluation its "mask" is 0.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import os
from collections.abc import Callable, Iterator
from typing import Any

import jax
import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from jax.experimental import multihost_utils

from inception_jax.data.bad_images import BadImageError, BadImages, HostBatches, attempt
from inception_jax.data.class_names import dataset_class_names
from inception_jax.data.crop_schemes import check_scheme
from inception_jax.data.preprocess import (
    COLOR_MODES,
    decode_train_crop,
    eval_preprocess,
    finish_train_crop,
    train_crop,
)
from inception_jax.errors import UserError
from inception_jax.sharding import local_batch_size

DATASETS = ("inception_shapes", "imagenet2012", "image_folder")


class DatasetNotPreparedError(UserError, FileNotFoundError):
    """The dataset's files are not there; the message says how to prepare them."""


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """Sizes the trainer needs."""

    num_train_examples: int
    num_eval_examples: int
    num_classes: int
    image_size: int
    class_names: tuple[str, ...] = ()  # in label order; empty where the data has none


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
        make = lambda: InceptionShapes(
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
    raise UserError(f"Unknown dataset {data_cfg.name!r}. Known datasets: {', '.join(DATASETS)}.")


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
            raise UserError(
                f"{data_cfg.name} has no split {split!r}; it has {sorted(builder.info.splits)}."
            )
    label = builder.info.features["label"]
    return DatasetInfo(
        num_train_examples=_num_examples(builder, data_cfg.train_split),
        num_eval_examples=_num_examples(builder, data_cfg.eval_split),
        num_classes=int(label.num_classes),
        image_size=data_cfg.image_size,
        class_names=dataset_class_names(data_cfg.name, label.names),
    )


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

    Each example gains "record": its index in `split` (to name it in messages). `process`
    defaults to (jax.process_index(), jax.process_count()).
    """
    index, count = process or (jax.process_index(), jax.process_count())
    if isinstance(builder, tfds.folder_dataset.ImageFolder):  # no sub-split API: shard paths
        total = _num_examples(builder, split)
        ds = _raw(builder, split).enumerate().shard(count, index)
        size = total // count if drop_remainder else len(range(index, total, count))
        return _map(ds.take(size), _with_record), size
    # tfds.split_for_jax_process, with the process given explicitly:
    shares = tfds.even_splits(split, n=count, drop_remainder=drop_remainder)
    start = sum(_num_examples(builder, share) for share in shares[:index])
    ds = _map(_raw(builder, shares[index]).enumerate(start), _with_record)
    return ds, _num_examples(builder, shares[index])


def _map(ds: tf.data.Dataset, fn: Callable[..., Any], **kwargs: Any) -> tf.data.Dataset:
    """`ds.map(fn)` without AutoGraph: our functions branch only on Python values, and
    AutoGraph's rewrite of them was most of the pipeline's start-up (BENCHMARKS.md)."""
    return ds.map(tf.autograph.experimental.do_not_convert(fn), **kwargs)


def _with_record(record: tf.Tensor, example: dict) -> dict:
    return {**example, "record": record}


def _fallback() -> tf.Tensor:
    """The image of a record that does not decode (made in the map's graph, not at import:
    an eager tensor would start TensorFlow's devices before the trainer hides the GPUs)."""
    return tf.zeros([1, 1, 3], tf.uint8)


_HOST_KEYS = ("ok", "record", "file", "encoded")  # taken out of each batch on the host


def _host_fields(example: dict, ok: tf.Tensor) -> dict:
    """What the host needs to name a record that did not decode: its index, file name and
    bytes (names and bytes are left empty for records that decoded)."""
    empty = tf.constant("", tf.string)
    file = example.get("image/filename", example.get("file_name", empty))
    encoded = example["image"] if example["image"].dtype == tf.string else empty
    return {"ok": ok, "record": example["record"], "file": tf.where(ok, empty, file),
            "encoded": tf.where(ok, empty, encoded)}


def color_distortion(data_cfg: ml_collections.ConfigDict) -> str | None:
    """The training colour distortion: `data.color_distortion_mode` ("fast", slim's default, or
    "full") when `data.color_distortion` is on, else None; UserError for an unknown mode."""
    mode = data_cfg.color_distortion_mode
    if mode not in COLOR_MODES:
        raise UserError(
            f"data.color_distortion_mode={mode!r}: use 'fast' (slim's default: brightness and "
            "saturation) or 'full' (brightness, saturation, hue and contrast in a random order)."
        )
    return mode if data_cfg.color_distortion else None


def decode_and_augment(
    image: tf.Tensor,
    image_size: int,
    seed: tf.Tensor,
    color_distortion: str | None,
    area_range: tuple[float, float] = (0.05, 1.0),
    guarded: bool = False,
) -> tuple[tf.Tensor, tf.Tensor]:
    """(training example in [-1, 1], decoded?) of one record's image (encoded, or decoded
    as `tfds.testing.mock_data` gives it): only a JPEG's crop is decoded. `guarded` (for
    data.on_bad_image="skip") turns a decoding error into decoded=False; unguarded, an
    error fails the stream and decoded is always True."""
    if image.dtype != tf.string:
        crop, ok = train_crop(image, seed, area_range), tf.constant(True)
    elif guarded:
        crop, ok = attempt(lambda e: decode_train_crop(e, seed, area_range), image, _fallback())
    else:
        crop, ok = decode_train_crop(image, seed, area_range), tf.constant(True)
    return finish_train_crop(crop, image_size, seed, color_distortion), ok


def _decode_whole(image: tf.Tensor, guarded: bool) -> tuple[tf.Tensor, tf.Tensor]:
    """(uint8 image, decoded?) of one record's image (see `decode_and_augment`)."""
    if image.dtype != tf.string:
        return image, tf.constant(True)
    decode = lambda e: tf.io.decode_image(e, channels=3, expand_animations=False)
    return attempt(decode, image, _fallback()) if guarded else (decode(image), tf.constant(True))


def _namer(data_cfg: ml_collections.ConfigDict, split: str) -> Callable[[int, str], str]:
    """name(record, file) of a record in messages: the path for an image folder, else the
    split and record index (and the file name where the dataset keeps one)."""

    def name(record: int, file: str) -> str:
        if data_cfg.name == "image_folder" and file:
            return file
        where = f"record {record} of {data_cfg.name} split {split!r}"
        return f"{where} ({file})" if file else where

    return name


def _decoded_flags(batch: dict, name: Callable, bad_images: BadImages) -> np.ndarray:
    """Removes the host-side fields from `batch`, applies `data.on_bad_image` to the records
    that did not decode, and returns the batch's "decoded" flags."""
    if "ok" not in batch:  # an unguarded batch: every record decoded
        return np.ones(len(batch["label"]), bool)
    ok, record, file, encoded = (batch.pop(k) for k in _HOST_KEYS)
    bad_images.handle([(name(int(record[i]), file[i].decode()), bytes(encoded[i]))
                       for i in np.flatnonzero(~ok)])
    return ok


def _checked_batches(
    make: Callable[[int, bool], tf.data.Dataset],
    first_batch: int,
    name: Callable,
    bad_images: BadImages,
) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray]]:
    """(batch, decoded flags) of the batches of `make(first_batch, guarded)`.

    `make(k, guarded)` is the dataset from batch k on. "skip" decodes guarded (a flag per
    record; about 1 ms more CPU per image, 8-16 % of the training pipeline at 299²); "error"
    decodes unguarded, at no cost, and where TensorFlow fails at batch k makes batch k again
    guarded to name the damaged image it holds.
    """
    guarded = bad_images.mode == "skip"
    batches = iter(tfds.as_numpy(make(first_batch, guarded)))
    for k in itertools.count(first_batch):
        try:
            batch = next(batches)
        except StopIteration:
            return
        except tf.errors.OpError as e:
            if guarded:
                raise
            failed = e
        else:
            yield batch, _decoded_flags(batch, name, bad_images)
            continue
        again = next(iter(tfds.as_numpy(make(k, True).take(1))))
        _decoded_flags(again, name, bad_images)  # raises BadImageError naming the image
        raise failed  # not a damaged image: TensorFlow's own error


def fill_bad(batch: dict[str, np.ndarray], ok: np.ndarray) -> dict[str, np.ndarray]:
    """`batch` with each example that did not decode replaced by the batch's previous good
    example (the first good one for those before it); a pure function of the flags."""
    if ok.all():
        return batch
    good = np.flatnonzero(ok)
    if not good.size:
        raise BadImageError(
            f"All {ok.size} images of a training batch are damaged (listed above): check "
            "that the dataset holds images."
        )
    source = good[np.maximum(np.searchsorted(good, np.arange(ok.size), side="right") - 1, 0)]
    return {k: v[source] for k, v in batch.items()}


def _epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7_919 + 17) % (2**31 - 1)


def train_batches(
    data_cfg: ml_collections.ConfigDict,
    global_batch_size: int,
    seed: int,
    start_step: int = 0,
    process: tuple[int, int] | None = None,
    skipped_list: str | None = None,
) -> HostBatches:
    """This process's share of every training batch from `start_step` on (endless).

    Yields {"image": float32 [b, S, S, 3] in [-1, 1], "label": int32 [b]} with
    b = global_batch_size / process_count. `process` = (index, count) overrides JAX's, to
    reproduce another process's share. Epochs end on a whole batch (the remainder of an
    epoch is dropped), so batch k is batch k % steps_per_epoch of epoch k // steps_per_epoch.
    Damaged images follow `data_cfg.on_bad_image`; skipped ones are listed in `skipped_list`
    (a path, e.g. `bad_images.skipped_list_path(workdir, process_index)`) and counted in the
    iterator's `num_skipped`.
    """
    bad_images = BadImages(data_cfg.on_bad_image, skipped_list)
    builder = get_builder(data_cfg)
    process = process or (jax.process_index(), jax.process_count())
    local_b = local_batch_size(global_batch_size, process[1])
    records, per_process = process_records(
        builder, data_cfg.train_split, drop_remainder=True, process=process
    )
    steps_per_epoch = per_process // local_b
    if steps_per_epoch < 1:
        raise UserError(
            f"{data_cfg.name} has {per_process} training examples per process, fewer than one "
            f"batch of {local_b}; lower train.global_batch_size."
        )
    size, color = data_cfg.image_size, color_distortion(data_cfg)
    area = (data_cfg.min_crop_area, 1.0)
    name = _namer(data_cfg, data_cfg.train_split)

    def epoch_batches(epoch: int, first_batch: int, guarded: bool) -> tf.data.Dataset:
        start = epoch * steps_per_epoch * local_b  # stream position of the epoch's 1st example

        def augment(index, example):
            example_seed = tf.stack(
                [tf.constant(seed * 9_973 + process[0], tf.int64), start + index]
            )
            image, ok = decode_and_augment(example["image"], size, example_seed, color, area,
                                           guarded)
            out = {"image": image, "label": tf.cast(example["label"], tf.int32)}
            return {**out, **_host_fields(example, ok)} if guarded else out

        ds = records.shuffle(
            min(data_cfg.shuffle_buffer, per_process),
            seed=_epoch_seed(seed, epoch),
            reshuffle_each_iteration=False,
        )
        ds = ds.take(steps_per_epoch * local_b).enumerate()
        ds = ds.skip(first_batch * local_b)
        ds = _map(ds, augment, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return ds.batch(local_b, drop_remainder=True).prefetch(tf.data.AUTOTUNE)

    def stream() -> Iterator[dict[str, np.ndarray]]:
        first_epoch, first_batch = divmod(start_step, steps_per_epoch)
        for epoch in itertools.count(first_epoch):
            make = functools.partial(epoch_batches, epoch)
            for batch, ok in _checked_batches(make, first_batch, name, bad_images):
                yield fill_bad(batch, ok)
            first_batch = 0

    return HostBatches(stream(), bad_images)


def eval_batches(
    data_cfg: ml_collections.ConfigDict,
    global_batch_size: int,
    crops: str = "center",
    max_examples: int | None = None,
    skipped_list: str | None = None,
) -> HostBatches:
    """One pass over this process's share of the eval split (or its first `max_examples`).

    "image" is [b, S, S, 3] for the central crop, [b, K, S, S, 3] for a K-crop scheme (see
    `crops.py`). Every process yields the same number of batches (so collective eval steps
    line up); the padding examples have "mask" 0, real ones 1. Damaged images follow
    `data_cfg.on_bad_image`; a skipped one has "mask" 0 and is listed in `skipped_list`.
    """
    num_crops = check_scheme(crops)
    bad_images = BadImages(data_cfg.on_bad_image, skipped_list)
    builder = get_builder(data_cfg)
    local_b = local_batch_size(global_batch_size)
    split = data_cfg.eval_split
    if max_examples:
        split = f"{split}[:{min(max_examples, _num_examples(builder, split))}]"
    records, _ = process_records(builder, split, drop_remainder=False)
    total = _num_examples(builder, split)
    num_batches = math.ceil(math.ceil(total / jax.process_count()) / local_b)
    size = data_cfg.image_size
    name = _namer(data_cfg, data_cfg.eval_split)
    padding = {
        "image": tf.zeros([size, size, 3] if num_crops == 1 else [num_crops, size, size, 3]),
        "label": tf.constant(0, tf.int32),
        "mask": tf.constant(0.0, tf.float32),
    }
    padding_fields = _host_fields(
        {"image": tf.constant(""), "record": tf.constant(-1, tf.int64)}, tf.constant(True)
    )

    def batches_from(first_batch: int, guarded: bool) -> tf.data.Dataset:
        def prepare(example):
            image, ok = _decode_whole(example["image"], guarded)
            out = {
                "image": eval_preprocess(image, size, crops),
                "label": tf.cast(example["label"], tf.int32),
                "mask": tf.constant(1.0, tf.float32),
            }
            return {**out, **_host_fields(example, ok)} if guarded else out

        pad = {**padding, **padding_fields} if guarded else padding
        ds = _map(records.skip(first_batch * local_b), prepare,
                  num_parallel_calls=tf.data.AUTOTUNE)
        ds = ds.concatenate(tf.data.Dataset.from_tensors(pad).repeat())
        ds = ds.take((num_batches - first_batch) * local_b).batch(local_b)
        return ds.prefetch(tf.data.AUTOTUNE)

    def stream() -> Iterator[dict[str, np.ndarray]]:
        for batch, ok in _checked_batches(batches_from, 0, name, bad_images):
            yield {**batch, "mask": np.where(ok, batch["mask"], np.float32(0.0))}

    return HostBatches(stream(), bad_images)
