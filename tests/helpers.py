"""Test utilities: random model variables (no jitted init), a tiny training config, a small
checkpointable state."""

import importlib
import os
import sys
from pathlib import Path

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


ROOT = Path(__file__).resolve().parents[1]

# A tiny IR-v1 on a tiny built-in dataset (as flags, so subprocess runs use the same): the stem
# and the two reductions, with no residual block. The trainer's tests assert no architecture
# (the residual blocks' training maths are test_models' and test_residual_modes'; the monitor
# test trains one), and a small network is cheap to compile, which is most of what a tiny run
# costs. Measured (one device, jit(train_step) compile): IR-v2 with blocks (1,2,2) 25 s, with
# (0,0,1) 14.5 s; IR-v1 with (0,0,1) 10.3 s (its stem has no branches), and XLA's convolution
# instead of the CPU rewrite (`conv_impl`, a speed knob whose outputs and gradients test_models
# compares) 8.9 s; lowered and compiled 8.3 s at (0,0,1), 6.2 s at (0,0,0) (on a faster
# host). The dead-unit monitor is off (one compiled program fewer a run);
# tests that read it turn it on.
# Runs with these knobs in processes with as many devices compile the same programs, so later
# ones load them from the compilation cache. Not across device counts: the key holds the
# process's devices, so this suite's in-process runs (8 forced devices), even on a one-device
# mesh, do not load the programs of its one-device subprocesses.
TINY_MODEL = "inception_resnet_v1"
TINY = {
    "model.width": 0.125,
    "model.blocks": (0, 0, 0),
    "model.conv_impl": "xla",
    "data.builder.image_size": 32,
    "data.builder.num_train": 128,
    "data.builder.num_test": 32,
    # Synthetic data of the same sizes: the learning-rate schedule (decay once an epoch) is
    # compiled into the train step, so runs on either data share it.
    "data.synthetic.num_train": 128,
    "data.synthetic.num_eval": 32,
    "train.global_batch_size": 16,
    "train.eval_batch_size": 16,
    "train.log_every_steps": 2,
    "train.eval_every_steps": 0,
    "train.checkpoint_every_steps": 2,
    "monitor.enabled": False,
}


def tiny_config(data_dir, **overrides):
    config = importlib.import_module(f"configs.{TINY_MODEL}").get_config("smoke")
    settings = {**TINY, "data.data_dir": data_dir, **overrides}
    for dotted, value in settings.items():
        *parents, leaf = dotted.split(".")
        node = config
        for p in parents:
            node = node[p]
        node[leaf] = value
    return config


def tiny_settings(*prefixes):
    """The TINY settings whose keys start with one of `prefixes` (e.g. "model.")."""
    return {k: v for k, v in TINY.items() if k.startswith(prefixes)}


def config_flags(settings):
    """`--config.KEY=VALUE` flags for a dict of dotted config keys."""
    from inception_jax.sweep import format_value

    return [f"--config.{k}={format_value(v)}" for k, v in settings.items()]


def flags(data_dir, workdir, **overrides):
    """train.py's command line for the tiny IR-v1 with `overrides`."""
    return [sys.executable, str(ROOT / "train.py"),
            "--config", str(ROOT / f"configs/{TINY_MODEL}.py") + ":smoke",
            "--workdir", str(workdir),
            *config_flags({**TINY, "data.data_dir": data_dir, **overrides})]


def run_env(devices=1):
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["PYTHONPATH"] = str(ROOT)
    return env


def small_state(shift: float, rows: int = 30) -> dict:
    """A small train-state-like tree whose every value tells which `shift` (step) made it."""
    return {"w": jnp.arange(rows * 100, dtype=jnp.float32).reshape(rows, 100) + shift,
            "b": {"c": jnp.full((7,), shift)}, "step": jnp.int32(shift)}


def restore_target(state):
    """The restore target of `state`: each array's shape, dtype and sharding."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                        state)
