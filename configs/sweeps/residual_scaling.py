"""Residual scaling (paper §3.3): do wide Inception-ResNets die without scaled residuals?

ImageNet scale (IR-v2 at widths that put 2,080-3,120 filters in the 8x8 stage, 2 seeds):
    python -m inception_jax.sweep --sweep=configs/sweeps/residual_scaling.py \\
        --workdir=sweeps/residual_scaling --print_commands
CPU reproduction (4 runs, IR-v1 at width 0.6 = 1,075 filters in the 8x8 stage, ~20 min):
    python -m inception_jax.sweep --sweep=configs/sweeps/residual_scaling.py:cpu \\
        --workdir=sweeps/residual_scaling_cpu
"""

SCALES = [(1.0, 1.0, 1.0), (0.3, 0.3, 0.3), (0.2, 0.2, 0.2), (0.1, 0.1, 0.1)]


def get_sweep(arg: str | None = None) -> dict:
    """The sweep; arg "cpu" is the small reproduction."""
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
    raise ValueError(f"unknown sweep variant {arg!r}; use 'cpu' or nothing")
