"""inception_v3 on ImageNet-2012 with the paper's recipe.

Run:    python train.py --config=configs/inception_v3.py --workdir=/tmp/inception_v3
Smoke:  python train.py --config=configs/inception_v3.py:smoke \
            --workdir=/tmp/inception_v3_smoke
        (reduced width/depth, 75x75, the built-in inception_shapes data; 2-core CPU)
"""

from configs import common


def get_config(arg: str | None = None):
    """The config; arg "smoke" shrinks it for a laptop, "finetune" starts from weights, a TPU
    slice ("v5e:4x4") sizes it for that slice."""
    c = common.imagenet_config("inception_v3")
    return common.apply_variant(c, arg)
