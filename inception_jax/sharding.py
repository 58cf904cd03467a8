"""The device mesh and the shardings of the train state and the batch.

One mesh over all devices of all processes, with a `data` axis and an optional `model` axis.
The batch is split over both axes; with `model` > 1, each parameter (and its optimizer state
and moving average) is also split along its largest dimension divisible by the `model` size
(FSDP-style), so wide models fit. The same code runs on 1 CPU, N GPUs or a TPU pod.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

BATCH_AXES = ("data", "model")


def create_mesh(model_axis: int = 1) -> Mesh:
    """A (data, model) mesh over every device; `model_axis` must divide the device count."""
    n = jax.device_count()
    if model_axis < 1 or n % model_axis:
        raise ValueError(
            f"mesh.model_axis={model_axis} must be >= 1 and divide the {n} devices."
        )
    # Auto axes: XLA propagates shardings from the jit's in/out shardings (newer JAX
    # defaults to Explicit, which asks every op to be annotated).
    auto = (jax.sharding.AxisType.Auto,) * 2
    return jax.make_mesh((n // model_axis, model_axis), BATCH_AXES, axis_types=auto)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) dimension split over every device."""
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
    """A copy on every device."""
    return NamedSharding(mesh, PartitionSpec())


def _leaf_spec(shape: tuple[int, ...], model_size: int) -> PartitionSpec:
    if model_size == 1 or not shape:
        return PartitionSpec()
    candidates = [d for d in np.argsort(shape)[::-1] if shape[d] % model_size == 0]
    if not candidates:
        return PartitionSpec()
    spec = [None] * len(shape)
    spec[int(candidates[0])] = "model"
    return PartitionSpec(*spec)


def state_shardings(mesh: Mesh, abstract_state: Any) -> Any:
    """Shardings for a pytree of shape structs: replicated, or split over `model`."""
    model_size = mesh.shape["model"]
    return jax.tree.map(
        lambda x: NamedSharding(mesh, _leaf_spec(tuple(x.shape), model_size)), abstract_state
    )


def check_batch_size(global_batch_size: int) -> None:
    """The global batch must split evenly over devices and processes."""
    n, p = jax.device_count(), jax.process_count()
    if global_batch_size % n or global_batch_size % p:
        raise ValueError(
            f"train.global_batch_size={global_batch_size} must be divisible by the number of "
            f"devices ({n}) and processes ({p})."
        )
