"""inception_v4 on ImageNet-2012 with the paper's recipe.

Run:    python train.py --config=configs/inception_v4.py --workdir=/tmp/inception_v4
Smoke:  python train.py --config=configs/inception_v4.py:smoke \
            --workdir=/tmp/inception_v4_smoke
        (reduced width/depth, 75x75, the built-in inception_shapes data; 2-core CPU)
"""

from configs import common


def get_config(arg: str | None = None):
    """The config; arg "smoke" shrinks it for a laptop, "finetune" starts from weights, a TPU
    slice ("v5e:4x4") sizes it for that slice."""
    c = common.imagenet_config("inception_v4")
    common.apply_variant(c, arg)
    if arg == "smoke":
        c.model.blocks = (1, 2, 1)
    return c
