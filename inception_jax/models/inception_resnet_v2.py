"""Inception-ResNet-v2, in two layouts.

- `layout="released"` (default): the network of the authors' released TF-Slim code and
  checkpoint, which timm and Keras reproduce (55.8M parameters).
- `layout="paper"`: the network as the paper's Figs. 3, 7, 15-19 draw it. See docs/models.md for
  the differences; the maintainers of slim say the released code is what the authors meant.
"""

from __future__ import annotations

from inception_jax.models.network import InceptionResNet, check_blocks, require
from inception_jax.models.specs import (
    AVG_POOL,
    BlockSpec,
    Residual,
    Unit,
    block,
    conv,
    inception_resnet_reduction_b,
    inception_v4_stem,
    reduction_a,
    sequential,
    v3_stem,
)

LAYOUTS = ("released", "paper")
DEFAULT_BLOCKS = {"released": (10, 20, 10), "paper": (5, 10, 5)}


def _block35(residual: Residual) -> BlockSpec:
    return block(
        [conv(32)], [conv(32), conv(32, 3)], [conv(32), conv(48, 3), conv(64, 3)],
        residual=residual,
    )


def _block17(residual: Residual) -> BlockSpec:
    return block([conv(192)], [conv(128), conv(160, (1, 7)), conv(192, (7, 1))], residual=residual)


def _block8(residual: Residual) -> BlockSpec:
    return block([conv(192)], [conv(192), conv(224, (1, 3)), conv(256, (3, 1))], residual=residual)


class InceptionResNetV2(InceptionResNet):
    """Inception-ResNet-v2.

    `blocks`: residual blocks per stage (35×35, 17×17, 8×8); None takes the layout's default
    (released 10/20/10, of which the last 8×8 block is slim's final block8 with scale 1 and
    no ReLU; paper 5/10/5). `residual_scales` / `residual_mode`: see `InceptionResNet`.
    """

    layout: str = "released"
    blocks: tuple[int, int, int] | None = None

    aux_after = "block17"

    def validate(self) -> None:
        super().validate()
        name = type(self).__name__
        require(
            self.layout in LAYOUTS, f"{name}: layout must be one of {LAYOUTS}, got {self.layout!r}"
        )
        check_blocks(name, self.stage_blocks)
        require(
            self.layout != "released" or self.stage_blocks[2] >= 1,
            f"{name}: the released layout needs >= 1 block in the 8x8 stage (its final block8)",
        )

    @property
    def stage_blocks(self) -> tuple[int, int, int]:
        """Blocks per stage after resolving the layout default."""
        return DEFAULT_BLOCKS[self.layout] if self.blocks is None else tuple(self.blocks)

    def units(self) -> list[Unit]:
        a, b, c = self.stage_blocks
        s35, s17, s8 = self.stage_residuals()
        if self.layout == "paper":
            return [
                *inception_v4_stem(),
                Unit("block35", _block35(s35), a),
                Unit("reduction_a", reduction_a(256, 256, 384, 384)),
                Unit("block17", _block17(s17), b),
                Unit("reduction_b", inception_resnet_reduction_b(384, 288, 288, 320)),
                Unit("block8", _block8(s8), c),
            ]
        return [
            v3_stem(),
            Unit(
                "mixed_5b",
                block(
                    [conv(96)],
                    [conv(48), conv(64, 5)],
                    [conv(64), conv(96, 3), conv(96, 3)],
                    [AVG_POOL, conv(64)],
                ),
            ),
            Unit("block35", _block35(s35), a),
            Unit("mixed_6a", reduction_a(256, 256, 384, 384)),
            Unit("block17", _block17(s17), b),
            Unit("mixed_7a", inception_resnet_reduction_b(384, 288, 288, 320)),
            Unit("block8", _block8(s8), c - 1),
            Unit("block8_final", _block8(Residual(1.0, activate=False))),
            Unit("conv_7b", sequential(conv(1536))),
        ]
