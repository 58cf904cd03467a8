"""Inception-ResNet-v1 (paper Figs. 10-14; never released by the authors, so this follows the
paper's figures, as facenet's TF-Slim port does)."""

from __future__ import annotations

from inception_jax.models.network import InceptionNet, check_blocks, check_scales
from inception_jax.models.specs import (
    MAX_POOL,
    Residual,
    Unit,
    block,
    conv,
    inception_resnet_reduction_b,
    reduction_a,
    sequential,
    vconv,
)


class InceptionResNetV1(InceptionNet):
    """Inception-ResNet-v1, the residual counterpart of Inception-v3: 22,756,328 parameters.

    `blocks`: IR-A/B/C counts (paper: 5, 10, 5); `residual_scales`: the factor each stage's
    residual branch is multiplied by before the addition (1.0 = unscaled).
    """

    blocks: tuple[int, int, int] = (5, 10, 5)
    residual_scales: tuple[float, float, float] = (0.17, 0.10, 0.20)

    aux_after = "block17"

    def validate(self) -> None:
        check_blocks(type(self).__name__, self.blocks)
        check_scales(type(self).__name__, self.residual_scales)

    def units(self) -> list[Unit]:
        a, b, c = self.blocks
        s35, s17, s8 = (Residual(s) for s in self.residual_scales)
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
            Unit(
                "block8",
                block([conv(192)], [conv(192), conv(192, (1, 3)), conv(192, (3, 1))], residual=s8),
                c,
            ),
        ]
