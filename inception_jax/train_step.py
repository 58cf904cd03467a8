"""The train state and the pure train/eval step functions (jitted and sharded by the trainer)."""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from inception_jax.evaluation import hit_sums
from inception_jax.freeze import NOTHING, Frozen
from inception_jax.hparams import HParams
from inception_jax.losses import top_k_correct, training_loss
from inception_jax.models import InceptionNet
from inception_jax.optim import ema_init, ema_update, global_norm


@flax.struct.dataclass
class TrainState:
    """Everything a run needs to continue exactly: step, weights, optimizer, moving average."""

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    ema: Any  # {"params": ..., "batch_stats": ...}, used for evaluation


def init_state(
    model: InceptionNet, tx: optax.GradientTransformation, rng: jax.Array, image_size: int
) -> TrainState:
    """A fresh train state (call under `jax.jit` with `out_shardings`)."""
    variables = model.init(rng, jnp.zeros((1, image_size, image_size, 3), jnp.float32))
    params, batch_stats = variables["params"], variables.get("batch_stats", {})
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=batch_stats,
        opt_state=tx.init(params),
        ema=ema_init({"params": params, "batch_stats": batch_stats}),
    )


def micro_batches(batch: dict[str, jax.Array], steps: int, shards: int) -> dict[str, jax.Array]:
    """[B, ...] → [steps, B / steps, ...]: micro-batch i is slice i of every device's shard.

    With the batch split over `shards` devices, device d holds rows [d*b, (d+1)*b); micro-batch
    i takes rows [d*b + i*b/steps, d*b + (i+1)*b/steps) of each, so it stays on the same devices
    (no data moves) and its BatchNorm groups are groups of the whole batch.
    """

    def split(x: jax.Array) -> jax.Array:
        rest = x.shape[1:]
        per_shard = x.reshape(shards, steps, x.shape[0] // (shards * steps), *rest)
        return jnp.swapaxes(per_shard, 0, 1).reshape(steps, x.shape[0] // steps, *rest)

    return jax.tree.map(split, batch)


def train_step(
    state: TrainState,
    batch: dict[str, jax.Array],
    *,
    model: InceptionNet,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    cfg: ml_collections.ConfigDict,
    hp: HParams,
    batch_shards: int = 1,
    frozen: Frozen = NOTHING,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimizer step on a global batch. `cfg` is the config's `train` section.

    With `cfg.grad_accum_steps` = A > 1 the batch runs as A micro-batches in a `lax.scan`:
    gradients (and loss, accuracy) are averaged over them, BatchNorm's running statistics are
    updated after each as A separate forward passes would, and the parameters, the moving
    average and the step (hence the learning rate) advance once. `batch_shards` is the number of
    devices the batch is split over (micro-batches keep each device's examples on it).
    `frozen` (`train.freeze`) gets no gradient, and its BatchNorm statistics are kept. `hp`
    holds the run's seed, loss weights and moving-average decay (`model`, `tx` and `schedule`
    are built with the rest of its values).
    """
    dropout_rng = jax.random.fold_in(jax.random.key(hp.seed), state.step)

    def loss_fn(params, batch_stats, micro, rng):
        out, updates = model.apply(
            {"params": frozen.stop_gradients(params) if frozen else params,
             "batch_stats": batch_stats},
            micro["image"],
            train=True,
            rngs={"dropout": rng},
            mutable=["batch_stats"],
        )
        logits, aux = out if isinstance(out, tuple) else (out, None)
        loss = training_loss(
            logits, aux, micro["label"], hp.label_smoothing, hp.aux_loss_weight
        )
        accuracy = jnp.mean(top_k_correct(logits, micro["label"], 1))
        return loss, (accuracy, updates["batch_stats"])

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    accum = cfg.grad_accum_steps
    if accum == 1:
        (loss, (accuracy, batch_stats)), grads = grad_fn(
            state.params, state.batch_stats, batch, dropout_rng
        )
    else:

        def micro_step(carry, inputs):
            batch_stats, sums = carry
            index, micro = inputs
            rng = jax.random.fold_in(dropout_rng, index)
            (loss, (accuracy, batch_stats)), grads = grad_fn(
                state.params, batch_stats, micro, rng
            )
            sums = jax.tree.map(jnp.add, sums, (loss, accuracy, grads))
            return (batch_stats, sums), None

        zeros = (jnp.zeros(()), jnp.zeros(()), jax.tree.map(jnp.zeros_like, state.params))
        (batch_stats, sums), _ = jax.lax.scan(
            micro_step,
            (state.batch_stats, zeros),
            (jnp.arange(accum), micro_batches(batch, accum, batch_shards)),
        )
        loss, accuracy, grads = jax.tree.map(lambda t: t / accum, sums)
    if frozen:
        batch_stats = frozen.keep("batch_stats", state.batch_stats, batch_stats)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema = ema_update(
        state.ema,
        {"params": params, "batch_stats": batch_stats},
        state.step,
        hp.ema_decay,
        cfg.ema_warmup,
    )
    if frozen:
        ema = frozen.keep_variables(state.ema, ema)
    metrics = {
        "loss": loss,
        "accuracy": accuracy,
        "learning_rate": schedule(state.step),
        "grad_norm": global_norm(grads),
        "param_norm": global_norm(params),
        "update_norm": global_norm(updates),
    }
    new_state = state.replace(
        step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state, ema=ema
    )
    return new_state, metrics


def eval_step(
    variables: dict[str, Any], batch: dict[str, jax.Array], *, model: InceptionNet
) -> dict[str, jax.Array]:
    """Sums of top-1/top-5 hits and of real examples (padding masked out) on one batch."""
    logits = model.apply(variables, batch["image"], train=False)
    return hit_sums(logits, batch["label"], batch["mask"])
