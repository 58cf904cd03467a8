"""Batches on the devices: host batches made global arrays, a prefetch queue, synthetic data.

The trainer and the evaluators feed jitted functions with global `jax.Array`s sharded over the
mesh. `prefetch_to_device` keeps a few of them in flight, so the transfer of batch k+1 overlaps
step k; `synthetic_batches` makes fixed random batches on the devices for throughput runs that
leave the input pipeline out.
"""

from __future__ import annotations

import collections
import itertools
from collections.abc import Iterable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def global_batch(batch: dict[str, Any], batch_sharding: jax.sharding.Sharding) -> dict[str, Any]:
    """This process's share of a batch (numpy) as global arrays; device arrays pass through."""
    return {
        k: v if isinstance(v, jax.Array)
        else jax.make_array_from_process_local_data(batch_sharding, v)
        for k, v in batch.items()
    }


def prefetch_to_device(
    batches: Iterable[dict[str, Any]], batch_sharding: jax.sharding.Sharding, size: int
) -> Iterator[dict[str, jax.Array]]:
    """`batches` as global arrays, with `size` of them transferred ahead (0: none ahead)."""
    iterator = iter(batches)
    queue: collections.deque = collections.deque()

    def enqueue(n: int) -> None:
        for batch in itertools.islice(iterator, n):
            queue.append(global_batch(batch, batch_sharding))

    enqueue(size + 1)
    while queue:
        yield queue.popleft()
        enqueue(1)


def synthetic_batches(
    global_batch_size: int, image_size: int, num_classes: int, seed: int,
    batch_sharding: jax.sharding.Sharding,
) -> Iterator[dict[str, jax.Array]]:
    """One fixed random batch (images in [-1, 1], labels), made on the devices, forever."""

    def make() -> dict[str, jax.Array]:
        image_key, label_key = jax.random.split(jax.random.key(seed))
        shape = (global_batch_size, image_size, image_size, 3)
        return {
            "image": jax.random.uniform(image_key, shape, jnp.float32, -1.0, 1.0),
            "label": jax.random.randint(label_key, (global_batch_size,), 0, num_classes,
                                        jnp.int32),
        }

    batch = jax.jit(make, out_shardings=batch_sharding)()
    return itertools.repeat(batch)


def synthetic_eval_batches(
    global_batch_size: int, image_size: int, num_classes: int, num_examples: int, seed: int,
) -> Iterator[dict[str, np.ndarray]]:
    """This process's share of `num_examples` random eval examples (last batch padded)."""
    rng = np.random.default_rng(seed + 1)
    local = global_batch_size // jax.process_count()
    num_batches = -(-num_examples // global_batch_size)
    for b in range(num_batches):
        real = min(global_batch_size, num_examples - b * global_batch_size)
        mask = (np.arange(global_batch_size) < real).astype(np.float32)
        start = jax.process_index() * local
        yield {
            "image": rng.uniform(-1, 1, (local, image_size, image_size, 3)).astype(np.float32),
            "label": rng.integers(0, num_classes, local).astype(np.int32),
            "mask": mask[start:start + local],
        }
