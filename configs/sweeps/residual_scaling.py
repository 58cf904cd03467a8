"""Residual scaling (paper §3.3): do wide Inception-ResNets die without scaled residuals?

ImageNet scale (IR-v2 at widths that put 2,080-3,120 filters in the 8x8 stage, 2 seeds):
    python -m inception_jax.sweep --sweep=configs/sweeps/residual_scaling.py \\
        --workdir=sweeps/residual_scaling --print_commands
CPU reproduction (4 runs, IR-v1 at width 0.6 = 1,075 filters in the 8x8 stage, ~20 min):
    python -m inception_jax.sweep --sweep=configs/sweeps/residual_scaling.py:cpu \\
        --workdir=sweeps/residual_scaling_cpu
Death on a CPU (14 runs: fixed scales 1.0/0.3/0.2/0.1 and learned scales, 2 seeds):
    python -m inception_jax.sweep --sweep=configs/sweeps/residual_scaling.py:death \\
        --workdir=sweeps/residual_scaling_death
"""

SCALES = [(1.0, 1.0, 1.0), (0.3, 0.3, 0.3), (0.2, 0.2, 0.2), (0.1, 0.1, 0.1)]


def get_sweep(arg: str | None = None) -> dict:
    """The sweep; arg "cpu" is the small reproduction, "death" the regime where an unscaled
    network dies on a CPU."""
    if arg in (None, ""):
        return {
            "config": "configs/inception_resnet_v2.py",
            "fixed": {"monitor.dead_patience": 5, "monitor.on_dead": "warn"},
            "axes": {"model.residual_scales": SCALES, "model.width": [1.0, 1.5], "seed": [0, 1]},
        }
    if arg == "cpu":
        return {
            "config": "configs/inception_resnet_v1.py:smoke",
            "fixed": {
                "model.width": 0.6,  # 8x8 stage: 1,792 x 0.6 = 1,075 filters (> 1,000)
                "model.blocks": (1, 2, 1),
                "train.num_steps": 400,
                "train.log_every_steps": 10,
                "train.eval_every_steps": 100,
                "train.checkpoint_every_steps": 200,
                "monitor.dead_patience": 5,
                "monitor.on_dead": "warn",
            },
            "axes": {"model.residual_scales": SCALES},
        }
    if arg == "death":
        return death_sweep()
    raise ValueError(f"unknown sweep variant {arg!r}; use 'cpu', 'death' or nothing")


# The regime in which an unscaled Inception-ResNet dies on a 2-core CPU (README, "Residual
# scaling"): the :cpu network at 10x the paper's per-replica learning rate (what linear
# scaling gives a large batch), no decay within the run.
DEATH_LR = 0.45
DEATH_FIXED = {
    "model.width": 0.6,  # 8x8 stage: 1,075 filters (> 1,000)
    "model.blocks": (1, 2, 1),
    "schedule.base_lr": DEATH_LR,
    "schedule.decay_epochs": 100.0,
    "train.num_steps": 300,
    "train.log_every_steps": 10,
    "train.eval_every_steps": 100,
    "train.checkpoint_every_steps": 300,
    # Dead = at least 99% of the pre-pool map is zero for 3 logs running; the run then stops.
    "monitor.dead_threshold": 0.99,
    "monitor.dead_patience": 3,
    "monitor.on_dead": "stop",
}
# Fixed scales (the paper) and learned ones starting at 1.0 (SkipInit/ReZero-style scalar,
# LayerScale-style per channel, a BatchNorm ending the branch).
DEATH_VARIANTS = [
    *({"name": f"fixed={s}", "model.residual_scales": (s, s, s)} for s in (1.0, 0.3, 0.2, 0.1)),
    *({"name": f"{mode}=1.0", "model.residual_mode": mode, "model.residual_scales": (1.0,) * 3}
      for mode in ("scalar", "channel", "bn")),
]


def death_sweep() -> dict:
    """Scale 1.0 vs 0.3/0.2/0.1 and learned scales, 2 seeds each (14 runs)."""
    return {
        "config": "configs/inception_resnet_v1.py:smoke",
        "fixed": DEATH_FIXED,
        "variants": DEATH_VARIANTS,
        "axes": {"seed": [0, 1]},
    }
