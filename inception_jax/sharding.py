"""The device mesh and the shardings of the train state and the batch.

One mesh over all devices of all processes, with two axes: `data` and `fsdp`. The batch is
split over both. With `fsdp` > 1 the train state is fully sharded (FSDP, ZeRO-3 style): each
parameter, its optimizer state and its moving average is split along its largest dimension
divisible by the `fsdp` size, and XLA gathers it where the step needs it, so wide models fit.
Arrays smaller than `min_size_bytes` (BatchNorm vectors, biases) stay replicated: splitting them
saves little memory and costs a collective each (big_vision's `min_size_to_shard_mb`). The same
code runs on 1 CPU, N GPUs or a TPU pod.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from inception_jax.errors import UserError

BATCH_AXES = ("data", "fsdp")
POPULATION_AXIS = "population"
MB = 2**20  # the unit of `config.mesh.min_shard_mb`


def create_mesh(fsdp_axis: int = 1, devices: Sequence[Any] | None = None,
                population_axis: int | None = None) -> Mesh:
    """A (data, fsdp) mesh over `devices` (default: every device of every process).

    `fsdp_axis` devices share each sharded parameter; it must divide the device count. A
    population's mesh (`population_axis` set) has a leading `population` axis of that size:
    the members are split over it, and each member's share of the devices is a (data, fsdp)
    mesh of its own.
    """
    n = jax.device_count() if devices is None else len(devices)
    groups = population_axis or 1
    if groups < 1 or n % groups:
        raise UserError(f"mesh.population_axis={groups} must be >= 1 and divide the {n} devices.")
    if fsdp_axis < 1 or (n // groups) % fsdp_axis:
        raise UserError(
            f"mesh.fsdp_axis={fsdp_axis} must be >= 1 and divide the {n // groups} devices"
            + (f" of each of the mesh.population_axis={groups} groups." if groups > 1 else ".")
        )
    shape, names = (n // groups // fsdp_axis, fsdp_axis), BATCH_AXES
    if population_axis is not None:
        shape, names = (groups, *shape), (POPULATION_AXIS, *names)
    # Auto axes: XLA propagates shardings from the jit's in/out shardings (newer JAX
    # defaults to Explicit, which asks every op to be annotated).
    auto = (jax.sharding.AxisType.Auto,) * len(shape)
    return jax.make_mesh(shape, names, axis_types=auto, devices=devices)


def batch_devices(mesh: Mesh) -> int:
    """The devices one batch is split over (every device, but a population's groups)."""
    return mesh.shape["data"] * mesh.shape["fsdp"]


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) dimension split over every device: both mesh axes."""
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
    """A copy on every device."""
    return NamedSharding(mesh, PartitionSpec())


def _leaf_spec(
    shape: tuple[int, ...], nbytes: int, fsdp_size: int, min_size_bytes: int
) -> PartitionSpec:
    """Replicated, or split over `fsdp` on the largest dimension that `fsdp_size` divides."""
    if fsdp_size == 1 or not shape or nbytes < min_size_bytes:
        return PartitionSpec()
    candidates = [d for d in np.argsort(shape)[::-1] if shape[d] % fsdp_size == 0]
    if not candidates:
        return PartitionSpec()
    spec: list[str | None] = [None] * len(shape)
    spec[int(candidates[0])] = "fsdp"
    return PartitionSpec(*spec)


def state_shardings(mesh: Mesh, abstract_state: Any, min_size_bytes: int) -> Any:
    """Shardings for a pytree of shape structs: arrays of at least `min_size_bytes` split over
    `fsdp` (see `_leaf_spec`), smaller ones replicated."""
    return jax.tree.map(lambda x: _sharding(mesh, x, min_size_bytes), abstract_state)


def population_shardings(mesh: Mesh, abstract_state: Any, min_size_bytes: int) -> Any:
    """Shardings for a population's state: the leading member axis split over `population`,
    each member's array as `state_shardings` splits it; scalars replicated."""
    return jax.tree.map(
        lambda x: _sharding(mesh, x, min_size_bytes, members=bool(x.shape)), abstract_state)


def _sharding(mesh: Mesh, x: Any, min_size_bytes: int, members: bool = False) -> NamedSharding:
    """One array's sharding (`members`: its leading axis is the population's members)."""
    shape = tuple(x.shape[1:] if members else x.shape)
    nbytes = math.prod(shape) * np.dtype(x.dtype).itemsize
    spec = _leaf_spec(shape, nbytes, mesh.shape["fsdp"], min_size_bytes)
    return NamedSharding(mesh, PartitionSpec(POPULATION_AXIS, *spec) if members else spec)


def check_batch_size(global_batch_size: int, processes: int | None = None,
                     devices: bool = True) -> None:
    """The global batch must split evenly over the processes and (`devices`) the devices.
    `processes` overrides JAX's count, to rebuild another run's share of the data."""
    n, p = jax.device_count(), processes or jax.process_count()
    if global_batch_size % p or (devices and global_batch_size % n):
        over = f"devices ({n}) and processes ({p})" if devices else f"processes ({p})"
        raise UserError(
            f"train.global_batch_size={global_batch_size} must be divisible by the number of "
            f"{over}."
        )


def local_batch_size(global_batch_size: int, processes: int | None = None) -> int:
    """This process's share of a global batch: the host input pipeline's batch (only the
    processes must divide it; the devices are the step's business)."""
    check_batch_size(global_batch_size, processes, devices=False)
    return global_batch_size // (processes or jax.process_count())
