"""Class names: ImageNet-2012's (synset ids from TFDS's imagenet2012 label file, shipped inside
`tensorflow_datasets`, readable names from WordNet, shipped with this package), a dataset's, and
the `class_names.json` a training run writes beside its checkpoints."""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Sequence
from importlib import resources

from inception_jax.atomic import write_atomically


@functools.cache
def imagenet_class_names() -> list[str]:
    """The 1000 class names in label order, e.g. "tench, Tinca tinca" for label 0."""
    tfds_labels = resources.files("tensorflow_datasets") / "datasets/imagenet2012/labels.txt"
    wnids = [line.strip() for line in tfds_labels.read_text().splitlines() if line.strip()]
    table = resources.files("inception_jax.data") / "imagenet_class_names.tsv"
    names = {}
    for line in table.read_text().splitlines():
        if line and not line.startswith("#"):
            wnid, _, lemmas = line.partition("\t")
            names[wnid] = lemmas
    return [names.get(w, w) for w in wnids]


RUN_CLASS_NAMES = "class_names.json"


def dataset_class_names(dataset: str, label_names: Sequence[str]) -> tuple[str, ...]:
    """Readable class names in label order: ImageNet's synset ids become WordNet names."""
    if dataset == "imagenet2012" and len(label_names) == 1000:
        return tuple(imagenet_class_names())
    return tuple(str(n) for n in label_names)


def save_run_class_names(workdir: str, names: Sequence[str]) -> None:
    """Writes a training run's class names beside its checkpoints (export and predict read
    them)."""
    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(list(names), f, indent=0)

    write_atomically(os.path.join(workdir, RUN_CLASS_NAMES), write)


def run_class_names(workdir: str) -> tuple[str, ...] | None:
    """The class names a training run wrote, or None (a run from before they were written)."""
    path = os.path.join(workdir, RUN_CLASS_NAMES)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return tuple(json.load(f))
