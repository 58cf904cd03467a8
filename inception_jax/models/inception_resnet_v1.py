"""Inception-ResNet-v1 (paper Figs. 10-14; never released by the authors, so this follows the
paper's figures, as facenet's TF-Slim port does)."""

from __future__ import annotations

from inception_jax.models.network import InceptionResNet, check_blocks
from inception_jax.models.specs import (
    MAX_POOL,
    BlockSpec,
    Residual,
    Unit,
    block,
    conv,
    inception_resnet_reduction_b,
    reduction_a,
    sequential,
    vconv,
)


class InceptionResNetV1(InceptionResNet):
    """Inception-ResNet-v1, the residual counterpart of Inception-v3: 22,756,328 parameters.

    `blocks`: IR-A/B/C counts (paper: 5, 10, 5); `residual_scales` / `residual_mode`: see
    `InceptionResNet`. `final_linear_block`: end the 8×8 stage with one more block8 of scale 1
    and no ReLU, as facenet's port and IR-v2's released code do (off by default: the paper's
    Fig. 10 has no such block; on, the network has 1,600,768 more parameters).
    """

    blocks: tuple[int, int, int] = (5, 10, 5)
    final_linear_block: bool = False

    aux_after = "block17"

    def validate(self) -> None:
        super().validate()
        check_blocks(type(self).__name__, self.blocks)

    def units(self) -> list[Unit]:
        a, b, c = self.blocks
        s35, s17, s8 = self.stage_residuals()
        return [
            Unit(
                "stem",
                sequential(
                    vconv(32, 3, 2), vconv(32, 3), conv(64, 3), MAX_POOL,
                    vconv(80, 1), vconv(192, 3), vconv(256, 3, 2),
                ),
            ),
            Unit(
                "block35",
                block(
                    [conv(32)], [conv(32), conv(32, 3)], [conv(32), conv(32, 3), conv(32, 3)],
                    residual=s35,
                ),
                a,
            ),
            Unit("reduction_a", reduction_a(192, 192, 256, 384)),
            Unit(
                "block17",
                block([conv(128)], [conv(128), conv(128, (1, 7)), conv(128, (7, 1))], residual=s17),
                b,
            ),
            Unit("reduction_b", inception_resnet_reduction_b(384, 256, 256, 256)),
            Unit("block8", _block8(s8), c),
            *([Unit("block8_final", _block8(Residual(1.0, activate=False)))]
              if self.final_linear_block else []),
        ]


def _block8(residual: Residual) -> BlockSpec:
    return block([conv(192)], [conv(192), conv(192, (1, 3)), conv(192, (3, 1))], residual=residual)
