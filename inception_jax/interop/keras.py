"""Import Keras applications weights (`InceptionV3`, `InceptionResNetV2`).

`load_file(path)` reads a Keras weights file with h5py alone (no Keras or TensorFlow import):
the legacy Keras-2 `.h5` layout of the official pretrained files
(`inception_v3_weights_tf_dim_ordering_tf_kernels.h5`, ...) and of `model.save("x.h5")`, or
the Keras-3 `.weights.h5` layout of `model.save_weights("x.weights.h5")`. Its keys are
`"<keras layer name>/<variable>"`, e.g. `"conv2d_5/kernel"`, `"batch_normalization_5/beta"`,
`"block35_1_conv/bias"`, `"predictions/kernel"`.

`convert(name, weights)` returns `{"params", "batch_stats"}` for
`inception_jax.models.create(name, bn_scale=False)`: Keras' batch norms have no scale (gamma).

Most Keras layers are auto-named (`conv2d_17`, `batch_normalization_17`), so layers are matched
by creation order, which follows our conv order (`b0_0, b1_0, b1_1, ...`) block by block. The
creation order is the order of the numeric name suffixes; neither format stores layers in that
order (both keep `model.layers`, which is topologically sorted), and the suffixes start above 0
when other layers were built earlier in the same process (`conv2d_94`, ...), so only their rank
counts. Keras-3 files name their layer groups by class and position (`layers/conv2d_12`) and
keep the real layer name in the `name` attribute of each `vars` group (Keras >= 3.6).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import h5py
import numpy as np

from inception_jax.errors import UserError
from inception_jax.interop.common import (
    Entry,
    WeightImportError,
    WeightsFileNotFoundError,
    assemble,
)
from inception_jax.models import create
from inception_jax.models.network import InceptionNet

SUPPORTED = ("inception_v3", "inception_resnet_v2")

# Keras applications build every batch norm with scale=False; callers' overrides win.
DEFAULT_OVERRIDES: dict[str, Any] = {"bn_scale": False}

_RESAVE = (
    "load it into the matching keras.applications model and save it again with "
    "model.save_weights('x.weights.h5') (Keras >= 3.6)"
)


# --- reading ---------------------------------------------------------------------------------


def _text(value: Any) -> str:
    return value.decode("utf8") if isinstance(value, bytes) else str(value)


def _legacy_attr(group: h5py.Group, name: str) -> list[str]:
    """A list attribute of the legacy format, which Keras splits into `name0, name1, ...`
    chunks when it exceeds HDF5's attribute size limit."""
    if name in group.attrs:
        return [_text(v) for v in group.attrs[name]]
    values, chunk = [], 0
    while f"{name}{chunk}" in group.attrs:
        values.extend(_text(v) for v in group.attrs[f"{name}{chunk}"])
        chunk += 1
    return values


def _array(dataset: h5py.Dataset) -> np.ndarray:
    value = np.asarray(dataset[()])
    if _text(dataset.attrs.get("dtype", "")) == "bfloat16":  # Keras 3 stores bf16 as raw bits
        import ml_dtypes

        value = value.view(ml_dtypes.bfloat16)
    return value


def _read_legacy(group: h5py.Group) -> dict[str, np.ndarray]:
    """Legacy layout: attr `layer_names`; each layer group lists its datasets in `weight_names`
    (`"conv2d_1/kernel:0"` from Keras 2, `"conv2d_1/kernel"` from Keras 3)."""
    weights = {}
    for layer in _legacy_attr(group, "layer_names"):
        layer_group = group[layer]
        for weight in _legacy_attr(layer_group, "weight_names"):
            variable = weight.split("/")[-1].split(":")[0]
            weights[f"{layer}/{variable}"] = _array(layer_group[weight])
    return weights


def _variable_names(kind: str, count: int) -> list[str]:
    """Names of a Keras-3 layer's variables, stored as datasets `0, 1, ...` in build order."""
    if kind == "batch_normalization" and 2 <= count <= 4:
        # gamma (scale=True), beta (center=True), then the moving statistics.
        return ["gamma", "beta", "moving_mean", "moving_variance"][4 - count:]
    if kind in ("conv2d", "dense") and count <= 2:
        return ["kernel", "bias"][:count]
    return [f"variable_{i}" for i in range(count)]


