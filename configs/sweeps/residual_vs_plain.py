"""Residual vs plain (paper §3.2, Figs. 21-22): Inception-ResNet-v1 vs Inception-v3 at similar
cost — which trains faster for the same steps?

ImageNet scale:
    python -m inception_jax.sweep --sweep=configs/sweeps/residual_vs_plain.py \\
        --workdir=sweeps/residual_vs_plain --print_commands
CPU reproduction (4 runs: both networks at full depth and width 0.5, 0.11 and 0.10 GFLOPs per
75x75 image, 2 seeds; ~25 min):
    python -m inception_jax.sweep --sweep=configs/sweeps/residual_vs_plain.py:cpu \\
        --workdir=sweeps/residual_vs_plain_cpu
"""


def get_sweep(arg: str | None = None) -> dict:
    """The sweep; arg "cpu" is the small reproduction."""
    if arg in (None, ""):
        return {
            "variants": [
                {"name": "inception_resnet_v1", "config": "configs/inception_resnet_v1.py"},
                {"name": "inception_v3", "config": "configs/inception_v3.py",
                 "model.aux_head": False},
            ],
            "axes": {"seed": [0, 1]},
        }
    if arg == "cpu":
        return {
            "variants": [
                {"name": "inception_resnet_v1", "config": "configs/inception_resnet_v1.py:smoke",
                 "model.blocks": (5, 10, 5)},  # the smoke config's default is (1, 2, 1)
                {"name": "inception_v3", "config": "configs/inception_v3.py:smoke"},
            ],
            "fixed": {
                "model.width": 0.5,
                "train.num_steps": 300,
                "train.log_every_steps": 10,
                "train.eval_every_steps": 100,
                "train.checkpoint_every_steps": 300,
            },
            "axes": {"seed": [0, 1]},
        }
    raise ValueError(f"unknown sweep variant {arg!r}; use 'cpu' or nothing")
