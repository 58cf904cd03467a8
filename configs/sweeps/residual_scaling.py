"""Residual scaling (paper §3.3): do wide Inception-ResNets die without scaled residuals?

ImageNet scale (IR-v2 at widths that put 2,080-3,120 filters in the 8x8 stage, 2 seeds):
    python -m inception_jax.sweep --sweep=configs/sweeps/residual_scaling.py \\
        --workdir=sweeps/residual_scaling --print_commands
CPU reproduction (4 runs, IR-v1 at width 0.6 = 1,075 filters in the 8x8 stage, ~20 min):
    python -m inception_jax.sweep --sweep=configs/sweeps/residual_scaling.py:cpu \\
        --workdir=sweeps/residual_scaling_cpu
Death on a CPU (12 runs: fixed scales 1.0/0.3/0.2/0.1 and two learned scales, 2 seeds):
    python -m inception_jax.sweep --sweep=configs/sweeps/residual_scaling.py:death \\
        --workdir=sweeps/residual_scaling_death
Where death begins, as a map (40 runs as one population: scale 1.0/0.5/0.3/0.2/0.1 x learning
rate 0.125/0.25/0.375/0.5 x 2 seeds; writes WORKDIR/death_map.png and death_map.md):
    python -m inception_jax.sweep --sweep=configs/sweeps/residual_scaling.py:death_map \\
        --workdir=sweeps/residual_scaling_death_map --population
The first regime tried (14 runs, one 8x8 block at 10x the rate; every scale damaged):
    python -m inception_jax.sweep --sweep=configs/sweeps/residual_scaling.py:death_shallow \\
        --workdir=sweeps/residual_scaling_death_shallow
"""

SCALES = [(1.0, 1.0, 1.0), (0.3, 0.3, 0.3), (0.2, 0.2, 0.2), (0.1, 0.1, 0.1)]


def get_sweep(arg: str | None = None) -> dict:
    """The sweep; arg "cpu" is the small reproduction, "death" the regime where an unscaled
    network dies on a CPU and scaled ones train, "death_shallow" the first regime tried."""
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
    if arg == "death_shallow":
        return death_sweep(shallow=True)
    if arg == "death_map":
        return death_map_sweep()
    raise ValueError(f"unknown sweep variant {arg!r}; use 'cpu', 'death', 'death_map', "
                     "'death_shallow' or nothing")


# The regime in which an unscaled Inception-ResNet dies on a 2-core CPU and scaled ones train
# (docs/residual_scaling.md, "Death on a CPU"): the :cpu network with five blocks in its 8x8
# stage (1,075 filters, > 1,000), at 5.6x the paper's per-replica learning rate (linear scaling
# to a large batch) and no decay within the run.
DEATH_LR = 0.25
DEATH_FIXED = {
    "model.width": 0.6,  # 8x8 stage: 1,075 filters (> 1,000)
    "model.blocks": (1, 2, 5),  # the 8x8 stage deep enough for unscaled residuals to pile up
    "schedule.base_lr": DEATH_LR,
    "schedule.decay_epochs": 100.0,
    "train.num_steps": 400,
    "train.log_every_steps": 10,
    "train.eval_every_steps": 100,
    "train.checkpoint_every_steps": 400,
    # Dead = at least 99% of the pre-pool map is zero for 3 logs running; the run then stops.
    "monitor.dead_threshold": 0.99,
    "monitor.dead_patience": 3,
    "monitor.on_dead": "stop",
}
# The paper's fixed scales, in both death sweeps.
FIXED_VARIANTS = [
    {"name": f"fixed={s}", "model.residual_mode": "fixed", "model.residual_scales": (s, s, s)}
    for s in (1.0, 0.3, 0.2, 0.1)
]
# Fixed scales and learned ones: a per-block scalar starting at 0 (ReZero; SkipInit learns the
# same scalar) and a per-channel scale starting at 0.1 (LayerScale).
DEATH_VARIANTS = [
    *FIXED_VARIANTS,
    {"name": "scalar=0", "model.residual_mode": "scalar", "model.residual_scales": (0.0,) * 3},
    {"name": "channel=0.1", "model.residual_mode": "channel",
     "model.residual_scales": (0.1,) * 3},
]
# A shallower regime: one 8x8 block, 10x the paper's rate, 300 steps.
# There every scale is damaged and the scale only orders the death step.
SHALLOW_FIXED = {**DEATH_FIXED, "model.blocks": (1, 2, 1), "schedule.base_lr": 0.45,
                 "train.num_steps": 300, "train.checkpoint_every_steps": 300}
SHALLOW_VARIANTS = [
    *FIXED_VARIANTS,
    *({"name": f"{mode}=1.0", "model.residual_mode": mode, "model.residual_scales": (1.0,) * 3}
      for mode in ("scalar", "channel", "bn")),
]


def death_sweep(shallow: bool = False) -> dict:
    """Fixed scales 1.0/0.3/0.2/0.1 and two learned scales, 2 seeds each (12 runs); `shallow`:
    the first regime tried (14 runs)."""
    return {
        "config": "configs/inception_resnet_v1.py:smoke",
        "fixed": SHALLOW_FIXED if shallow else DEATH_FIXED,
        "variants": SHALLOW_VARIANTS if shallow else DEATH_VARIANTS,
        "axes": {"seed": [0, 1]},
    }


# The map: the :death regime over fixed scales and learning rates around its 0.25.
MAP_SCALES = (1.0, 0.5, 0.3, 0.2, 0.1)
MAP_RATES = (0.125, 0.25, 0.375, 0.5)


def death_map_sweep() -> dict:
    """Fixed scale x learning rate x 2 seeds (40 runs) in the :death regime; the sweep draws
    them as a map (`map`: the x and y settings)."""
    return {
        "config": "configs/inception_resnet_v1.py:smoke",
        "fixed": {**DEATH_FIXED, "train.eval_every_steps": 200},
        "axes": {"model.residual_scales": [(s, s, s) for s in MAP_SCALES],
                 "schedule.base_lr": list(MAP_RATES), "seed": [0, 1]},
        "map": ("schedule.base_lr", "model.residual_scales"),
    }