def _read_keras3(f: h5py.File, path: str) -> dict[str, np.ndarray]:
    """Keras-3 layout: `layers/<class>_<position>/vars/<index>`, real name in attr `name`."""
    weights: dict[str, np.ndarray] = {}
    unnamed = []

    def visit(group_path: str, obj: Any) -> None:
        parts = group_path.split("/")
        is_layer_vars = (
            isinstance(obj, h5py.Group)
            and len(parts) >= 3
            and parts[-1] == "vars"
            and parts[-3] in ("layers", "_layer_checkpoint_dependencies")
        )
        if not is_layer_vars or len(obj) == 0:
            return
        if "name" not in obj.attrs:
            unnamed.append(parts[-2])
            return
        kind = re.sub(r"_\d+$", "", parts[-2])
        indices = sorted(obj, key=lambda k: int(k) if k.isdigit() else -1)
        for var, index in zip(_variable_names(kind, len(indices)), indices, strict=True):
            weights[f"{_text(obj.attrs['name'])}/{var}"] = _array(obj[index])

    f.visititems(visit)
    if unnamed:
        raise WeightImportError(
            f"{path} was written by Keras < 3.6 (or tf.keras), which does not record layer "
            f"names, so the creation order of its auto-named layers is lost: {_RESAVE}."
        )
    return weights


