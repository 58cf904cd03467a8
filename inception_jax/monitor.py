"""Network health at logging steps: dead activations and residual-branch scale (paper §3.3).

The paper saw unscaled Inception-ResNets with more than ~1,000 filters "die": the layer
before average pooling output only zeros. At logging steps the trainer runs `health_step` (an
extra forward pass in training mode that updates nothing), which returns:
- `zero_frac/<unit>`: the fraction of exactly-zero activations of each unit's output;
- `dead/prepool_zero_frac`: the same for the map that is average-pooled into the classifier;
- `dead/prepool_dead_channels`: the fraction of its channels that are zero everywhere;
- `residual/<stage>_branch_rms`, `_trunk_rms`, `_ratio`: RMS of the scaled residual branch and
  of the trunk it is added to, averaged over the stage's blocks (ratio: per block, averaged).
No other step pays for it: the blocks record their RMS only when asked (`monitor` collection).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from inception_jax.models import InceptionNet


def _first(sown: Any) -> jax.Array:
    """`sow` stores a tuple of the values sown; each of ours is sown once per call."""
    return sown[0] if isinstance(sown, tuple) else sown


def activation_health(
    intermediates: dict[str, Any], monitor: dict[str, Any], prepool_unit: str
) -> dict[str, jax.Array]:
    """The health scalars from sown unit outputs and residual RMS values (pure)."""
    stats = {}
    for key, sown in intermediates.items():
        if key.endswith("_out") and key != "pooled_out":
            stats[f"zero_frac/{key[: -len('_out')]}"] = jnp.mean(_first(sown) == 0)
    prepool = _first(intermediates[f"{prepool_unit}_out"])
    stats["dead/prepool_zero_frac"] = jnp.mean(prepool == 0)
    stats["dead/prepool_dead_channels"] = jnp.mean(jnp.all(prepool == 0, axis=(0, 1, 2)))
    for unit, values in monitor.items():
        branch = jnp.ravel(_first(values["branch_rms"]))
        trunk = jnp.ravel(_first(values["trunk_rms"]))
        stats[f"residual/{unit}_branch_rms"] = jnp.mean(branch)
        stats[f"residual/{unit}_trunk_rms"] = jnp.mean(trunk)
        stats[f"residual/{unit}_ratio"] = jnp.mean(branch / jnp.maximum(trunk, 1e-12))
    return stats


def health_step(
    variables: dict[str, Any], images: jax.Array, *, model: InceptionNet, rng: jax.Array
) -> dict[str, jax.Array]:
    """One training-mode forward pass of `images`; returns `activation_health`'s scalars."""
    _, sown = model.apply(
        variables, images, train=True, rngs={"dropout": rng},
        mutable=["batch_stats", "intermediates", "monitor"],
    )
    return activation_health(
        sown["intermediates"], sown.get("monitor", {}), model.units()[-1].name
    )


class DeadNetworkWatch:
    """Counts consecutive logs whose pre-pool map was dead: a zero fraction of at least
    `threshold` (1.0 = only zeros, the paper's wording; a dying network's map often keeps a
    few flickering units, e.g. 0.9999 with the accuracy at chance)."""

    def __init__(self, patience: int, threshold: float = 1.0):
        self.patience = patience
        self.threshold = threshold
        self.consecutive = 0

    def update(self, prepool_zero_frac: float) -> bool:
        """Records one log; True once `patience` (> 0) consecutive logs were dead."""
        dead = prepool_zero_frac >= self.threshold
        self.consecutive = self.consecutive + 1 if dead else 0
        return self.patience > 0 and self.consecutive >= self.patience
