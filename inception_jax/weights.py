"""Our weights file: a `.safetensors` of the model's variables that names its architecture.

The file holds every leaf of `{"params", "batch_stats"}` under its `/`-joined path and, in the
safetensors metadata, the model name and the constructor knobs that fix its shapes, so that a
weights file alone is enough to rebuild the network (`python -m inception_jax.evaluate
--weights=FILE`, `predict`, fine-tuning). Files are read with safetensors' numpy API: no pickle.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
from flax import traverse_util

from inception_jax.interop.common import WeightImportError, WeightsFileNotFoundError
from inception_jax.models import InceptionNet, create

FORMAT = "inception_jax.weights/1"
COLLECTIONS = ("params", "batch_stats")


def save_weights(
    path: str, variables: dict[str, Any], model: str, knobs: dict[str, Any], source: str = ""
) -> None:
    """Writes `variables` of `create(model, **knobs)` to `path` (atomically)."""
    from safetensors.numpy import save_file

    create(model, **knobs)  # the knobs must describe a valid model
    flat = traverse_util.flatten_dict(
        {k: v for k, v in variables.items() if k in COLLECTIONS}, sep="/"
    )
    arrays = {k: np.ascontiguousarray(np.asarray(v, np.float32)) for k, v in flat.items()}
    metadata = {"format": FORMAT, "model": model, "knobs": json.dumps(knobs, sort_keys=True),
                "source": source}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    save_file(arrays, tmp, metadata=metadata)
    os.replace(tmp, path)


def read_weights(path: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(model name, knobs, variables) from a weights file written by `save_weights`."""
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
    variables = traverse_util.unflatten_dict(arrays, sep="/")
    return metadata["model"], json.loads(metadata["knobs"]), variables


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
