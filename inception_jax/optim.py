"""Optimizer, learning-rate schedule and parameter moving average (pure functions).

The recipe of the paper: RMSProp (decay 0.9, momentum 0.9, ε 1.0), learning rate 0.045 scaled
with the batch and decayed ×0.94 every 2 epochs (staircase), gradient clipping by global norm,
L2 weight decay on kernels (and, as slim's IR-v2, on conv/dense biases), and an
exponential moving average of the weights for evaluation.

Two RMSProp variants, both built from optax's parts:
- "rmsprop_tf1" (default): TF1's `RMSPropOptimizer` exactly — the mean square starts at 1,
  ε sits inside the square root, and the learning rate inside the momentum accumulator:
  mom = μ·mom + lr·g/√(ms + ε). After a rate step the old rate decays out with the momentum.
  (optax's `rmsprop` with `initial_scale=1, eps_in_sqrt=True` is exactly this.)
- "rmsprop_torch": PyTorch's `RMSprop` (what timm trains with): the mean square starts at 0,
  ε is added outside the square root, and the rate multiplies the momentum buffer:
  buf = μ·buf + g/(√ms + ε), Δ = -lr·buf. A rate step takes effect at once.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from inception_jax.errors import UserError
from inception_jax.hparams import peak_learning_rate, warmup_steps

OPTIMIZERS = ("rmsprop_tf1", "rmsprop_torch")
WEIGHT_DECAY_MASKS = ("kernels", "kernels_and_biases", "all", "none")


def _positive(cfg: ml_collections.ConfigDict, section: str, *names: str) -> None:
    for name in names:
        if not cfg[name] > 0:
            raise UserError(f"{section}.{name} must be > 0, got {cfg[name]!r}")


def learning_rate_schedule(
    cfg: ml_collections.ConfigDict, steps_per_epoch: int, global_batch_size: int
) -> optax.Schedule:
    """Staircase exponential decay of the batch-scaled rate, with optional linear warm-up.

    lr(step) = base_lr · B / reference_batch_size · decay_rate^⌊step / decay_steps⌋, times
    min(1, step / warmup_steps) during warm-up. Epochs become steps here, and only here.
    """
    check_schedule(cfg)
    return staircase_schedule(
        peak_learning_rate(cfg, global_batch_size), cfg.decay_rate,
        decay_steps(cfg, steps_per_epoch), warmup_steps(cfg, steps_per_epoch),
    )


def check_schedule(cfg: ml_collections.ConfigDict) -> None:
    """UserError for a schedule section that no run can use."""
    _positive(cfg, "schedule", "base_lr", "reference_batch_size", "decay_rate", "decay_epochs")
    if cfg.warmup_epochs < 0:
        raise UserError(f"schedule.warmup_epochs must be >= 0, got {cfg.warmup_epochs!r}")


def decay_steps(cfg: ml_collections.ConfigDict, steps_per_epoch: int) -> int:
    """Steps between two decays of the rate (at least 1)."""
    return max(1, round(cfg.decay_epochs * steps_per_epoch))


def staircase_schedule(
    peak: float | jax.Array, decay_rate: float, decay_every: int, warmup: int | jax.Array,
) -> optax.Schedule:
    """peak · decay_rate^⌊step / decay_every⌋, ramped linearly over `warmup` steps (0: none).

    `peak` and `warmup` may be arrays (a population member's values).
    """

    def schedule(step):
        step = jnp.asarray(step)
        lr = peak * jnp.power(decay_rate, (step // decay_every).astype(jnp.float32))
        if isinstance(warmup, jax.Array):
            ramp = jnp.minimum(1.0, step.astype(jnp.float32) / jnp.maximum(warmup, 1))
            lr = jnp.where(warmup > 0, lr * ramp, lr)
        elif warmup > 0:
            lr = lr * jnp.minimum(1.0, step.astype(jnp.float32) / warmup)
        return lr

    return schedule


def _weight_decay_mask(kind: str):
    """Which parameters decay: "kernels" (conv and dense weights), "kernels_and_biases" (also
    the biases of layers that have a kernel, as slim's Inception-ResNet-v2 arg scope does;
    never BatchNorm's), "all"."""
    if kind == "all":
        return None

    def decays(path, params) -> bool:
        name = path[-1].key
        if name == "bias" and kind == "kernels_and_biases":
            parent = params
            for key in path[:-1]:
                parent = parent[key.key]
            return "kernel" in parent  # a conv's or dense layer's bias, not a BN's
        return name == "kernel"

    return lambda params: jax.tree_util.tree_map_with_path(
        lambda path, _: decays(path, params), params
    )


def create_optimizer(
    cfg: ml_collections.ConfigDict, schedule: optax.Schedule,
    weight_decay: float | jax.Array | None = None,
) -> optax.GradientTransformation:
    """L2 gradient (weight_decay·w on the masked leaves) → global-norm clipping → RMSProp.

    `weight_decay` replaces `cfg.weight_decay` (an array: a population member's value).
    """
    if cfg.name not in OPTIMIZERS:
        raise UserError(f"optim.name must be one of {OPTIMIZERS}, got {cfg.name!r}")
    if cfg.weight_decay_mask not in WEIGHT_DECAY_MASKS:
        raise UserError(
            f"optim.weight_decay_mask must be one of {WEIGHT_DECAY_MASKS}, "
            f"got {cfg.weight_decay_mask!r}"
        )
    _positive(cfg, "optim", "decay", "eps")
    decay = cfg.weight_decay if weight_decay is None else weight_decay
    parts = []
    if (isinstance(decay, jax.Array) or decay) and cfg.weight_decay_mask != "none":
        parts.append(optax.add_decayed_weights(decay, _weight_decay_mask(cfg.weight_decay_mask)))
    if cfg.grad_clip_norm:
        parts.append(optax.clip_by_global_norm(cfg.grad_clip_norm))
    if cfg.name == "rmsprop_tf1":
        parts.append(
            optax.rmsprop(
                schedule,
                decay=cfg.decay,
                eps=cfg.eps,
                initial_scale=1.0,
                eps_in_sqrt=True,
                momentum=cfg.momentum or None,
            )
        )
    else:
        parts += [
            optax.scale_by_rms(cfg.decay, cfg.eps, initial_scale=0.0, eps_in_sqrt=False),
            optax.trace(cfg.momentum) if cfg.momentum else optax.identity(),
            optax.scale_by_learning_rate(schedule),
        ]
    return optax.chain(*parts)


def ema_init(tree: Any) -> Any:
    """The moving average starts as a copy of the weights."""
    return jax.tree.map(jnp.array, tree)


def ema_update(ema: Any, new: Any, step: jax.Array, decay: float, warmup: bool) -> Any:
    """ema·d + new·(1-d); with warm-up, d = min(decay, (1+step)/(10+step)) as in TF."""
    d = jnp.asarray(decay, jnp.float32)
    if warmup:
        step = jnp.asarray(step, jnp.float32)
        d = jnp.minimum(d, (1.0 + step) / (10.0 + step))
    return jax.tree.map(lambda e, n: e * d + n.astype(e.dtype) * (1.0 - d), ema, new)


global_norm = optax.tree.norm
