"""The dead-unit monitor: its numbers on constructed activations, on a real network, and the
trainer stopping a run whose pre-pool map died."""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inception_jax.models import create
from inception_jax.monitor import DeadNetworkWatch, activation_health, health_step
from inception_jax.trainer import train_and_evaluate
from inception_jax.weights import save_weights
from tests.helpers import TINY_MODEL, random_variables, tiny_config


def test_health_numbers_on_constructed_activations():
    rng = np.random.default_rng(0)
    a = rng.uniform(0.1, 1.0, (2, 4, 4, 8)).astype(np.float32)
    a.reshape(-1)[rng.permutation(a.size)[: a.size * 3 // 8]] = 0.0  # exactly 37.5% zeros
    last = rng.uniform(0.1, 1.0, (2, 2, 2, 4)).astype(np.float32)
    last[..., 1] = 0.0  # channel 1 dead everywhere
    last[0, 0, 0, 0] = 0.0  # plus one more zero: 9 of 32 values
    monitor = {"stage": {"branch_rms": (np.array([1.0, 3.0]),),
                         "trunk_rms": (np.array([2.0, 4.0]),)}}
    stats = activation_health(
        {"a_out": (a,), "last_out": (last,), "pooled_out": (last.mean((1, 2)),)}, monitor, "last"
    )
    assert float(stats["zero_frac/a"]) == pytest.approx(0.375)
    assert float(stats["zero_frac/last"]) == pytest.approx(9 / 32)
    assert float(stats["dead/prepool_zero_frac"]) == pytest.approx(9 / 32)
    assert float(stats["dead/prepool_dead_channels"]) == pytest.approx(0.25)
    assert float(stats["residual/stage_branch_rms"]) == pytest.approx(2.0)
    assert float(stats["residual/stage_trunk_rms"]) == pytest.approx(3.0)
    assert float(stats["residual/stage_ratio"]) == pytest.approx((0.5 + 0.75) / 2)
    assert "zero_frac/pooled" not in stats


def tiny_irv2(**knobs):
    return create("inception_resnet_v2", width=0.125, blocks=(1, 1, 1), num_classes=10,
                  conv_impl="xla", **knobs)


def jitted_health(variables, x, model):
    """`health_step` as one program (op by op, it compiled ~300 small ones: 15 s vs 8 s)."""
    return jax.jit(functools.partial(health_step, model=model))(variables, x,
                                                                rng=jax.random.key(0))


def test_health_step_on_a_network():
    x = jnp.asarray(np.random.default_rng(1).uniform(-1, 1, (2, 75, 75, 3)), jnp.float32)
    ratios = []
    for scale in (0.1, 0.2):
        model = tiny_irv2(residual_scales=(scale, scale, scale))
        stats = jitted_health(random_variables(model), x, model)
        ratios.append(float(stats["residual/block35_ratio"]))
        assert 0.0 < float(stats["dead/prepool_zero_frac"]) < 1.0
        assert {"zero_frac/stem", "zero_frac/conv_7b", "residual/block8_final_ratio"} <= set(stats)
    # The first (here the only) block35 sees the same input: its branch RMS doubles exactly.
    assert ratios[1] == pytest.approx(2 * ratios[0], rel=1e-5)
    model = tiny_irv2()
    variables = random_variables(model)
    variables["params"]["conv_7b"]["b0_0"]["bn"]["bias"] = jnp.full_like(
        variables["params"]["conv_7b"]["b0_0"]["bn"]["bias"], -1e4
    )
    dead = jitted_health(variables, x, model)
    assert float(dead["dead/prepool_zero_frac"]) == 1.0
    assert float(dead["dead/prepool_dead_channels"]) == 1.0


def test_dead_network_watch_counts_consecutive_logs():
    watch = DeadNetworkWatch(patience=2)
    assert [watch.update(f) for f in (1.0, 0.5, 1.0, 1.0, 1.0)] == [False, False, False, True, True]
    assert not any(DeadNetworkWatch(patience=0).update(1.0) for _ in range(5))
    # A threshold below 1 counts a map with a few flickering units as dead.
    near = DeadNetworkWatch(patience=2, threshold=0.999)
    assert [near.update(f) for f in (0.9999, 0.998, 0.9995, 1.0)] == [False, False, False, True]
    assert not any(DeadNetworkWatch(patience=1).update(0.9999) for _ in range(3))


@pytest.mark.slow
def test_training_logs_health_and_stops_a_dead_network(tmp_path, capsys):
    # The tiny network (tests/helpers.py) with a 17x17 block (the residual ratios). Its last
    # unit, the 8x8 block, ends in a ReLU of trunk + 0.2 * projection: a projection bias of
    # -1e4 zeroes the map that is pooled into the classifier.
    knobs = {"width": 0.125, "blocks": (0, 1, 1), "num_classes": 10}
    model = create(TINY_MODEL, **knobs)
    variables = random_variables(model, image_size=75)
    bias = variables["params"]["block8"]["proj"]["bias"]
    variables["params"]["block8"]["proj"]["bias"] = np.full(bias.shape, -1e4, np.float32)
    weights = str(tmp_path / "dead.safetensors")
    save_weights(weights, variables, TINY_MODEL, knobs)
    config = tiny_config(str(tmp_path / "tfds"), **{
        "train.num_steps": 8, "train.init_weights": weights, "model.blocks": (0, 1, 1),
        "monitor.enabled": True, "monitor.dead_patience": 2,
    })
    state = train_and_evaluate(config, str(tmp_path / "run"))
    assert int(state.step) == 4  # logs every 2 steps: dead at the logs of steps 2 and 4
    records = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    logged = [r for r in records if "dead/prepool_zero_frac" in r]
    assert [r["step"] for r in logged] == [2, 4]
    assert all(r["dead/prepool_zero_frac"] == 1.0 for r in logged)
    assert any(r.get("died_at_step") == 4 for r in records)
    assert "residual/block17_ratio" in logged[0] and "zero_frac/reduction_a" in logged[0]
    # The console shows the configured few (the death included), not every health scalar.
    console = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[")]
    assert console[0].startswith("[2] loss=") and console[0].endswith(" dead/prepool_zero_frac=1")
    assert "died_at_step=4" in console[-1]
    assert not any("residual/" in line or "zero_frac/" in line for line in console)
    total = f"Total: {sum(np.size(p) for p in jax.tree.leaves(state.params)):,}"
    assert total in (tmp_path / "run" / "parameters.txt").read_text()
