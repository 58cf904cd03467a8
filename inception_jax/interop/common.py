"""What every weight importer shares: the import plan, shape checks and one error listing.

An importer describes, for every leaf of our variables, which source arrays fill it (several
when a scanned stage stacks its repeats) and how to transform each one (a kernel layout, a
dropped background row). `assemble` checks the plan against the model, fills the leaves and
raises one `WeightImportError` naming every missing, unexpected and mis-shaped source array.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from inception_jax.errors import UserError
from inception_jax.models.network import InceptionNet
from inception_jax.models.specs import Unit


class WeightImportError(UserError):
    """The weights do not fit the model: lists every missing, unexpected and mis-shaped name."""


class WeightsFileNotFoundError(WeightImportError, FileNotFoundError):
    """A weights file or checkpoint path that does not exist."""


Transform = Callable[[np.ndarray], np.ndarray]


def same(x: np.ndarray) -> np.ndarray:
    """Identity transform."""
    return x


def torch_conv(w: np.ndarray) -> np.ndarray:
    """OIHW (PyTorch) → HWIO (Flax)."""
    return np.transpose(w, (2, 3, 1, 0))


@dataclass(frozen=True)
class Entry:
    """One leaf of our variables: its flat path, the source keys stacked into it, a transform."""

    path: tuple[str, ...]
    keys: tuple[str, ...]
    transform: Transform = same


def matched_units(
    model: InceptionNet, table: dict[str, tuple[list[str], list[str]]], source: str
) -> Iterator[tuple[Unit, list[str], list[tuple[str, str]]]]:
    """Per unit of `table` (unit → (source module of each repeat, source conv names in our conv
    order)): (our unit, its source modules, [(our conv name, source conv name)]). Our names
    come from the unit's spec (`BlockSpec.convs`), as the model's parameters do."""
    units = {u.name: u for u in model.units()}
    for unit_name, (modules, names) in table.items():
        unit = units[unit_name]
        ours = [conv.name for conv in unit.block.convs]
        if len(ours) != len(names):
            raise AssertionError(f"{unit_name}: {len(ours)} convs but {len(names)} {source} names")
        yield unit, modules, list(zip(ours, names, strict=True))


def expected_shapes(model: InceptionNet, image_size: int = 299) -> dict[tuple[str, ...], tuple]:
    """Flat path → shape of every variable of `model`, without allocating them."""
    x = jnp.zeros((1, image_size, image_size, 3))
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x))
    shapes = {k: v for k, v in shapes.items() if k in ("params", "batch_stats")}
    return {k: tuple(v.shape) for k, v in traverse_util.flatten_dict(shapes).items()}


def assemble(
    plan: Iterable[Entry],
    state: Mapping[str, Any],
    model: InceptionNet,
    source: str,
    target: str,
    ignore: Callable[[str], bool] = lambda key: False,
) -> dict[str, Any]:
    """Fills `model`'s variables from `state` (source name → array) following `plan`.

    `source` and `target` name the weights and the model in the error ("timm weights",
    "inception_v3 (defaults)"); `ignore` marks source keys that are not weights (step
    counters, optimizer slots).
    """
    plan = list(plan)
    shapes = expected_shapes(model)
    planned = {e.path for e in plan}
    if planned != set(shapes):
        raise AssertionError(f"import plan out of sync with the model: {planned ^ set(shapes)}")

    used, missing, misshaped, flat = set(), [], [], {}
    for entry in plan:
        absent = [k for k in entry.keys if k not in state]
        used.update(k for k in entry.keys if k in state)
        if absent:
            missing.extend(absent)
            continue
        arrays = [entry.transform(np.asarray(state[k])) for k in entry.keys]
        if any(a.shape != arrays[0].shape for a in arrays):
            misshaped.append(f"{entry.keys[0]}...: shapes differ between repeats")
            continue
        want = shapes[entry.path]
        stacked = len(entry.keys) > 1 or len(want) == arrays[0].ndim + 1
        value = np.stack(arrays) if stacked else arrays[0]
        if value.shape != want:
            misshaped.append(f"{', '.join(entry.keys)}: got {value.shape}, need {want}")
            continue
        flat[entry.path] = value.astype(np.float32)
    unexpected = sorted(k for k in state if k not in used and not ignore(k))
    if missing or unexpected or misshaped:
        lines = [f"{source} do not fit {target}:"]
        for title, items in (("missing", missing), ("unexpected", unexpected),
                             ("mis-shaped (after layout conversion)", misshaped)):
            if items:
                shown = sorted(items)
                more = f" ... and {len(shown) - 40} more" if len(shown) > 40 else ""
                lines.append(f"  {title} ({len(items)}): " + ", ".join(shown[:40]) + more)
        lines.append("Check that the file is for this architecture, its layout and head "
                     "(num_classes, aux_head, bn_scale); see docs/evaluation.md, 'Pretrained "
                     "weights'.")
        raise WeightImportError("\n".join(lines))
    return traverse_util.unflatten_dict(flat)