def load_file(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads a Keras weights file (legacy `.h5` or Keras-3 `.weights.h5`) with h5py.

    Returns `"<layer name>/<variable>"` → array. Raises `WeightsFileNotFoundError` for a
    missing path and `WeightImportError` for a file that is not a readable Keras weights file.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise WeightsFileNotFoundError(f"{path}: no such Keras weights file; check the path.")
    try:
        with h5py.File(path, "r") as f:
            if "layer_names" in f.attrs or "layer_names0" in f.attrs:
                weights = _read_legacy(f)
            elif "model_weights" in f:  # a whole model saved with model.save("x.h5")
                weights = _read_legacy(f["model_weights"])
            elif "layers" in f or "_layer_checkpoint_dependencies" in f:
                weights = _read_keras3(f, path)
            else:
                raise WeightImportError(
                    f"{path} is an HDF5 file but not a Keras weights file (no layer_names "
                    f"attribute, no layers group): pass a file written by model.save_weights."
                )
    except (OSError, KeyError, RuntimeError) as err:
        reason = " ".join(str(err).split())
        raise WeightImportError(
            f"{path} is not a readable Keras weights file ({reason}): it may be truncated or "
            f"not HDF5; download it again, or {_RESAVE}."
        ) from err
    if not weights:
        raise WeightImportError(f"{path} holds no weights: {_RESAVE}.")
    return weights


# --- the import plan -------------------------------------------------------------------------

_AUTO_NAME = re.compile(r"^(conv2d|batch_normalization)(?:_(\d+))?$")

# Units whose single conv Keras names explicitly (conv `name`, batch norm `name + "_bn"`).
_NAMED_CONVS = {"conv_7b": "conv_7b"}
# Residual units → Keras' block type; the up-projection of repeat i is `{type}_{i}_conv`.
_RESIDUAL_TYPES = {
    "block35": "block35",
    "block17": "block17",
    "block8": "block8",
    "block8_final": "block8",
}


def auto_named_layers(weights: Mapping[str, Any], kind: str) -> list[str]:
    """The auto-named layers of `kind` ("conv2d", "batch_normalization") in creation order."""
    found = set()
    for key in weights:
        match = _AUTO_NAME.match(key.split("/")[0])
        if match and match.group(1) == kind:
            found.add((int(match.group(2) or 0), match.group(0)))
    return [layer for _, layer in sorted(found)]


def _conv_bn(plan: list[Entry], model: InceptionNet, path: tuple[str, ...], pairs) -> None:
    """Entries of one of our convs from (Keras conv, Keras batch norm) names, one per repeat."""
    keys = lambda layers, var: tuple(f"{layer}/{var}" for layer in layers)
    convs, norms = [c for c, _ in pairs], [b for _, b in pairs]
    plan.append(Entry(("params", *path, "conv", "kernel"), keys(convs, "kernel")))
    if model.bn_scale:
        plan.append(Entry(("params", *path, "bn", "scale"), keys(norms, "gamma")))
    plan.append(Entry(("params", *path, "bn", "bias"), keys(norms, "beta")))
    plan.append(Entry(("batch_stats", *path, "bn", "mean"), keys(norms, "moving_mean")))
    plan.append(Entry(("batch_stats", *path, "bn", "var"), keys(norms, "moving_variance")))


def _plan(model: InceptionNet, weights: Mapping[str, Any]) -> tuple[list[Entry], str | None]:
    """The import plan, and a hint when the file's layer counts do not fit the model."""
    convs = auto_named_layers(weights, "conv2d")
    norms = auto_named_layers(weights, "batch_normalization")
    auto = 0  # auto-named conv+BN pairs used so far, in creation order
    blocks_seen: dict[str, int] = {}
    plan: list[Entry] = []

    def keras_names(unit_name: str) -> tuple[str, str]:
        nonlocal auto
        if unit_name in _NAMED_CONVS:
            return _NAMED_CONVS[unit_name], f"{_NAMED_CONVS[unit_name]}_bn"
        # Past the file's layers: placeholders that `assemble` reports as missing.
        conv = convs[auto] if auto < len(convs) else f"conv2d#{auto}"
        norm = norms[auto] if auto < len(norms) else f"batch_normalization#{auto}"
        auto += 1
        return conv, norm

    for unit in model.units():
        repeats = 1 if unit.repeat is None else unit.repeat
        if repeats == 0:
            continue
        ours = [conv.name for conv in unit.block.convs]
        pairs: dict[str, list[tuple[str, str]]] = {our: [] for our in ours}
        projections = []
        for _ in range(repeats):  # Keras builds repeat by repeat, each block conv by conv
            for our in ours:
                pairs[our].append(keras_names(unit.name))
            if unit.block.residual is not None:
                block_type = _RESIDUAL_TYPES[unit.name]
                blocks_seen[block_type] = blocks_seen.get(block_type, 0) + 1
                projections.append(f"{block_type}_{blocks_seen[block_type]}_conv")
        for our in ours:
            _conv_bn(plan, model, (unit.name, our), pairs[our])
        for var in ("kernel", "bias") if projections else ():
            keys = tuple(f"{p}/{var}" for p in projections)
            plan.append(Entry(("params", unit.name, "proj", var), keys))
    plan.append(Entry(("params", "head", "kernel"), ("predictions/kernel",)))
    plan.append(Entry(("params", "head", "bias"), ("predictions/bias",)))

    hints = []
    if len(convs) != auto or len(norms) != auto:
        hints.append(
            f"the file has {len(convs)} auto-named Conv2D and {len(norms)} BatchNormalization "
            f"layers where this model needs {auto} of each: it is probably for another "
            f"architecture or stage depth."
        )
    if "predictions/kernel" not in weights:
        hints.append("the file has no 'predictions' classifier (an include_top=False file?).")
    return plan, " ".join(hints) or None


def convert(name: str, weights: Mapping[str, Any], **model_overrides: Any) -> dict[str, Any]:
    """Keras weights (`load_file`'s keys) → `{"params", "batch_stats"}` for `create(name, ...)`.

    The model is `create(name, bn_scale=False, **model_overrides)`. Raises `UserError` for a
    model Keras does not have, `WeightImportError` listing every missing, unexpected or
    mis-shaped Keras name when the weights do not fit.
    """
    if name not in SUPPORTED:
        raise UserError(
            f"Keras import supports {', '.join(SUPPORTED)}; got {name!r} "
            f"(keras.applications has no such model)."
        )
    overrides = {**DEFAULT_OVERRIDES, **model_overrides}
    model = create(name, **overrides)
    if model.aux_head:
        raise UserError(f"Keras' {name} has no auxiliary head: create it with aux_head=False.")
    if getattr(model, "layout", "released") != "released":
        raise UserError(f"Keras has only the released layout of {name}.")
    plan, hint = _plan(model, weights)
    target = f"{name} {overrides}"
    try:
        return assemble(plan, weights, model, source="Keras weights", target=target)
    except WeightImportError as err:
        # Restate the headline ourselves (it names the model) and add the hint below it.
        _, _, details = str(err).partition("\n")
        lines = [f"Keras weights do not fit {target}:"]
        lines += [f"  hint: {hint}"] if hint else []
        raise WeightImportError("\n".join([*lines, details])) from None


__all__ = [
    "DEFAULT_OVERRIDES",
    "SUPPORTED",
    "WeightImportError",
    "auto_named_layers",
    "convert",
    "load_file",
]
