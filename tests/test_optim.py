"""Schedule, RMSProp variants, weight decay, clipping and the moving average, in numbers."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from inception_jax.errors import UserError
from inception_jax.optim import create_optimizer, ema_update, learning_rate_schedule


def schedule_cfg(**kw):
    c = ml_collections.ConfigDict(
        dict(base_lr=0.045, reference_batch_size=256, decay_rate=0.94, decay_epochs=2.0,
             warmup_epochs=0.0)
    )
    c.update(kw)
    return c


def optim_cfg(**kw):
    c = ml_collections.ConfigDict(
        dict(name="rmsprop_tf1", decay=0.9, momentum=0.9, eps=1.0, grad_clip_norm=0.0,
             weight_decay=0.0, weight_decay_mask="kernels")
    )
    c.update(kw)
    return c


def test_learning_rate_is_staircase_decay_of_the_batch_scaled_rate():
    steps_per_epoch, batch = 100, 1024
    lr = learning_rate_schedule(schedule_cfg(), steps_per_epoch, batch)
    for step in [0, 1, 199, 200, 201, 399, 400, 1000, 1999, 2000, 5050]:
        epoch = step / steps_per_epoch
        expected = 0.045 * batch / 256 * 0.94 ** np.floor(epoch / 2)
        np.testing.assert_allclose(float(lr(step)), expected, rtol=1e-6)


def test_warmup_ramps_linearly_then_follows_the_staircase():
    lr = learning_rate_schedule(schedule_cfg(warmup_epochs=1.0), 10, 256)
    np.testing.assert_allclose([float(lr(s)) for s in (0, 5, 10, 25)],
                               [0.0, 0.0225, 0.045, 0.045 * 0.94], rtol=1e-6)


@pytest.mark.parametrize("field", ["base_lr", "decay_rate", "decay_epochs"])
def test_bad_schedule_values_raise(field):
    with pytest.raises(UserError, match=f"schedule.{field} must be > 0"):
        learning_rate_schedule(schedule_cfg(**{field: 0.0}), 10, 256)


def _stepping_schedule(step):
    return 0.1 * 0.5 ** (step // 3)  # halves every 3 steps


def _numpy_rmsprop(grads, tf1: bool):
    """TF1: ms0 = 1, eps inside sqrt, lr inside momentum. PyTorch: ms0 = 0, eps outside, lr out."""
    w = np.array([0.5, -1.0, 2.0])
    ms, mom = (np.ones(3) if tf1 else np.zeros(3)), np.zeros(3)
    out = []
    for t, g in enumerate(grads):
        lr = 0.1 * 0.5 ** (t // 3)
        ms = 0.9 * ms + 0.1 * g * g
        if tf1:
            mom = 0.9 * mom + lr * g / np.sqrt(ms + 1.0)
            w = w - mom
        else:
            mom = 0.9 * mom + g / (np.sqrt(ms) + 1.0)
            w = w - lr * mom
        out.append(w.copy())
    return np.array(out)


@pytest.mark.parametrize("tf1", [True, False])
def test_rmsprop_variants_match_their_hand_computed_references(tf1):
    grads = np.random.default_rng(0).normal(size=(8, 3)) * 3
    tx = create_optimizer(
        optim_cfg(name="rmsprop_tf1" if tf1 else "rmsprop_torch"), _stepping_schedule
    )
    params = {"w": jnp.array([0.5, -1.0, 2.0])}
    state = tx.init(params)
    update = jax.jit(tx.update)
    got = []
    for g in grads:
        updates, state = update({"w": jnp.asarray(g, jnp.float32)}, state, params)
        params = jax.tree.map(lambda p, u: p + u, params, updates)
        got.append(np.asarray(params["w"]))
    np.testing.assert_allclose(np.array(got), _numpy_rmsprop(grads, tf1), rtol=1e-5, atol=1e-6)
    if tf1:  # lr outside the accumulator would differ once the rate has stepped (t >= 3)
        w, ms, mom = np.array([0.5, -1.0, 2.0]), np.ones(3), np.zeros(3)
        for t, g in enumerate(grads[:5]):
            ms = 0.9 * ms + 0.1 * g * g
            mom = 0.9 * mom + g / np.sqrt(ms + 1.0)
            w = w - 0.1 * 0.5 ** (t // 3) * mom
        assert np.abs(np.array(got)[4] - w).max() > 1e-3
    # The two semantics give different trajectories.
    other = _numpy_rmsprop(grads, not tf1)
    assert np.abs(np.array(got)[5] - other[5]).max() > 1e-3


def test_weight_decay_moves_kernels_only():
    tx = create_optimizer(optim_cfg(weight_decay=0.1), lambda s: 1.0)
    params = {"conv": {"kernel": jnp.ones(3)}, "bn": {"scale": jnp.ones(3), "bias": jnp.ones(3)}}
    zeros = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zeros, tx.init(params), params)
    # L2 gradient 0.1 * w = 0.1 through RMSProp: 0.1 / sqrt(0.9 + 0.1 * 0.01 + 1.0)
    np.testing.assert_allclose(updates["conv"]["kernel"], -0.1 / np.sqrt(1.901), rtol=1e-5)
    assert float(jnp.abs(updates["bn"]["scale"]).max()) == 0.0
    assert float(jnp.abs(updates["bn"]["bias"]).max()) == 0.0


def test_kernels_and_biases_mask_decays_conv_and_dense_biases_not_batchnorms():
    # slim's Inception-ResNet-v2 arg scope: L2 on the weights and biases of conv2d and
    # fully_connected layers; BatchNorm's beta/gamma are never regularized.
    tx = create_optimizer(optim_cfg(weight_decay=0.1, weight_decay_mask="kernels_and_biases"),
                          lambda s: 1.0)
    params = {"proj": {"kernel": jnp.ones(3), "bias": jnp.ones(3)},
              "head": {"kernel": jnp.ones(3), "bias": jnp.ones(3)},
              "b0_0": {"bn": {"scale": jnp.ones(3), "bias": jnp.ones(3)}}}
    zeros = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zeros, tx.init(params), params)
    decayed = -0.1 / np.sqrt(1.901)
    for layer in ("proj", "head"):
        for name in ("kernel", "bias"):
            np.testing.assert_allclose(updates[layer][name], decayed, rtol=1e-5)
    assert float(jnp.abs(updates["b0_0"]["bn"]["scale"]).max()) == 0.0
    assert float(jnp.abs(updates["b0_0"]["bn"]["bias"]).max()) == 0.0


def test_gradients_are_clipped_to_the_global_norm_before_rmsprop():
    tx = create_optimizer(optim_cfg(grad_clip_norm=2.0), lambda s: 1.0)
    params = {"w": jnp.zeros(2)}
    g = jnp.array([300.0, 400.0])  # norm 500 -> clipped to [1.2, 1.6]
    updates, _ = tx.update({"w": g}, tx.init(params), params)
    clipped = np.array([1.2, 1.6])
    np.testing.assert_allclose(updates["w"], -clipped / np.sqrt(0.9 + 0.1 * clipped**2 + 1.0),
                               rtol=1e-5)


def test_unknown_optimizer_is_refused():
    with pytest.raises(UserError, match="optim.name must be one of"):
        create_optimizer(optim_cfg(name="adam"), lambda s: 1.0)


def test_moving_average_with_and_without_warmup():
    ema, new = {"a": jnp.array(1.0)}, {"a": jnp.array(0.0)}
    # Warm-up: d = min(0.999, (1 + 0) / (10 + 0)) = 0.1
    np.testing.assert_allclose(ema_update(ema, new, jnp.array(0), 0.999, True)["a"], 0.1)
    np.testing.assert_allclose(ema_update(ema, new, jnp.array(10**6), 0.999, True)["a"], 0.999,
                               rtol=1e-6)
    np.testing.assert_allclose(ema_update(ema, new, jnp.array(0), 0.9, False)["a"], 0.9)
