"""What a population costs against the single runs it replaces, on the `:death` network.

    python -m tools.population_cost --members=8 [--execution=vmap] [--conv_impl=auto]

Builds the residual-scaling `:death` regime's network (IR-v1, width 0.6, blocks (1, 2, 5),
batch 32 at 75x75) on synthetic data, and prints for one single run and for a population of
`--members` members (the sweep's fixed scales and seeds): seconds to the first step done
(compile and init) and seconds per train step after it, and the per-member ratio.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")


def measure(members: int, execution: str, conv_impl: str, steps: int) -> tuple[float, float]:
    """(seconds to the first step, seconds per step) of the :death network as one run
    (`members` = 0) or a population."""
    import jax
    import numpy as np

    from configs import inception_resnet_v1
    from configs.sweeps.residual_scaling import DEATH_FIXED, MAP_SCALES
    from inception_jax.trainer import create_setup

    config = inception_resnet_v1.get_config("smoke")
    config.update_from_flattened_dict(DEATH_FIXED)
    config.data.name = "synthetic"
    config.model.conv_impl = conv_impl
    config.population.execution = execution
    config.population.members = tuple(
        {"seed": i % 2, "model.residual_scales": (MAP_SCALES[i // 2 % len(MAP_SCALES)],) * 3}
        for i in range(members))
    began = time.perf_counter()
    setup = create_setup(config)
    state = setup.init()
    rng = np.random.default_rng(0)
    size, batch = config.data.image_size, config.train.global_batch_size
    images = {"image": rng.uniform(-1, 1, (batch, size, size, 3)).astype(np.float32),
              "label": rng.integers(0, 10, (batch,)).astype(np.int32)}
    images = jax.device_put(images, setup.batch_sharding)
    state, metrics = setup.step(state, images)
    jax.block_until_ready(metrics)
    first = time.perf_counter() - began
    began = time.perf_counter()
    for _ in range(steps):
        state, metrics = setup.step(state, images)
    jax.block_until_ready(metrics)
    return first, (time.perf_counter() - began) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=8)
    parser.add_argument("--execution", default="vmap", choices=("vmap", "map"))
    parser.add_argument("--conv_impl", default="auto")
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    from inception_jax import xla_flags

    xla_flags.apply()
    one_first, one_step = measure(0, args.execution, args.conv_impl, args.steps)
    print(f"single run: first step {one_first:.1f} s, {one_step:.3f} s/step")
    pop_first, pop_step = measure(args.members, args.execution, args.conv_impl, args.steps)
    print(f"population of {args.members} ({args.execution}, conv_impl={args.conv_impl}): "
          f"first step {pop_first:.1f} s, {pop_step:.3f} s/step = "
          f"{pop_step / args.members:.3f} s per member-step, "
          f"{pop_step / args.members / one_step:.2f}x a single run's")


if __name__ == "__main__":
    main()
