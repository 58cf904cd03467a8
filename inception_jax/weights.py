"""Our weights file: a `.safetensors` of the model's variables that names its architecture.

The file holds every leaf of `{"params", "batch_stats"}` under its `/`-joined path and, in the
safetensors metadata, the model name and the constructor knobs that fix its shapes, so that a
weights file alone is enough to rebuild the network (`python -m inception_jax.evaluate
--weights=FILE`, `predict`, fine-tuning); optionally the image size it was trained at and its
class names (files exported from a training run have both); and the CRC32C of its tensors
(`checksum`), which every read verifies. Files are read with safetensors' numpy API: no pickle.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from flax import traverse_util

from inception_jax.atomic import write_atomically
from inception_jax.checksums import ALGORITHM, arrays_crc32c
from inception_jax.interop.common import WeightImportError, WeightsFileNotFoundError
from inception_jax.models import InceptionNet, create

log = logging.getLogger(__name__)

FORMAT = "inception_jax.weights/1"
COLLECTIONS = ("params", "batch_stats")


@dataclasses.dataclass(frozen=True)
class WeightsFile:
    """What a weights file holds."""

    model: str
    knobs: dict[str, Any]
    variables: dict[str, Any]
    image_size: int | None = None  # the size the network was trained at, if recorded
    class_names: tuple[str, ...] | None = None  # the classes' names in label order, if recorded


def save_weights(
    path: str, variables: dict[str, Any], model: str, knobs: dict[str, Any], source: str = "",
    image_size: int | None = None, class_names: Sequence[str] | None = None,
) -> None:
    """Writes `variables` of `create(model, **knobs)` to `path` (atomically)."""
    from safetensors.numpy import save_file

    create(model, **knobs)  # the knobs must describe a valid model
    flat = traverse_util.flatten_dict(
        {k: v for k, v in variables.items() if k in COLLECTIONS}, sep="/"
    )
    arrays = {k: np.ascontiguousarray(np.asarray(v, np.float32)) for k, v in flat.items()}
    metadata = {"format": FORMAT, "model": model, "knobs": json.dumps(knobs, sort_keys=True),
                "source": source, "checksum": f"{ALGORITHM}:{arrays_crc32c(arrays)}"}
    if image_size:
        metadata["image_size"] = str(int(image_size))
    if class_names:
        metadata["class_names"] = json.dumps(list(class_names))
    write_atomically(path, lambda tmp: save_file(arrays, tmp, metadata=metadata))


def read_weights(path: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(model name, knobs, variables) from a weights file written by `save_weights`."""
    w = load_weights(path)
    return w.model, w.knobs, w.variables


def load_weights(path: str) -> WeightsFile:
    """Everything in a weights file written by `save_weights`, its checksum verified."""
    from safetensors import safe_open
    from safetensors.numpy import load_file

    if not os.path.isfile(path):
        raise WeightsFileNotFoundError(
            f"Weights file {path} does not exist. Make one from timm, Keras or TF-Slim files "
            "with `python -m inception_jax.import_weights`; to evaluate a training run, pass "
            "its workdir instead (`python -m inception_jax.evaluate --checkpoint=WORKDIR`)."
        )
    try:
        with safe_open(path, framework="numpy") as f:
            metadata = f.metadata() or {}
        arrays = load_file(path)
    except Exception as e:  # truncated or not safetensors at all
        raise WeightImportError(
            f"{path} is not a readable safetensors file ({e}). Re-download it, or convert its "
            "source again with `python -m inception_jax.import_weights`."
        ) from e
    if metadata.get("format") != FORMAT:
        raise WeightImportError(
            f"{path} is a safetensors file but not an inception_jax weights file (no "
            f"{FORMAT!r} metadata). If it is a timm checkpoint, convert it first: python -m "
            f"inception_jax.import_weights --input={path} --format=timm --model=NAME "
            "--out=weights.safetensors"
        )
    _verify(path, metadata.get("checksum"), arrays)
    names = metadata.get("class_names")
    return WeightsFile(
        model=metadata["model"],
        knobs=json.loads(metadata["knobs"]),
        variables=traverse_util.unflatten_dict(arrays, sep="/"),
        image_size=int(metadata["image_size"]) if metadata.get("image_size") else None,
        class_names=tuple(json.loads(names)) if names else None,
    )


def _verify(path: str, recorded: str | None, arrays: dict[str, np.ndarray]) -> None:
    """WeightImportError if the tensors' CRC32C is not the one recorded; a note if none is."""
    if recorded is None:
        log.info("%s carries no checksum (written before weights files had one): read "
                 "unverified.", path)
        return
    found = f"{ALGORITHM}:{arrays_crc32c(arrays)}"
    if found != recorded:
        raise WeightImportError(
            f"{path} is damaged: its tensors' checksum is {found}, the file records "
            f"{recorded}. Copy or download it again, or re-export it."
        )


def check_fits(model: InceptionNet, variables: dict[str, Any], image_size: int, path: str) -> None:
    """Raises WeightImportError unless `variables` have exactly `model`'s paths and shapes."""
    from inception_jax.interop.common import expected_shapes

    want = expected_shapes(model, image_size)
    have = {
        k: tuple(np.shape(v))
        for k, v in traverse_util.flatten_dict(
            {c: variables.get(c, {}) for c in COLLECTIONS}
        ).items()
    }
    bad = sorted("/".join(k) for k in set(want) | set(have) if want.get(k) != have.get(k))
    if bad:
        raise WeightImportError(
            f"{path} does not fit the model ({len(bad)} variables differ, e.g. "
            f"{', '.join(bad[:5])}). Create the model with the knobs stored in the file."
        )
