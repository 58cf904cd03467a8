"""ImageNet-2012 class names: synset ids from TFDS's imagenet2012 label file (shipped inside
`tensorflow_datasets`), readable names from WordNet (shipped with this package)."""

from __future__ import annotations

import functools
from importlib import resources


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
