"""Optimizer, learning-rate schedule and parameter moving average (pure functions).

The recipe of the paper: RMSProp (decay 0.9, momentum 0.9, ε 1.0), learning rate 0.045 scaled
with the batch and decayed ×0.94 every 2 epochs (staircase), gradient clipping by global norm,
L2 weight decay on kernels, and an exponential moving average of the weights for evaluation.

Two RMSProp variants:
- "rmsprop" (default): optax's, with the mean square starting at 1 and ε inside the square
  root as in TF1, but the learning rate applied *outside* the momentum accumulator — so a
  step in the rate takes effect at once.
- "rmsprop_tf1": TF1's `RMSPropOptimizer` exactly: mom = μ·mom + lr·g/√(ms + ε); the rate sits
  *inside* the accumulator, so after a rate step the old rate decays out with the momentum.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax

OPTIMIZERS = ("rmsprop", "rmsprop_tf1")
WEIGHT_DECAY_MASKS = ("kernels", "all", "none")


def _positive(cfg: ml_collections.ConfigDict, section: str, *names: str) -> None:
    for name in names:
        if not cfg[name] > 0:
            raise ValueError(f"{section}.{name} must be > 0, got {cfg[name]!r}")


def learning_rate_schedule(
    cfg: ml_collections.ConfigDict, steps_per_epoch: int, global_batch_size: int
) -> optax.Schedule:
    """Staircase exponential decay of the batch-scaled rate, with optional linear warm-up.

    lr(step) = base_lr · B / reference_batch_size · decay_rate^⌊step / decay_steps⌋, times
    min(1, step / warmup_steps) during warm-up. Epochs become steps here, and only here.
    """
    _positive(cfg, "schedule", "base_lr", "reference_batch_size", "decay_rate", "decay_epochs")
    if cfg.warmup_epochs < 0:
        raise ValueError(f"schedule.warmup_epochs must be >= 0, got {cfg.warmup_epochs!r}")
    peak = cfg.base_lr * global_batch_size / cfg.reference_batch_size
    decay_steps = max(1, round(cfg.decay_epochs * steps_per_epoch))
    warmup_steps = round(cfg.warmup_epochs * steps_per_epoch)
    decay_rate = cfg.decay_rate

    def schedule(step):
        step = jnp.asarray(step)
        lr = peak * jnp.power(decay_rate, (step // decay_steps).astype(jnp.float32))
        if warmup_steps > 0:
            lr = lr * jnp.minimum(1.0, step.astype(jnp.float32) / warmup_steps)
        return lr

    return schedule


class TF1RMSPropState(NamedTuple):
    """State of `rmsprop_tf1`."""

    count: jax.Array
    mean_square: Any
    momentum: Any


def rmsprop_tf1(
    learning_rate: optax.Schedule, decay: float, momentum: float, eps: float
) -> optax.GradientTransformation:
    """TF1's RMSProp: ms₀ = 1, ms = ρ·ms + (1-ρ)·g², mom = μ·mom + lr·g/√(ms + ε), Δ = -mom."""

    def init(params):
        return TF1RMSPropState(
            count=jnp.zeros((), jnp.int32),
            mean_square=jax.tree.map(jnp.ones_like, params),
            momentum=jax.tree.map(jnp.zeros_like, params),
        )

    def update(grads, state, params=None):
        del params
        lr = learning_rate(state.count)
        ms = jax.tree.map(lambda m, g: decay * m + (1 - decay) * g * g, state.mean_square, grads)
        mom = jax.tree.map(
            lambda v, g, m: momentum * v + lr * g / jnp.sqrt(m + eps), state.momentum, grads, ms
        )
        updates = jax.tree.map(jnp.negative, mom)
        return updates, TF1RMSPropState(state.count + 1, ms, mom)

    return optax.GradientTransformation(init, update)


def _weight_decay_mask(kind: str):
    if kind == "all":
        return None
    return lambda params: jax.tree_util.tree_map_with_path(
        lambda path, _: path[-1].key == "kernel", params
    )


def create_optimizer(
    cfg: ml_collections.ConfigDict, schedule: optax.Schedule
) -> optax.GradientTransformation:
    """L2 gradient (weight_decay·w on the masked leaves) → global-norm clipping → RMSProp."""
    if cfg.name not in OPTIMIZERS:
        raise ValueError(f"optim.name must be one of {OPTIMIZERS}, got {cfg.name!r}")
    if cfg.weight_decay_mask not in WEIGHT_DECAY_MASKS:
        raise ValueError(
            f"optim.weight_decay_mask must be one of {WEIGHT_DECAY_MASKS}, "
            f"got {cfg.weight_decay_mask!r}"
        )
    _positive(cfg, "optim", "decay", "eps")
    parts = []
    if cfg.weight_decay and cfg.weight_decay_mask != "none":
        parts.append(
            optax.add_decayed_weights(cfg.weight_decay, _weight_decay_mask(cfg.weight_decay_mask))
        )
    if cfg.grad_clip_norm:
        parts.append(optax.clip_by_global_norm(cfg.grad_clip_norm))
    if cfg.name == "rmsprop":
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
        parts.append(rmsprop_tf1(schedule, cfg.decay, cfg.momentum, cfg.eps))
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


global_norm = optax.global_norm
