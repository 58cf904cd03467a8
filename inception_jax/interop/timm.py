"""Import timm weights (`inception_v3`, `inception_v4`, `inception_resnet_v2`).

`convert(name, state_dict)` takes timm parameter names → numpy arrays (from a `.safetensors`
file via `safetensors.numpy.load_file`, or a torch state_dict converted to numpy) and returns
`{"params": ..., "batch_stats": ...}` for `inception_jax.models.create(name, **overrides)`.

Note: timm's `inception_v3` (from torchvision) counts padded zeros in its block average
pools; TF-Slim and Keras do not. Create the model with `pool_count_include_pad=True` to
reproduce timm's outputs exactly with its weights.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from inception_jax.errors import UserError
from inception_jax.interop.common import (
    Entry,
    WeightImportError,
    assemble,
    expected_shapes,
    matched_units,
    torch_conv,
)
from inception_jax.models import create
from inception_jax.models.network import InceptionNet
from inception_jax.models.specs import BlockSpec, Conv, Split

SUPPORTED = ("inception_v3", "inception_v4", "inception_resnet_v2")
# Knobs that reproduce timm's outputs with its weights (see the module docstring).
DEFAULT_KNOBS = {"inception_v3": {"pool_count_include_pad": True}}


# --- timm names of the convs of each block, in our conv order (b0_0, b1_0, b1_1, ...) ------

_V3_35 = ["branch1x1", "branch5x5_1", "branch5x5_2", "branch3x3dbl_1", "branch3x3dbl_2",
          "branch3x3dbl_3", "branch_pool"]
_V3_6A = ["branch3x3", "branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"]
_V3_17 = ["branch1x1", "branch7x7_1", "branch7x7_2", "branch7x7_3", "branch7x7dbl_1",
          "branch7x7dbl_2", "branch7x7dbl_3", "branch7x7dbl_4", "branch7x7dbl_5", "branch_pool"]
_V3_7A = ["branch3x3_1", "branch3x3_2", "branch7x7x3_1", "branch7x7x3_2", "branch7x7x3_3",
          "branch7x7x3_4"]
_V3_8 = ["branch1x1", "branch3x3_1", "branch3x3_2a", "branch3x3_2b", "branch3x3dbl_1",
         "branch3x3dbl_2", "branch3x3dbl_3a", "branch3x3dbl_3b", "branch_pool"]
_V3_STEM = ["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Conv2d_3b_1x1", "Conv2d_4a_3x3"]
_V4_C = ["branch0", "branch1_0", "branch1_1a", "branch1_1b", "branch2_0", "branch2_1",
         "branch2_2", "branch2_3a", "branch2_3b", "branch3.1"]


def _branch_names(spec: BlockSpec) -> list[str]:
    """timm's usual naming, in our conv order: `branch{i}` for a one-layer branch, else
    `branch{i}.{position}` (pools count as positions)."""
    names = {}
    for i, branch in enumerate(spec.branches):
        for k, layer in enumerate(branch):
            if isinstance(layer, Split):
                raise ValueError("nested splits have no standard timm names")
            if isinstance(layer, Conv):
                names[layer.name] = f"branch{i}" if len(branch) == 1 else f"branch{i}.{k}"
    return [names[conv.name] for conv in spec.convs]


def _unit_prefixes(name: str, model: InceptionNet) -> dict[str, tuple[list[str], list[str]]]:
    """Per unit: (timm module prefix of each repeat, timm conv names inside the module)."""
    units = {u.name: u for u in model.units()}
    std = lambda unit_name: _branch_names(units[unit_name].block)
    if name == "inception_v3":
        table = {"stem": ([""], _V3_STEM), "mixed_6a": (["Mixed_6a"], _V3_6A),
                 "mixed_7a": (["Mixed_7a"], _V3_7A)}
        for u, names in (("5b", _V3_35), ("5c", _V3_35), ("5d", _V3_35), ("6b", _V3_17),
                         ("6c", _V3_17), ("6d", _V3_17), ("6e", _V3_17), ("7b", _V3_8),
                         ("7c", _V3_8)):
            table[f"mixed_{u}"] = ([f"Mixed_{u}"], names)
        return table
    if name == "inception_v4":
        a, b, c = (units[s].repeat for s in ("inception_a", "inception_b", "inception_c"))
        feats = lambda start, n: [f"features.{start + r}" for r in range(n)]
        return {
            "stem": ([""], ["features.0", "features.1", "features.2"]),
            "mixed_3a": (["features.3"], ["conv"]),
            "mixed_4a": (["features.4"], std("mixed_4a")),
            "mixed_5a": (["features.5"], ["conv"]),
            "inception_a": (feats(6, a), std("inception_a")),
            "reduction_a": (feats(6 + a, 1), std("reduction_a")),
            "inception_b": (feats(7 + a, b), std("inception_b")),
            "reduction_b": (feats(7 + a + b, 1), std("reduction_b")),
            "inception_c": (feats(8 + a + b, c), _V4_C),
        }
    if name == "inception_resnet_v2":
        if model.layout != "released":
            raise UserError("timm has only the released layout of inception_resnet_v2")
        a, b, c = (units[s].repeat for s in ("block35", "block17", "block8"))
        rep = lambda prefix, n: [f"{prefix}.{r}" for r in range(n)]
        return {
            "stem": ([""], ["conv2d_1a", "conv2d_2a", "conv2d_2b", "conv2d_3b", "conv2d_4a"]),
            "mixed_5b": (["mixed_5b"], std("mixed_5b")),
            "block35": (rep("repeat", a), std("block35")),
            "mixed_6a": (["mixed_6a"], std("mixed_6a")),
            "block17": (rep("repeat_1", b), std("block17")),
            "mixed_7a": (["mixed_7a"], std("mixed_7a")),
            "block8": (rep("repeat_2", c), std("block8")),
            "block8_final": (["block8"], std("block8_final")),
            "conv_7b": ([""], ["conv2d_7b"]),
        }
    raise UserError(
        f"timm import supports {', '.join(SUPPORTED)}; got {name!r} (timm has no such model)."
    )


_HEADS = {"inception_v3": "fc", "inception_v4": "last_linear", "inception_resnet_v2": "classif"}


def _join(*parts: str) -> str:
    return ".".join(p for p in parts if p)


def _plan(name: str, model: InceptionNet) -> list[Entry]:
    """One `Entry` (our flat path, timm keys to stack, transform) per leaf of our variables."""
    plan = []

    def conv_bn(path: tuple[str, ...], prefixes: list[str]) -> None:
        keys = lambda suffix: tuple(p + suffix for p in prefixes)
        plan.append(Entry(("params", *path, "conv", "kernel"), keys(".conv.weight"), torch_conv))
        if model.bn_scale:
            plan.append(Entry(("params", *path, "bn", "scale"), keys(".bn.weight")))
        plan.append(Entry(("params", *path, "bn", "bias"), keys(".bn.bias")))
        plan.append(Entry(("batch_stats", *path, "bn", "mean"), keys(".bn.running_mean")))
        plan.append(Entry(("batch_stats", *path, "bn", "var"), keys(".bn.running_var")))

    def dense(path: tuple[str, ...], prefix: str) -> None:
        plan.append(Entry(("params", *path, "kernel"), (prefix + ".weight",), lambda w: w.T))
        plan.append(Entry(("params", *path, "bias"), (prefix + ".bias",)))

    for unit, modules, pairs in matched_units(model, _unit_prefixes(name, model), "timm"):
        unit_name = unit.name
        for our, theirs in pairs:
            conv_bn((unit_name, our), [_join(m, theirs) for m in modules])
        if unit.block.residual is not None:
            weight, bias = (
                tuple(_join(m, "conv2d" + s) for m in modules) for s in (".weight", ".bias")
            )
            plan.append(Entry(("params", unit_name, "proj", "kernel"), weight, torch_conv))
            plan.append(Entry(("params", unit_name, "proj", "bias"), bias))
    if model.aux_head:
        if name != "inception_v3":
            raise UserError(f"timm's {name} has no auxiliary head: create it with aux_head=False")
        conv_bn(("aux", "conv_0"), ["AuxLogits.conv0"])
        conv_bn(("aux", "conv_1"), ["AuxLogits.conv1"])
        dense(("aux", "head"), "AuxLogits.fc")
    dense(("head",), _HEADS[name])
    return plan


def convert(name: str, state_dict: Mapping[str, Any], **model_overrides) -> dict[str, Any]:
    """timm state_dict (name → array) → `{"params", "batch_stats"}` for `create(name, ...)`.

    Raises `WeightImportError` listing every missing, unexpected or mis-shaped name.
    """
    if name not in SUPPORTED:
        raise UserError(f"timm import supports {', '.join(SUPPORTED)}; got {name!r}.")
    model = create(name, **model_overrides)
    return assemble(
        _plan(name, model),
        state_dict,
        model,
        source="timm weights",
        target=f"{name} ({model_overrides or 'defaults'})",
        ignore=lambda key: key.endswith("num_batches_tracked"),
    )

__all__ = ["DEFAULT_KNOBS", "SUPPORTED", "WeightImportError", "convert", "expected_shapes"]
