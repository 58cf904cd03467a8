"""Inception blocks as data.

Every block of the four networks is a tuple of parallel branches, each branch a sequence of
layers (`Conv`, `Pool`, or a nested `Split` whose outputs are concatenated). The networks
are lists of `Unit`s built from these specs, so one module (`InceptionBlock`) runs them all
and the spatial arithmetic (minimum input size) is computed from the same data.

A `BlockSpec` names its convs once, when it is built (`b{branch}_{k}`, k counting the convs of
the branch in order, nested splits included): the modules create their parameters under these
names and the weight importers (`inception_jax.interop`) map them to timm, Keras and TF-Slim
names. A block whose structure the branches cannot express keeps its spec (and so its names)
and sets `BlockSpec.module` to its own module (see `InceptionBlock`).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Iterator


@dataclasses.dataclass(frozen=True)
class Conv:
    """A conv → BatchNorm → ReLU unit. `features` is before the width multiplier."""

    features: int
    kernel: tuple[int, int] = (1, 1)
    stride: int = 1
    padding: str = "SAME"
    name: str = ""  # the parameter scope in its block; `BlockSpec` sets it


@dataclasses.dataclass(frozen=True)
class Pool:
    """Max or average pooling. Average pools never count padded positions."""

    kind: str  # "max" | "avg"
    window: int = 3
    stride: int = 1
    padding: str = "SAME"


@dataclasses.dataclass(frozen=True)
class Split:
    """Parallel sub-branches applied to the same input and concatenated (Inception-C style)."""

    branches: tuple[tuple[Layer, ...], ...]


Layer = Conv | Pool | Split
Branches = tuple[tuple[Layer, ...], ...]


RESIDUAL_MODES = ("fixed", "scalar", "channel", "bn")


@dataclasses.dataclass(frozen=True)
class Residual:
    """Makes a block residual: 1×1 linear up-projection (with bias), × scale, add, ReLU.

    `mode` says what multiplies the branch (see `InceptionBlock.merge`): "fixed" the constant
    `scale` (the paper); "scalar" a learned scalar initialised at `scale` (SkipInit / ReZero);
    "channel" a learned per-channel vector initialised at `scale` (LayerScale); "bn" a
    BatchNorm on the branch whose γ starts at `scale` (the projection then has no bias).
    """

    scale: float
    activate: bool = True
    mode: str = "fixed"


@dataclasses.dataclass(frozen=True)
class BlockSpec:
    """One Inception block: branches concatenated, optionally wrapped as a scaled residual.

    Building one names its convs (`Conv.name`); `convs` lists them in creation order.
    `module`: the Flax module class that runs the block, None for `InceptionBlock`; a one-off
    structure subclasses `InceptionBlock` in its model file and overrides a step of it.
    """

    branches: Branches
    residual: Residual | None = None
    module: type | None = None
    convs: tuple[Conv, ...] = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        named = tuple(
            _name_convs(layers, f"b{i}", itertools.count())
            for i, layers in enumerate(self.branches)
        )
        object.__setattr__(self, "branches", named)
        object.__setattr__(self, "convs", tuple(_convs(named)))


def _name_convs(layers: tuple[Layer, ...], prefix: str, counter: Iterator[int]) -> tuple:
    """`layers` with every conv named `{prefix}_{k}`, k from `counter` (splits included)."""
    named = []
    for layer in layers:
        if isinstance(layer, Conv):
            layer = dataclasses.replace(layer, name=f"{prefix}_{next(counter)}")
        elif isinstance(layer, Split):
            layer = Split(tuple(_name_convs(b, prefix, counter) for b in layer.branches))
        named.append(layer)
    return tuple(named)


def _convs(branches: Branches) -> Iterator[Conv]:
    """The convs of `branches` in the order a block creates them."""
    for layers in branches:
        for layer in layers:
            if isinstance(layer, Conv):
                yield layer
            elif isinstance(layer, Split):
                yield from _convs(layer.branches)


@dataclasses.dataclass(frozen=True)
class Unit:
    """A named step of a network. `repeat=None`: one block; an int: a scanned stage."""

    name: str
    block: BlockSpec
    repeat: int | None = None


def conv(features: int, kernel: int | tuple[int, int] = 1, stride: int = 1) -> Conv:
    """A SAME-padded conv (the default inside blocks)."""
    k = (kernel, kernel) if isinstance(kernel, int) else tuple(kernel)
    return Conv(features, k, stride, "SAME")


def vconv(features: int, kernel: int | tuple[int, int] = 3, stride: int = 1) -> Conv:
    """A VALID-padded conv (stems and grid reductions)."""
    k = (kernel, kernel) if isinstance(kernel, int) else tuple(kernel)
    return Conv(features, k, stride, "VALID")


MAX_POOL = Pool("max", 3, 2, "VALID")  # the grid-reduction pool
AVG_POOL = Pool("avg", 3, 1, "SAME")  # the pooling branch of Inception blocks


def split(*branches: tuple[Layer, ...]) -> Split:
    """Shorthand for `Split(branches)`."""
    return Split(tuple(tuple(b) for b in branches))


def block(
    *branches: tuple[Layer, ...] | list[Layer],
    residual: Residual | None = None,
    module: type | None = None,
) -> BlockSpec:
    """Shorthand for a `BlockSpec` from branch lists."""
    return BlockSpec(tuple(tuple(b) for b in branches), residual, module)


def sequential(*layers: Layer) -> BlockSpec:
    """A single-branch block: layers applied one after another (stems)."""
    return BlockSpec((tuple(layers),))


# ---------------------------------------------------------------------------------------------
# Spatial arithmetic


def _layer_out_size(n: int, layer: Layer) -> int:
    if isinstance(layer, Split):
        return _branch_out_size(n, layer.branches[0])
    if isinstance(layer, Conv):
        window, stride, padding = layer.kernel[0], layer.stride, layer.padding
    else:
        window, stride, padding = layer.window, layer.stride, layer.padding
    if padding == "SAME":
        return math.ceil(n / stride)
    return (n - window) // stride + 1 if n >= window else 0


def _branch_out_size(n: int, layers: tuple[Layer, ...]) -> int:
    for layer in layers:
        n = _layer_out_size(n, layer)
        if n <= 0:
            return 0
    return n


def output_size(n: int, units: list[Unit]) -> int:
    """Spatial size after the units for an n×n input (0 if some layer gets an empty map)."""
    for unit in units:
        for _ in range(unit.repeat if unit.repeat is not None else 1):
            n = min(_branch_out_size(n, b) for b in unit.block.branches)
            if n <= 0:
                return 0
    return n


def min_input_size(units: list[Unit]) -> int:
    """The smallest square input every layer of `units` can process."""
    n = 1
    while output_size(n, units) < 1:
        n += 1
    return n


# ---------------------------------------------------------------------------------------------
# Blocks shared by several networks (paper figure numbers in the comments)


def v3_stem() -> Unit:
    """The stem of Inception-v3 and of the released Inception-ResNet-v2 (35×35×192)."""
    return Unit(
        "stem",
        sequential(
            vconv(32, 3, 2), vconv(32, 3), conv(64, 3), MAX_POOL,
            vconv(80, 1), vconv(192, 3), MAX_POOL,
        ),
    )


def inception_v4_stem() -> list[Unit]:
    """Fig. 3: the stem of Inception-v4 and of the paper's Inception-ResNet-v2 (35×35×384)."""
    return [
        Unit("stem", sequential(vconv(32, 3, 2), vconv(32, 3), conv(64, 3))),
        Unit("mixed_3a", block([MAX_POOL], [vconv(96, 3, 2)])),
        Unit(
            "mixed_4a",
            block(
                [conv(64), vconv(96, 3)],
                [conv(64), conv(64, (1, 7)), conv(64, (7, 1)), vconv(96, 3)],
            ),
        ),
        Unit("mixed_5a", block([vconv(192, 3, 2)], [MAX_POOL])),
    ]


def reduction_a(k: int, l: int, m: int, n: int) -> BlockSpec:  # noqa: E741 (paper's names)
    """Fig. 7: 35×35 → 17×17 reduction with the filter-bank sizes of Table 1."""
    return block([vconv(n, 3, 2)], [conv(k), conv(l, 3), vconv(m, 3, 2)], [MAX_POOL])


def inception_resnet_reduction_b(a: int, b: int, c1: int, c2: int) -> BlockSpec:
    """Figs. 12/18: 17×17 → 8×8 reduction of the residual networks (and slim's Mixed_7a)."""
    return block(
        [conv(256), vconv(a, 3, 2)],
        [conv(256), vconv(b, 3, 2)],
        [conv(256), conv(c1, 3), vconv(c2, 3, 2)],
        [MAX_POOL],
    )
