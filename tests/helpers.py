"""Test utilities: model variables filled with numpy random values (no jitted init)."""

import jax
import jax.numpy as jnp
import numpy as np


def random_variables(model, image_size: int = 75, seed: int = 0, batch: int = 1):
    """Every parameter and BN statistic randomized, with shapes from `jax.eval_shape`.

    Kernels are He-scaled normals so activations stay O(1) through the deep trunk; BN scales
    and variances lie in [0.5, 1.5], biases and means are small normals.
    """
    rng = np.random.default_rng(seed)
    x = jnp.zeros((batch, image_size, image_size, 3))
    shapes = jax.eval_shape(model.init, jax.random.key(0), x)
    shapes = {k: v for k, v in shapes.items() if k in ("params", "batch_stats")}

    def fill(path, leaf):
        name = path[-1].key
        if name == "kernel":
            fan_in = int(np.prod(leaf.shape[-4:-1] if leaf.ndim >= 4 else leaf.shape[-2:-1]))
            value = rng.normal(size=leaf.shape) * np.sqrt(2.0 / fan_in)
        elif name in ("scale", "var"):
            value = rng.uniform(0.5, 1.5, size=leaf.shape)
        else:
            value = rng.normal(size=leaf.shape) * 0.1
        return jnp.asarray(value, jnp.float32)

    return jax.tree_util.tree_map_with_path(fill, shapes)
