"""inception_resnet_v2 on ImageNet-2012 with the paper's recipe.

Run:    python train.py --config=configs/inception_resnet_v2.py --workdir=/tmp/inception_resnet_v2
Smoke:  python train.py --config=configs/inception_resnet_v2.py:smoke \
            --workdir=/tmp/inception_resnet_v2_smoke
        (reduced width/depth, 75x75, the built-in inception_shapes data; 2-core CPU)
"""

from configs import common


def get_config(arg: str | None = None):
    """The config; arg "smoke" shrinks it for a laptop, "finetune" starts from weights, a TPU
    slice ("v5e:4x4") sizes it for that slice."""
    c = common.imagenet_config("inception_resnet_v2")
    c.optim.weight_decay_mask = "kernels_and_biases"  # slim's IR-v2 arg scope decays biases too
    common.apply_variant(c, arg)
    if arg == "smoke":
        c.model.blocks = (1, 2, 2)
    return c
