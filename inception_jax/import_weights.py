"""Convert timm, Keras or TF-Slim weights into an inception_jax weights file.

    python -m inception_jax.import_weights --input=inception_v4.ckpt --model=inception_v4 \\
        --out=weights/inception_v4.safetensors [--format=slim] [--background=drop]

Formats (detected from the file name unless --format is given):
- timm: `.safetensors` (read with safetensors' numpy API) or `.pth`/`.pt`/`.bin` (read with
  `torch.load(weights_only=True)`; needs torch). Files are never unpickled.
- keras: Keras applications `.h5` / `.weights.h5` (InceptionV3, InceptionResNetV2).
- slim: TF-Slim checkpoints (`x.ckpt`, or its `.index` / `.data-*` files); 1001 classes with
  background class 0, dropped (default) or kept (`--background=keep`).
The output file records the model name and knobs; `evaluate --weights`, `predict` and
fine-tuning (`--config.train.init_weights`) read it.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import json
import re
from typing import Any

from absl import flags

from inception_jax import cli
from inception_jax.errors import UserError
from inception_jax.interop.common import WeightImportError, WeightsFileNotFoundError

FORMATS = ("timm", "keras", "slim")


def detect_format(path: str) -> str:
    """timm / keras / slim from the file name; UserError when it cannot tell."""
    name = os.path.basename(path).lower()
    if name.endswith((".safetensors", ".pth", ".pt", ".bin")):
        return "timm"
    if name.endswith(".h5"):
        return "keras"
    if re.search(r"\.ckpt(\.index|\.data-\d+-of-\d+|\.meta)?$", name) or name.endswith(".index"):
        return "slim"
    raise UserError(
        f"Cannot tell the format of {path} from its name: pass --format "
        f"({', '.join(FORMATS)})."
    )


def _timm_state(path: str) -> dict[str, Any]:
    if path.lower().endswith(".safetensors"):
        from safetensors.numpy import load_file

        try:
            return load_file(path)
        except Exception as e:  # truncated or not safetensors at all
            raise WeightImportError(f"{path} is not a readable safetensors file ({e}).") from e
    try:
        import torch
    except ImportError as e:
        raise UserError(
            f"Reading {path} needs torch (pip install torch), or convert it to .safetensors."
        ) from e
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickles with code are refused here too
        raise WeightImportError(f"{path} could not be read as a torch state_dict ({e}).") from e
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    return {k: v.float().numpy() for k, v in state.items() if hasattr(v, "numpy")}


def import_weights(
    path: str, model: str, fmt: str = "auto", background: str = "drop", **knobs: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(variables, the model knobs they need) from a timm, Keras or TF-Slim file."""
    if not os.path.exists(path) and not os.path.exists(path + ".index"):
        raise WeightsFileNotFoundError(f"{path} does not exist.")
    fmt = detect_format(path) if fmt == "auto" else fmt
    if fmt == "timm":
        from inception_jax.interop import timm

        knobs = {**timm.DEFAULT_KNOBS.get(model, {}), **knobs}
        return timm.convert(model, _timm_state(path), **knobs), knobs
    if fmt == "keras":
        from inception_jax.interop import keras

        knobs = {**keras.DEFAULT_OVERRIDES, **knobs}
        return keras.convert(model, keras.load_file(path), **knobs), knobs
    if fmt == "slim":
        from inception_jax.interop import slim

        return slim.convert(model, slim.load_checkpoint(path), background=background, **knobs)
    raise UserError(f"Unknown format {fmt!r}: use one of {', '.join(FORMATS)}.")


@cli.friendly
def main(argv: list[str]) -> None:
    del argv
    cli.setup()
    from inception_jax.weights import save_weights

    knobs = {}
    for item in _KNOBS.value:
        key, _, value = item.partition("=")
        try:
            knobs[key] = json.loads(value)
        except json.JSONDecodeError as e:
            raise UserError(f"--knob {item!r}: the value must be JSON, e.g. 0.5 or true") from e
    fmt = detect_format(_INPUT.value) if _FORMAT.value == "auto" else _FORMAT.value
    variables, knobs = import_weights(_INPUT.value, _MODEL.value, fmt, _BACKGROUND.value, **knobs)
    save_weights(_OUT.value, variables, _MODEL.value, knobs, source=f"{fmt}:{_INPUT.value}")
    print(f"wrote {_OUT.value}: {_MODEL.value} {knobs} from {fmt} file {_INPUT.value}")


if __name__ == "__main__":  # flags exist only when run as a command
    _INPUT = flags.DEFINE_string("input", None, "File to convert.")
    _MODEL = flags.DEFINE_string("model", None, "Our model name, e.g. inception_resnet_v2.")
    _OUT = flags.DEFINE_string("out", None, "Output weights file (.safetensors).")
    _FORMAT = flags.DEFINE_enum("format", "auto", ("auto", *FORMATS), "Source format.")
    _BACKGROUND = flags.DEFINE_enum(
        "background", "drop", ("drop", "keep"), "TF-Slim's background class 0: drop or keep."
    )
    _KNOBS = flags.DEFINE_multi_string(
        "knob", [], "Extra model knob NAME=JSON_VALUE, e.g. --knob=dtype='\"bfloat16\"'."
    )
    flags.mark_flags_as_required(["input", "model", "out"])
    cli.run(main)
