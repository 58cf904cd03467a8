"""Inception-v4 (paper Figs. 3-9; identical in slim and timm)."""

from __future__ import annotations

from inception_jax.models.network import InceptionNet, check_blocks
from inception_jax.models.specs import (
    AVG_POOL,
    MAX_POOL,
    Unit,
    block,
    conv,
    inception_v4_stem,
    reduction_a,
    split,
    vconv,
)

INCEPTION_A = block(
    [conv(96)],
    [conv(64), conv(96, 3)],
    [conv(64), conv(96, 3), conv(96, 3)],
    [AVG_POOL, conv(96)],
)
INCEPTION_B = block(
    [conv(384)],
    [conv(192), conv(224, (1, 7)), conv(256, (7, 1))],
    [conv(192), conv(192, (7, 1)), conv(224, (1, 7)), conv(224, (7, 1)), conv(256, (1, 7))],
    [AVG_POOL, conv(128)],
)
REDUCTION_B = block(
    [conv(192), vconv(192, 3, 2)],
    [conv(256), conv(256, (1, 7)), conv(320, (7, 1)), vconv(320, 3, 2)],
    [MAX_POOL],
)
INCEPTION_C = block(
    [conv(256)],
    [conv(384), split([conv(256, (1, 3))], [conv(256, (3, 1))])],
    [
        conv(384), conv(448, (3, 1)), conv(512, (1, 3)),
        split([conv(256, (1, 3))], [conv(256, (3, 1))]),
    ],
    [AVG_POOL, conv(256)],
)


class InceptionV4(InceptionNet):
    """Inception-v4: 42.7M parameters; `blocks` = Inception-A/B/C counts (paper: 4, 7, 3)."""

    blocks: tuple[int, int, int] = (4, 7, 3)

    aux_after = "inception_b"
    stem_units = ("stem", "mixed_3a", "mixed_4a", "mixed_5a")  # the paper's Fig. 3

    def validate(self) -> None:
        check_blocks(type(self).__name__, self.blocks)

    def units(self) -> list[Unit]:
        a, b, c = self.blocks
        return [
            *inception_v4_stem(),
            Unit("inception_a", INCEPTION_A, a),
            Unit("reduction_a", reduction_a(192, 224, 256, 384)),
            Unit("inception_b", INCEPTION_B, b),
            Unit("reduction_b", REDUCTION_B),
            Unit("inception_c", INCEPTION_C, c),
        ]
