"""Damaged or undecodable images: find them inside tf.data, then stop or skip and list them.

`attempt` runs a decode inside the input pipeline and returns a validity flag instead of
failing the whole stream ("skip" decodes every image so; "error" decodes without it, at no
cost, and only when TensorFlow fails decodes the failing batch again so, to find the image).
The pipeline carries the flag, the record's name and (for a bad record only) its bytes to
the host, where `BadImages` applies `data.on_bad_image`:

- "error": raise `BadImageError`, one line naming the file (path, or split and record index)
  and TensorFlow's reason, when the batch that holds it is taken.
- "skip": log each damaged file once (console and, given a path, a text file of
  `<name>\t<reason>` lines) and count them; the pipeline then leaves the image out of the
  batch (see `pipeline.py`).

The flag depends only on the record's bytes (and, in training, on the crop its seed samples),
so what is skipped, and so every batch, is the same in every run.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence

import tensorflow as tf

from inception_jax.errors import UserError

ON_BAD_IMAGE = ("error", "skip")
SKIPPED_LIST = "skipped_images.txt"

log = logging.getLogger(__name__)


class BadImageError(UserError):
    """An image of the dataset cannot be decoded and `data.on_bad_image` is "error"."""


def check_on_bad_image(value: str) -> str:
    """`value` if it is a known `data.on_bad_image` setting; UserError otherwise."""
    if value not in ON_BAD_IMAGE:
        raise UserError(
            f"data.on_bad_image={value!r}: use 'error' (stop at a damaged image, naming it) or "
            "'skip' (leave damaged images out and list them in WORKDIR/skipped_images.txt)."
        )
    return value


def skipped_list_path(workdir: str, process_index: int = 0) -> str:
    """Where a run lists the images it skipped: one file per process (process 0's is
    WORKDIR/skipped_images.txt; the others add `.process<i>`)."""
    name = SKIPPED_LIST if process_index == 0 else f"{SKIPPED_LIST}.process{process_index}"
    return os.path.join(workdir, name)


def attempt(
    fn: Callable[[tf.Tensor], tf.Tensor], value: tf.Tensor, fallback: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
    """(fn(value), True), or (fallback, False) where fn raises (graph mode, inside tf.data).

    A one-element dataset whose errors are ignored acts as try/except; `fallback` must fit
    fn's output (same dtype, compatible shape).
    """
    untransformed = tf.autograph.experimental.do_not_convert(lambda v: (fn(v), True))
    tried = tf.data.Dataset.from_tensors(value).map(untransformed).ignore_errors()
    otherwise = tf.data.Dataset.from_tensors((fallback, False))
    return tried.concatenate(otherwise).take(1).get_single_element()


def reason(encoded: bytes) -> str:
    """Why `encoded` does not decode: TensorFlow's message (run eagerly, on the host)."""
    if not encoded:
        return "the file is empty"
    try:
        tf.io.decode_image(encoded, channels=3, expand_animations=False)
    except tf.errors.OpError as e:
        message = e.message.split("}}")[-1].split("[Op:")[0].strip()
        return message or type(e).__name__
    # The whole image decodes; only the part the training crop needed did not.
    return "the JPEG data of the sampled crop could not be decoded"


def _read_list(path: str) -> dict[str, str]:
    if not tf.io.gfile.exists(path):
        return {}
    with tf.io.gfile.GFile(path) as f:
        lines = [line.rstrip("\n").split("\t", 1) for line in f if line.strip()]
    return {parts[0]: parts[-1] for parts in lines}


class BadImages:
    """Applies `data.on_bad_image` to the damaged images found in host batches.

    `skipped` holds every file skipped so far, by name, including those an earlier run in
    the same workdir listed in `list_path`; each is logged and written once. `count` is the
    number of damaged records skipped (a file met in three epochs counts three times).
    """

    def __init__(self, on_bad_image: str, list_path: str | None = None):
        self.mode = check_on_bad_image(on_bad_image)
        self.list_path = list_path
        self.skipped: dict[str, str] = _read_list(list_path) if list_path else {}
        self.count = 0

    def handle(self, found: Sequence[tuple[str, bytes]]) -> None:
        """`found` = (name, bytes) of each damaged image of one batch, in batch order: raise
        (mode "error") or log the new ones (mode "skip")."""
        if not found:
            return
        named = [(name, reason(data)) for name, data in found]
        if self.mode == "error":
            name, why = named[0]
            more = f" ({len(named) - 1} more in the same batch)" if len(named) > 1 else ""
            raise BadImageError(
                f"Damaged image {name}: {why}{more}. Remove or replace it, or set "
                "--config.data.on_bad_image=skip to leave damaged images out."
            )
        self.count += len(named)
        new = {name: why for name, why in named if name not in self.skipped}
        for name, why in new.items():
            log.warning("Skipping damaged image %s: %s", name, why)
        self.skipped.update(new)
        if new and self.list_path:
            listed = _read_list(self.list_path)  # the eval stream may have added some
            listed.update(self.skipped)
            self.skipped = listed
            with tf.io.gfile.GFile(self.list_path, "w") as f:
                f.write("".join(f"{name}\t{why}\n" for name, why in listed.items()))


class HostBatches:
    """An iterator of host batches that also says how many damaged images were skipped.

    Both counts are this process's and cover the batches taken so far (the trainer's
    prefetch takes a few ahead of the step it runs).
    """

    def __init__(self, batches: Iterator[dict], bad_images: BadImages):
        self._batches, self.bad_images = batches, bad_images

    def __iter__(self) -> HostBatches:
        return self

    def __next__(self) -> dict:
        return next(self._batches)

    @property
    def num_skipped(self) -> int:
        """Damaged records this iterator skipped, each time it met one."""
        return self.bad_images.count

    @property
    def num_listed(self) -> int:
        """Distinct damaged files skipped, with those an earlier run listed in the same
        skipped list (the same after a resume)."""
        return len(self.bad_images.skipped)
