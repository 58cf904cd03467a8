"""The training loss, classification loss and accuracy (pure functions).

`training_loss` is what the train step minimises: change the objective here.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def cross_entropy(logits: jax.Array, labels: jax.Array, label_smoothing: float) -> jax.Array:
    """Mean softmax cross-entropy against smoothed one-hot labels."""
    num_classes = logits.shape[-1]
    targets = optax.smooth_labels(jax.nn.one_hot(labels, num_classes), label_smoothing)
    return jnp.mean(optax.softmax_cross_entropy(logits.astype(jnp.float32), targets))


def top_k_correct(logits: jax.Array, labels: jax.Array, k: int) -> jax.Array:
    """Per example: 1.0 if the label is among the k highest logits, else 0.0."""
    k = min(k, logits.shape[-1])
    top = jax.lax.top_k(logits, k)[1]
    return jnp.any(top == labels[:, None], axis=-1).astype(jnp.float32)


def training_loss(
    logits: jax.Array,
    aux_logits: jax.Array | None,
    labels: jax.Array,
    label_smoothing: float,
    aux_loss_weight: float,
) -> jax.Array:
    """The recipe's loss: smoothed cross-entropy of the logits, plus `aux_loss_weight` times
    that of the auxiliary head's logits when the network has one (slim's weight is 0.4)."""
    loss = cross_entropy(logits, labels, label_smoothing)
    if aux_logits is not None:
        loss = loss + aux_loss_weight * cross_entropy(aux_logits, labels, label_smoothing)
    return loss
