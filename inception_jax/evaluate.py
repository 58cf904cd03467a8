"""Evaluate checkpoints or weight files, alone or as an ensemble, with a crop scheme.

    python -m inception_jax.evaluate --config=configs/inception_v4.py \\
        --weights=weights/inception_v4.safetensors --crops=144 --workdir=eval/v4

`--config` says which data to evaluate on (its `data` section and `train.eval_batch_size`);
each `--checkpoint=WORKDIR` (a training run; its moving-average weights unless `--noema`)
and `--weights=FILE` adds a member; several members are averaged in probability space.
The result is printed and written to `WORKDIR/eval_<split>_<crops>crop.json`.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import json
import math

import jax
from absl import flags

from inception_jax import cli
from inception_jax.data.crop_schemes import SCHEMES, check_scheme


def default_batch_size(eval_batch_size: int, num_crops: int) -> int:
    """About `eval_batch_size` crops per batch, in whole multiples of the device count."""
    n = jax.device_count()
    return max(n, int(math.ceil(eval_batch_size / num_crops / n)) * n)


@cli.friendly
def main(argv: list[str]) -> None:
    del argv
    cli.setup()
    num_crops = check_scheme(_CROPS.value)  # before the pipeline's import (TensorFlow's, ~3 s)
    from inception_jax.evaluation import evaluate, member_from_checkpoint, member_from_weights

    config = _CONFIG.value
    members = [member_from_checkpoint(d, _EMA.value, _STEP.value) for d in _CHECKPOINTS.value]
    members += [member_from_weights(f) for f in _WEIGHTS.value]
    batch = _BATCH.value or default_batch_size(config.train.eval_batch_size, num_crops)
    result = evaluate(
        members, config.data, _CROPS.value, batch, _MAX_EXAMPLES.value or None, progress=True
    )
    os.makedirs(_WORKDIR.value, exist_ok=True)
    path = os.path.join(_WORKDIR.value, f"eval_{result['split']}_{_CROPS.value}crop.json")
    with open(path, "w") as f:
        json.dump(result, f, indent=2)
    names = " + ".join(m["model"] for m in result["members"])
    print(
        f"{names} on {result['dataset']}/{result['split']} ({result['count']} images, "
        f"{_CROPS.value}-crop): top-1 {100 * result['top1']:.2f}%, "
        f"top-5 {100 * result['top5']:.2f}%  -> {path}"
    )


if __name__ == "__main__":  # flags exist only when run as a command
    _CONFIG = cli.config_file_flag("Config file (data to evaluate on).")
    _CHECKPOINTS = flags.DEFINE_multi_string("checkpoint", [], "Training workdir(s) to evaluate.")
    _WEIGHTS = flags.DEFINE_multi_string("weights", [], "Weights file(s) (import_weights output).")
    _CROPS = flags.DEFINE_string("crops", "center", f"Crop scheme: {', '.join(SCHEMES)}.")
    _WORKDIR = flags.DEFINE_string("workdir", None, "Where to write the JSON result.")
    _EMA = flags.DEFINE_bool("ema", True, "Use a checkpoint's moving-average weights.")
    _STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the newest).")
    _BATCH = flags.DEFINE_integer(
        "batch_size", 0, "Images per batch (default: config.train.eval_batch_size / crops)."
    )
    _MAX_EXAMPLES = flags.DEFINE_integer("max_examples", 0, "Evaluate only the first N examples.")
    flags.mark_flags_as_required(["config", "workdir"])
    cli.run(main)
