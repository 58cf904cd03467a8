"""The train state and the pure train/eval step functions (jitted and sharded by the trainer)."""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from inception_jax.losses import cross_entropy, top_k_correct
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


def train_step(
    state: TrainState,
    batch: dict[str, jax.Array],
    *,
    model: InceptionNet,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    cfg: ml_collections.ConfigDict,
    seed: int,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimizer step on a global batch. `cfg` is the config's `train` section."""
    dropout_rng = jax.random.fold_in(jax.random.key(seed), state.step)

    def loss_fn(params):
        out, updates = model.apply(
            {"params": params, "batch_stats": state.batch_stats},
            batch["image"],
            train=True,
            rngs={"dropout": dropout_rng},
            mutable=["batch_stats"],
        )
        logits, aux = out if isinstance(out, tuple) else (out, None)
        loss = cross_entropy(logits, batch["label"], cfg.label_smoothing)
        if aux is not None:
            loss = loss + cfg.aux_loss_weight * cross_entropy(
                aux, batch["label"], cfg.label_smoothing
            )
        return loss, (logits, updates["batch_stats"])

    (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params
    )
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema = ema_update(
        state.ema,
        {"params": params, "batch_stats": batch_stats},
        state.step,
        cfg.ema_decay,
        cfg.ema_warmup,
    )
    metrics = {
        "loss": loss,
        "accuracy": jnp.mean(top_k_correct(logits, batch["label"], 1)),
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
    mask = batch["mask"]
    return {
        "top1": jnp.sum(top_k_correct(logits, batch["label"], 1) * mask),
        "top5": jnp.sum(top_k_correct(logits, batch["label"], 5) * mask),
        "count": jnp.sum(mask),
    }
