"""What checksums cost: save and restore time of a full train state, with and without them.

Run:  JAX_PLATFORMS=cpu python -m tools.checkpoint_cost [--model=inception_resnet_v2] [--rounds=3]

The state has the trainer's layout and sizes for the model at full width (parameters,
BatchNorm statistics, RMSProp's two slots per parameter, the moving average), filled with
random numbers, on one device. Each round saves it with the checksum manifest and without
(orbax alone), then restores each copy with and without verification, interleaved; the
medians are printed. Cold-cache effects are not measured: every read comes from the page cache.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np


def train_state_like(model_name: str, image_size: int = 299) -> dict:
    """Random arrays shaped as the trainer's state of `model_name` at full width."""
    from inception_jax.models import create

    model = create(model_name)
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, image_size,
                                                                       image_size, 3)))
    rng = np.random.default_rng(0)
    fill = lambda s: jnp.asarray(rng.standard_normal(s.shape, np.float32))
    params = jax.tree.map(fill, shapes["params"])
    stats = jax.tree.map(fill, shapes["batch_stats"])
    return {"step": jnp.int32(1), "params": params, "batch_stats": stats,
            "opt_state": {"nu": jax.tree.map(fill, shapes["params"]),
                          "trace": jax.tree.map(fill, shapes["params"])},
            "ema": {"params": jax.tree.map(fill, shapes["params"]),
                    "batch_stats": jax.tree.map(fill, shapes["batch_stats"])}}


class _NoVerification:
    def __init__(self, directory: str):
        del directory

    def result(self) -> None:
        """Nothing verified."""


def main() -> None:
    """Prints the medians of save and restore seconds, with and without checksums."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="inception_resnet_v2")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    from inception_jax import checkpoint
    from inception_jax.checkpoint import Checkpointer

    state = train_state_like(args.model)
    nbytes = sum(x.nbytes for x in jax.tree.leaves(state))
    target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                          state)
    times: dict[str, list[float]] = {k: [] for k in ("save", "save_plain", "restore",
                                                     "restore_plain")}
    plain_write, verification = Checkpointer._write_manifest, checkpoint._Verification
    root = Path(tempfile.mkdtemp(prefix="checkpoint_cost_"))
    for r in range(args.rounds):
        for checked in (True, False):
            Checkpointer._write_manifest = plain_write if checked else (lambda self: None)
            directory = root / f"{r}-{checked}"
            c = Checkpointer(str(directory), 3, {"model": args.model})
            start = time.perf_counter()
            c.save(1, state)
            c.close()
            times["save" if checked else "save_plain"].append(time.perf_counter() - start)
        Checkpointer._write_manifest = plain_write
        for checked in (True, False):
            c = Checkpointer(str(root / f"{r}-True"), 3, {"model": args.model})
            # Orbax alone: the same read with the verification thread left out.
            checkpoint._Verification = verification if checked else _NoVerification
            start = time.perf_counter()
            try:
                jax.block_until_ready(c.restore(target))
            finally:
                checkpoint._Verification = verification
            times["restore" if checked else "restore_plain"].append(time.perf_counter() - start)
            c.close()
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"{args.model} train state: {nbytes / 2**20:.0f} MiB, {args.rounds} rounds (medians)")
    for what in ("save", "restore"):
        plain, checked = med[f"{what}_plain"], med[what]
        rounds = ", ".join(f"{a:.2f}/{b:.2f}" for a, b in
                           zip(times[f"{what}_plain"], times[what], strict=True))
        print(f"  {what:7s}  orbax alone {plain:6.2f} s   with checksums {checked:6.2f} s   "
              f"{100 * (checked / plain - 1):+.1f}%   (each round, alone/with: {rounds})")


if __name__ == "__main__":
    main()
