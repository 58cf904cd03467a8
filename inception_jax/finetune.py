"""Start training from pretrained weights: keep every trunk variable, re-initialise the heads
whose class count differs (fine-tuning to a new dataset)."""

from __future__ import annotations

from typing import Any

import numpy as np
from flax import traverse_util

from inception_jax.interop.common import WeightImportError

# Classifier layers: replaced by fresh ones when their shape differs (a new class count) or
# when the weights file has none (the whole aux head, added for fine-tuning).
HEADS = (("params", "head"), ("params", "aux"), ("batch_stats", "aux"))


def _is_head(path: tuple[str, ...]) -> bool:
    return any(path[: len(h)] == h for h in HEADS)


def merge_pretrained(
    fresh: dict[str, Any], pretrained: dict[str, Any], source: str, knobs: dict[str, Any]
) -> tuple[dict[str, Any], list[str]]:
    """`fresh` (a new model's {"params", "batch_stats"}) with `pretrained`'s values put in.

    Returns the merged variables and the `/`-joined paths left at their fresh values (heads
    whose class count differs, or an aux head the file lacks). Any other difference raises
    `WeightImportError` naming the knobs the file was made with (`knobs`).
    """
    ours = traverse_util.flatten_dict(fresh)
    theirs = traverse_util.flatten_dict(pretrained)
    merged, kept_fresh, bad = {}, [], []
    for path, value in ours.items():
        other = theirs.get(path)
        if other is not None and np.shape(other) == np.shape(value):
            merged[path] = np.asarray(other, np.float32)
        elif _is_head(path):
            merged[path] = value
            kept_fresh.append("/".join(path))
        else:
            bad.append("/".join(path))
    unused = ["/".join(p) for p in theirs if p not in ours and not _is_head(p)]
    if bad or unused:
        flags = " ".join(f"--config.model.{k}={v}" for k, v in sorted(knobs.items()))
        raise WeightImportError(
            f"{source} does not fit the configured model: {len(bad)} variables missing or "
            f"mis-shaped (e.g. {', '.join(bad[:3])}), {len(unused)} extra. The file was made "
            f"with: {flags}. Set the same model knobs (num_classes may differ)."
        )
    return traverse_util.unflatten_dict(merged), kept_fresh
