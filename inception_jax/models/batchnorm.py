"""BatchNorm whose training statistics come from groups of examples (`group_size`).

With `group_size=0` this is Flax's `nn.BatchNorm` over the whole (global) batch: under a
sharded `jit`, XLA reduces every BN layer's statistics across devices. With a group size that
divides the per-device batch, the batch is viewed as [groups, group_size, ...] and each group is
normalized by its own mean and variance, as each replica's BN was in the paper (32 images), so
the forward pass needs no cross-device communication. The running averages move towards the mean
of the groups' statistics. Variables are named as in `nn.BatchNorm` (params `scale`, `bias`;
batch_stats `mean`, `var`), so weights and checkpoints are the same either way.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from inception_jax.errors import UserError


class GroupedBatchNorm(nn.Module):
    """BatchNorm over the trailing feature axis with statistics per group of examples."""

    use_running_average: bool
    group_size: int = 0
    momentum: float = 0.99
    epsilon: float = 1e-3
    use_scale: bool = True
    scale_init: Any = nn.initializers.ones
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        features = x.shape[-1]
        ra_mean = self.variable("batch_stats", "mean", jnp.zeros, (features,), jnp.float32)
        ra_var = self.variable("batch_stats", "var", jnp.ones, (features,), jnp.float32)
        scale = (
            self.param("scale", self.scale_init, (features,), jnp.float32)
            if self.use_scale else None
        )
        bias = self.param("bias", nn.initializers.zeros, (features,), jnp.float32)
        if self.use_running_average:
            return _normalize(x, ra_mean.value, ra_var.value, scale, bias, self.epsilon,
                              self.dtype)
        n = x.shape[0]
        if n % self.group_size:
            raise UserError(
                f"model.bn_group_size={self.group_size} does not divide the batch of {n} "
                "examples a BatchNorm layer sees (the per-step batch over grad_accum_steps): "
                "choose a divisor of the per-device batch, or 0 for whole-batch statistics."
            )
        groups = x.reshape(n // self.group_size, self.group_size, *x.shape[1:])
        stats_in = groups.astype(jnp.promote_types(x.dtype, jnp.float32))
        axes = tuple(range(1, groups.ndim - 1))
        mean = jnp.mean(stats_in, axes, keepdims=True)
        # Var = E[x^2] - E[x]^2 in one fusion, clipped at 0, as nn.BatchNorm computes it.
        var = jnp.maximum(0.0, jnp.mean(jnp.square(stats_in), axes, keepdims=True) - mean**2)
        if not self.is_initializing():
            m = self.momentum
            ra_mean.value = m * ra_mean.value + (1 - m) * mean.reshape(-1, features).mean(0)
            ra_var.value = m * ra_var.value + (1 - m) * var.reshape(-1, features).mean(0)
        y = _normalize(groups, mean, var, scale, bias, self.epsilon, self.dtype)
        return y.reshape(x.shape)


def _normalize(x, mean, var, scale, bias, epsilon: float, dtype: Any) -> jnp.ndarray:
    """(x - mean) / sqrt(var + eps) * scale + bias in float32, cast to `dtype`."""
    mul = jax.lax.rsqrt(var + epsilon)
    if scale is not None:
        mul = mul * scale
    y = (x.astype(jnp.float32) - mean) * mul + bias
    return y.astype(dtype)
