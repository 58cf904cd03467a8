"""Import TF-Slim checkpoints (`inception_v3.ckpt`, `inception_v4.ckpt`,
`inception_resnet_v2_2016_08_30.ckpt`) into our models.

slim's networks have 1001 classes (index 0 = background) and BatchNorm without gamma; the
released checkpoints include the auxiliary head. `convert` returns the variables and the model
knobs they need (`bn_scale=False`, `aux_head`, `num_classes` 1000 or 1001). Names follow slim's
scopes: `InceptionV4/Mixed_6b/Branch_1/Conv2d_0b_1x7/weights`, `.../BatchNorm/beta`,
`moving_mean`, `moving_variance`; repeated residual blocks live in `Repeat/block35_N`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from inception_jax.errors import UserError
from inception_jax.interop.common import (
    Entry,
    WeightImportError,
    WeightsFileNotFoundError,
    assemble,
    matched_units,
)
from inception_jax.models import create
from inception_jax.models.network import InceptionNet

SUPPORTED = ("inception_v3", "inception_v4", "inception_resnet_v2")
SCOPES = {"inception_v3": "InceptionV3", "inception_v4": "InceptionV4",
          "inception_resnet_v2": "InceptionResnetV2"}
BACKGROUND = ("drop", "keep")


def _b(i: int, *names: str) -> list[str]:
    return [f"Branch_{i}/{n}" for n in names]


# slim's conv scopes inside each block, in our conv order (b0_0, b1_0, b1_1, ...).
_V3_35 = (_b(0, "Conv2d_0a_1x1") + _b(1, "Conv2d_0a_1x1", "Conv2d_0b_5x5")
          + _b(2, "Conv2d_0a_1x1", "Conv2d_0b_3x3", "Conv2d_0c_3x3") + _b(3, "Conv2d_0b_1x1"))
_V3_5C = (_b(0, "Conv2d_0a_1x1") + _b(1, "Conv2d_0b_1x1", "Conv_1_0c_5x5")  # slim's quirk
          + _b(2, "Conv2d_0a_1x1", "Conv2d_0b_3x3", "Conv2d_0c_3x3") + _b(3, "Conv2d_0b_1x1"))
_V3_6A = _b(0, "Conv2d_1a_1x1") + _b(1, "Conv2d_0a_1x1", "Conv2d_0b_3x3", "Conv2d_1a_1x1")
_17 = (_b(0, "Conv2d_0a_1x1") + _b(1, "Conv2d_0a_1x1", "Conv2d_0b_1x7", "Conv2d_0c_7x1")
       + _b(2, "Conv2d_0a_1x1", "Conv2d_0b_7x1", "Conv2d_0c_1x7", "Conv2d_0d_7x1",
            "Conv2d_0e_1x7") + _b(3, "Conv2d_0b_1x1"))
_V3_7A = (_b(0, "Conv2d_0a_1x1", "Conv2d_1a_3x3")
          + _b(1, "Conv2d_0a_1x1", "Conv2d_0b_1x7", "Conv2d_0c_7x1", "Conv2d_1a_3x3"))


def _v3_8(second: str) -> list[str]:
    return (_b(0, "Conv2d_0a_1x1") + _b(1, "Conv2d_0a_1x1", "Conv2d_0b_1x3", second)
            + _b(2, "Conv2d_0a_1x1", "Conv2d_0b_3x3", "Conv2d_0c_1x3", "Conv2d_0d_3x1")
            + _b(3, "Conv2d_0b_1x1"))


_STEM = ["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Conv2d_3b_1x1", "Conv2d_4a_3x3"]
_V4_A = (_b(0, "Conv2d_0a_1x1") + _b(1, "Conv2d_0a_1x1", "Conv2d_0b_3x3")
         + _b(2, "Conv2d_0a_1x1", "Conv2d_0b_3x3", "Conv2d_0c_3x3") + _b(3, "Conv2d_0b_1x1"))
_RED_A = _b(0, "Conv2d_1a_3x3") + _b(1, "Conv2d_0a_1x1", "Conv2d_0b_3x3", "Conv2d_1a_3x3")
_V4_C = (_b(0, "Conv2d_0a_1x1") + _b(1, "Conv2d_0a_1x1", "Conv2d_0b_1x3", "Conv2d_0c_3x1")
         + _b(2, "Conv2d_0a_1x1", "Conv2d_0b_3x1", "Conv2d_0c_1x3", "Conv2d_0d_1x3",
              "Conv2d_0e_3x1") + _b(3, "Conv2d_0b_1x1"))
_IR_5B = (_b(0, "Conv2d_1x1") + _b(1, "Conv2d_0a_1x1", "Conv2d_0b_5x5")
          + _b(2, "Conv2d_0a_1x1", "Conv2d_0b_3x3", "Conv2d_0c_3x3") + _b(3, "Conv2d_0b_1x1"))
_IR_35 = (_b(0, "Conv2d_1x1") + _b(1, "Conv2d_0a_1x1", "Conv2d_0b_3x3")
          + _b(2, "Conv2d_0a_1x1", "Conv2d_0b_3x3", "Conv2d_0c_3x3"))
_IR_17 = _b(0, "Conv2d_1x1") + _b(1, "Conv2d_0a_1x1", "Conv2d_0b_1x7", "Conv2d_0c_7x1")
_IR_8 = _b(0, "Conv2d_1x1") + _b(1, "Conv2d_0a_1x1", "Conv2d_0b_1x3", "Conv2d_0c_3x1")
_IR_7A = (_b(0, "Conv2d_0a_1x1", "Conv2d_1a_3x3") + _b(1, "Conv2d_0a_1x1", "Conv2d_1a_3x3")
          + _b(2, "Conv2d_0a_1x1", "Conv2d_0b_3x3", "Conv2d_1a_3x3"))


def _letters(stage: str, first: str, n: int) -> list[str]:
    return [f"Mixed_{stage}{chr(ord(first) + i)}" for i in range(n)]


def _units(name: str, model: InceptionNet) -> dict[str, tuple[list[str], list[str]]]:
    """Per unit of ours: (slim scope of each repeat, slim conv scopes inside the block)."""
    repeats = {u.name: u.repeat or 1 for u in model.units()}
    if name == "inception_v3":
        table = {"stem": ([""], _STEM), "mixed_5b": (["Mixed_5b"], _V3_35),
                 "mixed_5c": (["Mixed_5c"], _V3_5C), "mixed_5d": (["Mixed_5d"], _V3_35),
                 "mixed_6a": (["Mixed_6a"], _V3_6A), "mixed_7a": (["Mixed_7a"], _V3_7A),
                 "mixed_7b": (["Mixed_7b"], _v3_8("Conv2d_0b_3x1")),
                 "mixed_7c": (["Mixed_7c"], _v3_8("Conv2d_0c_3x1"))}
        table.update({f"mixed_6{c}": ([f"Mixed_6{c}"], _17) for c in "bcde"})
        return table
    if name == "inception_v4":
        return {
            "stem": ([""], _STEM[:3]),
            "mixed_3a": (["Mixed_3a"], _b(1, "Conv2d_0a_3x3")),
            "mixed_4a": (["Mixed_4a"], _V3_7A),  # same scopes as v3's Mixed_7a
            "mixed_5a": (["Mixed_5a"], _b(0, "Conv2d_1a_3x3")),
            "inception_a": (_letters("5", "b", repeats["inception_a"]), _V4_A),
            "reduction_a": (["Mixed_6a"], _RED_A),
            "inception_b": (_letters("6", "b", repeats["inception_b"]), _17),
            "reduction_b": (["Mixed_7a"], _V3_7A),
            "inception_c": (_letters("7", "b", repeats["inception_c"]), _V4_C),
        }
    if name == "inception_resnet_v2":
        if model.layout != "released":
            raise UserError("TF-Slim has only the released layout of inception_resnet_v2.")
        rep = lambda scope, block, n: [f"{scope}/{block}_{i + 1}" for i in range(n)]
        return {
            "stem": ([""], _STEM), "mixed_5b": (["Mixed_5b"], _IR_5B),
            "block35": (rep("Repeat", "block35", repeats["block35"]), _IR_35),
            "mixed_6a": (["Mixed_6a"], _RED_A),
            "block17": (rep("Repeat_1", "block17", repeats["block17"]), _IR_17),
            "mixed_7a": (["Mixed_7a"], _IR_7A),
            "block8": (rep("Repeat_2", "block8", repeats["block8"]), _IR_8),
            "block8_final": (["Block8"], _IR_8),
            "conv_7b": ([""], ["Conv2d_7b_1x1"]),
        }
    raise UserError(f"TF-Slim import supports {', '.join(SUPPORTED)}; got {name!r}.")


# (classifier, aux conv 1x1, aux conv 5x5, aux classifier); "conv:" marks a 1x1-conv logits layer.
_HEADS = {
    "inception_v3": ("conv:Logits/Conv2d_1c_1x1", "AuxLogits/Conv2d_1b_1x1",
                     "AuxLogits/Conv2d_2a_5x5", "conv:AuxLogits/Conv2d_2b_1x1"),
    "inception_v4": ("Logits/Logits", "AuxLogits/Conv2d_1b_1x1", "AuxLogits/Conv2d_2a",
                     "AuxLogits/Aux_logits"),
    "inception_resnet_v2": ("Logits/Logits", "AuxLogits/Conv2d_1b_1x1",
                            "AuxLogits/Conv2d_2a_5x5", "AuxLogits/Logits"),
}


def _join(*parts: str) -> str:
    return "/".join(p for p in parts if p)


def _plan(name: str, model: InceptionNet, drop_background: bool) -> list[Entry]:
    scope = SCOPES[name]
    plan: list[Entry] = []

    def conv_bn(path: tuple[str, ...], prefixes: list[str]) -> None:
        keys = lambda suffix: tuple(f"{p}/{suffix}" for p in prefixes)
        plan.append(Entry(("params", *path, "conv", "kernel"), keys("weights")))
        if model.bn_scale:  # slim's batch_norm_scale=True checkpoints
            plan.append(Entry(("params", *path, "bn", "scale"), keys("BatchNorm/gamma")))
        plan.append(Entry(("params", *path, "bn", "bias"), keys("BatchNorm/beta")))
        plan.append(Entry(("batch_stats", *path, "bn", "mean"), keys("BatchNorm/moving_mean")))
        plan.append(Entry(("batch_stats", *path, "bn", "var"),
                          keys("BatchNorm/moving_variance")))

    def classifier(path: tuple[str, ...], spec: str) -> None:
        conv = spec.startswith("conv:")
        prefix = _join(scope, spec.removeprefix("conv:"))
        start = 1 if drop_background else 0

        def kernel(w: np.ndarray) -> np.ndarray:
            return (w.reshape(w.shape[-2:]) if conv else w)[:, start:]

        plan.append(Entry(("params", *path, "kernel"), (f"{prefix}/weights",), kernel))
        plan.append(Entry(("params", *path, "bias"), (f"{prefix}/biases",),
                          lambda b: b[start:]))

    for unit, modules, pairs in matched_units(model, _units(name, model), "slim"):
        unit_name = unit.name
        for our, theirs in pairs:
            conv_bn((unit_name, our), [_join(scope, m, theirs) for m in modules])
        if unit.block.residual is not None:
            for leaf, suffix in (("kernel", "weights"), ("bias", "biases")):
                plan.append(Entry(("params", unit_name, "proj", leaf),
                                  tuple(_join(scope, m, "Conv2d_1x1", suffix) for m in modules)))
    head, aux_0, aux_1, aux_head = _HEADS[name]
    if model.aux_head:
        conv_bn(("aux", "conv_0"), [_join(scope, aux_0)])
        conv_bn(("aux", "conv_1"), [_join(scope, aux_1)])
        classifier(("aux", "head"), aux_head)
    classifier(("head",), head)
    return plan


def _not_a_weight(key: str) -> bool:
    """Step counters and optimizer slots are not weights."""
    return key in ("global_step", "beta1_power", "beta2_power") or any(
        s in key for s in ("ExponentialMovingAverage", "/RMSProp", "/Momentum", "/Adam")
    )


def load_checkpoint(path: str) -> dict[str, np.ndarray]:
    """Every tensor of a TF checkpoint (`x.ckpt`, or its `.index` / `.data-*` file)."""
    import tensorflow as tf

    prefix = path
    for suffix in (".index", ".meta"):
        prefix = prefix.removesuffix(suffix)
    if ".data-" in prefix:
        prefix = prefix[: prefix.index(".data-")]
    if not os.path.exists(prefix + ".index") and not os.path.exists(prefix):
        raise WeightsFileNotFoundError(f"No TF checkpoint at {prefix} (expected {prefix}.index).")
    try:
        reader = tf.train.load_checkpoint(prefix)
        return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()}
    except Exception as e:  # truncated, corrupt, or not a checkpoint
        raise WeightImportError(
            f"{prefix} is not a readable TF checkpoint ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:200]}). Re-download or re-extract it (the .index and "
            ".data-* files must both be complete)."
        ) from e


def convert(
    name: str,
    variables: Mapping[str, Any],
    *,
    background: str = "drop",
    prefer_ema: bool = True,
    **model_overrides: Any,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """slim variables → (`{"params", "batch_stats"}`, the knobs for `create(name, **knobs)`).

    Knobs: `bn_scale` True only if the checkpoint has BatchNorm gammas (the released ones
    have none); `aux_head` True when it has `AuxLogits` (`aux_head=False` drops them);
    `num_classes` 1000 with `background="drop"` (slim's class 0 removed) or 1001 with
    `"keep"`; `model_overrides` are added last. With `prefer_ema`, a variable's
    `ExponentialMovingAverage` copy is used where the checkpoint has one.
    """
    if name not in SUPPORTED:
        raise UserError(f"TF-Slim import supports {', '.join(SUPPORTED)}; got {name!r}.")
    if background not in BACKGROUND:
        raise UserError(f"background must be 'drop' or 'keep', got {background!r}.")
    state = dict(variables)
    if prefer_ema:
        for key in list(state):
            shadow = f"{key}/ExponentialMovingAverage"
            if shadow in state:
                state[key] = state[shadow]
    scope = SCOPES[name]
    knobs = {
        "bn_scale": any(k.endswith("/BatchNorm/gamma") for k in state),
        "aux_head": any(k.startswith(f"{scope}/AuxLogits/") for k in state),
        "num_classes": 1000 if background == "drop" else 1001,
        **model_overrides,
    }
    if knobs["num_classes"] != (1000 if background == "drop" else 1001):
        raise UserError(
            f"num_classes={knobs['num_classes']} does not fit background={background!r}: slim "
            "has 1001 outputs; use background='drop' for 1000 classes or 'keep' for 1001 (to "
            "train on other classes, import and fine-tune with train.init_weights)."
        )
    model = create(name, **knobs)
    skip_aux = not model.aux_head  # importing without the aux head drops its weights
    ignore = lambda k: _not_a_weight(k) or (skip_aux and k.startswith(f"{scope}/AuxLogits/"))
    if not any(k.startswith(scope + "/") for k in state):
        found = sorted({k.split("/")[0] for k in state if not _not_a_weight(k)})
        raise WeightImportError(
            f"TF-Slim weights do not fit {name}: no variable under {scope}/ (the checkpoint "
            f"holds {', '.join(found) or 'nothing'}). Pass the --model it was trained as."
        )
    result = assemble(_plan(name, model, background == "drop"), state, model,
                      source="TF-Slim weights", target=f"{name} {knobs}", ignore=ignore)
    return result, knobs


__all__ = ["BACKGROUND", "SUPPORTED", "WeightImportError", "convert", "load_checkpoint"]
