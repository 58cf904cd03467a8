"""Inception-v3 (Szegedy et al. 2015), the baseline of the Inception-v4 paper.

Layout and names follow TF-Slim's `inception_v3` (as do timm and Keras). Its blocks all
differ from one another, so it has no stage-depth knob and no scanned stages.
"""

from __future__ import annotations

from inception_jax.models.network import InceptionNet
from inception_jax.models.specs import (
    AVG_POOL,
    MAX_POOL,
    BlockSpec,
    Unit,
    block,
    conv,
    split,
    v3_stem,
    vconv,
)


def _mixed_35(pool_features: int) -> BlockSpec:
    return block(
        [conv(64)],
        [conv(48), conv(64, 5)],
        [conv(64), conv(96, 3), conv(96, 3)],
        [AVG_POOL, conv(pool_features)],
    )


def _mixed_17(c7: int) -> BlockSpec:
    return block(
        [conv(192)],
        [conv(c7), conv(c7, (1, 7)), conv(192, (7, 1))],
        [conv(c7), conv(c7, (7, 1)), conv(c7, (1, 7)), conv(c7, (7, 1)), conv(192, (1, 7))],
        [AVG_POOL, conv(192)],
    )


def _mixed_8() -> BlockSpec:
    pair = split([conv(384, (1, 3))], [conv(384, (3, 1))])
    return block(
        [conv(320)],
        [conv(384), pair],
        [conv(448), conv(384, 3), pair],
        [AVG_POOL, conv(192)],
    )


class InceptionV3(InceptionNet):
    """Inception-v3: 23.8M parameters, 299×299 → 8×8×2048, aux head after Mixed_6e."""

    aux_after = "mixed_6e"

    def units(self) -> list[Unit]:
        return [
            v3_stem(),
            Unit("mixed_5b", _mixed_35(32)),
            Unit("mixed_5c", _mixed_35(64)),
            Unit("mixed_5d", _mixed_35(64)),
            Unit(
                "mixed_6a",
                block([vconv(384, 3, 2)], [conv(64), conv(96, 3), vconv(96, 3, 2)], [MAX_POOL]),
            ),
            Unit("mixed_6b", _mixed_17(128)),
            Unit("mixed_6c", _mixed_17(160)),
            Unit("mixed_6d", _mixed_17(160)),
            Unit("mixed_6e", _mixed_17(192)),
            Unit(
                "mixed_7a",
                block(
                    [conv(192), vconv(320, 3, 2)],
                    [conv(192), conv(192, (1, 7)), conv(192, (7, 1)), vconv(192, 3, 2)],
                    [MAX_POOL],
                ),
            ),
            Unit("mixed_7b", _mixed_8()),
            Unit("mixed_7c", _mixed_8()),
        ]
