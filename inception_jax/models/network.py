"""The network skeleton shared by the four Inception models.

A network is a list of `Unit`s (stem pieces, blocks, stages of repeated blocks) followed by
global average pooling, dropout and a dense classifier, with an optional auxiliary head tapped
after one unit. Subclasses only describe their units; the forward pass lives here once.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from inception_jax.errors import UserError
from inception_jax.models.modules import (
    CONV_IMPLS,
    DTYPES,
    PLATFORMS,
    AuxHead,
    LayerKnobs,
    MemberDropout,
    Options,
    apply_block,
)
from inception_jax.models.specs import RESIDUAL_MODES, Residual, Unit, min_input_size


def traced(value: Any) -> bool:
    """Whether a knob holds an array: a population member's value, inside its vmapped step
    (checked on the host before it gets there)."""
    return isinstance(value, jax.Array)


def require(condition: bool, message: str) -> None:
    """Raises `UserError(message)` unless condition holds (a bad knob or input size)."""
    if not condition:
        raise UserError(message)


class InceptionNet(nn.Module, LayerKnobs):
    """Base class: `__call__(x, train)` maps NHWC images in [-1, 1] to logits.

    Returns `logits`, or `(logits, aux_logits)` when `aux_head` is on and `train` is True.
    Parameters are float32; `dtype` sets the compute dtype ("float32" or "bfloat16").
    """

    num_classes: int = 1000
    dropout_rate: float = 0.2
    aux_head: bool = False
    # Units (and "aux") that run in inference mode even when training: their BatchNorm uses
    # and keeps its running statistics. Not a config knob: the trainer sets it from
    # `train.freeze` (whole units frozen).
    inference_units: tuple[str, ...] = ()
    # The layer knobs (width, dtype, BatchNorm, remat, scan_unroll, conv_impl, bn_group_size,
    # platform) are fields too, defined once in `LayerKnobs`.

    # Name of the unit after which the auxiliary head is attached (set by subclasses).
    aux_after: ClassVar[str | None] = None
    # The units `train.freeze`'s "stem" names: those before the first Inception block.
    stem_units: ClassVar[tuple[str, ...]] = ("stem",)

    def __post_init__(self) -> None:
        name = type(self).__name__
        require(self.num_classes >= 1, f"{name}: num_classes must be >= 1, got {self.num_classes}")
        require(self.width > 0, f"{name}: width must be > 0, got {self.width}")
        require(
            traced(self.dropout_rate) or 0.0 <= self.dropout_rate < 1.0,
            f"{name}: dropout_rate must be in [0, 1), got {self.dropout_rate}",
        )
        require(
            0.0 < self.bn_momentum < 1.0,
            f"{name}: bn_momentum must be in (0, 1), got {self.bn_momentum}",
        )
        require(self.bn_epsilon > 0, f"{name}: bn_epsilon must be > 0, got {self.bn_epsilon}")
        require(
            self.dtype in DTYPES,
            f"{name}: dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}",
        )
        require(
            isinstance(self.scan_unroll, int) and self.scan_unroll >= 0,
            f"{name}: scan_unroll must be an int >= 0 (0 = auto), got {self.scan_unroll!r}",
        )
        require(
            self.conv_impl in CONV_IMPLS,
            f"{name}: conv_impl must be one of {CONV_IMPLS}, got {self.conv_impl!r}",
        )
        require(
            isinstance(self.bn_group_size, int) and self.bn_group_size >= 0,
            f"{name}: bn_group_size must be an int >= 0 (0 = whole batch), "
            f"got {self.bn_group_size!r}",
        )
        require(
            self.platform is None or self.platform in PLATFORMS,
            f"{name}: platform must be one of {PLATFORMS} or None, got {self.platform!r}",
        )
        self.validate()
        super().__post_init__()

    def validate(self) -> None:
        """Subclass hook for checks of their own fields."""

    def units(self) -> list[Unit]:
        """The network's layers as data, in order."""
        raise NotImplementedError

    @property
    def min_input_size(self) -> int:
        """The smallest square input (pixels) the network accepts."""
        return min_input_size(self.units())

    def check_image_size(self, size: int, setting: str) -> None:
        """UserError naming `setting` (the flag that sets it) if `size` is below the minimum."""
        m = self.min_input_size
        require(
            size >= m,
            f"{setting}={size} is below {type(self).__name__}'s minimum of {m}; set {setting} "
            "to at least that.",
        )

    def check_input(self, x: jnp.ndarray) -> None:
        """UserError for images smaller than the minimum; ValueError (a caller's bug) for
        inputs that are not NHWC."""
        name = type(self).__name__
        if x.ndim != 4:
            raise ValueError(f"{name} takes NHWC images (4 dims), got shape {tuple(x.shape)}")
        m = self.min_input_size
        h, w = x.shape[1:3]
        require(
            h >= m and w >= m,
            f"{name} needs images of at least {m}x{m} pixels, got {h}x{w}: "
            f"resize the input (e.g. set the data image_size to >= {m}).",
        )

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False):
        self.check_input(x)
        opts = Options.of(self, train)
        inference = dataclasses.replace(opts, train=False)
        x = x.astype(opts.compute_dtype)
        aux = None
        for unit in self.units():
            unit_opts = inference if unit.name in self.inference_units else opts
            x = apply_block(x, unit.block, unit_opts, unit.name, unit.repeat)
            self.sow("intermediates", f"{unit.name}_out", x)
            # The aux head's parameters exist whenever it is on; it runs only when training.
            if self.aux_head and unit.name == self.aux_after and (train or self.is_initializing()):
                aux_opts = inference if "aux" in self.inference_units else opts
                aux = AuxHead(self.num_classes, aux_opts, name="aux")(x).astype(jnp.float32)
        x = jnp.mean(x, axis=(1, 2))
        self.sow("intermediates", "pooled_out", x)
        if traced(self.dropout_rate):
            x = MemberDropout(self.dropout_rate, deterministic=not train, name="Dropout_0")(x)
        else:
            x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        logits = nn.Dense(self.num_classes, dtype=opts.compute_dtype, name="head")(x)
        logits = logits.astype(jnp.float32)
        if train and aux is not None:
            return logits, aux
        return logits


def check_blocks(name: str, blocks: Any, count: int = 3) -> None:
    """Validates a `blocks` (blocks per stage) knob."""
    require(
        isinstance(blocks, (tuple, list))
        and len(blocks) == count
        and all(isinstance(b, int) and b >= 0 for b in blocks),
        f"{name}: blocks must be {count} non-negative ints (blocks per stage), got {blocks!r}",
    )


class InceptionResNet(InceptionNet):
    """Base of the Inception-ResNets: the knobs of their residual branches.

    `residual_scales`: per stage (35×35, 17×17, 8×8), the factor on the residual branch, or
    the initial value of what `residual_mode` learns in its place: "fixed" (the paper: a
    constant), "scalar" (a learned scalar per block; SkipInit/ReZero), "channel" (a learned
    per-channel scale; LayerScale) or "bn" (a BatchNorm ending the branch, γ starting there).
    See `InceptionBlock` for the references.
    """

    residual_scales: tuple[float, float, float] = (0.17, 0.10, 0.20)
    residual_mode: str = "fixed"

    def validate(self) -> None:
        name = type(self).__name__
        require(
            self.residual_mode in RESIDUAL_MODES,
            f"{name}: residual_mode must be one of {RESIDUAL_MODES}, got {self.residual_mode!r}",
        )
        # A learned scale may start at 0 (ReZero); a fixed one of 0 would delete the branch.
        low, words = (0.0, "non-negative") if self.residual_mode != "fixed" else (None, "positive")
        scales = self.residual_scales
        require(
            isinstance(scales, (tuple, list)) and len(scales) == 3
            and all(traced(s) or (isinstance(s, (int, float)) and (s >= 0 if low == 0.0 else s > 0))
                    for s in scales),
            f"{name}: residual_scales must be 3 {words} numbers (35x35, 17x17, 8x8 stages) "
            f"with residual_mode={self.residual_mode!r}, got {scales!r}",
        )

    def stage_residuals(self) -> tuple[Residual, Residual, Residual]:
        """The residual spec of each stage's blocks."""
        return tuple(Residual(s, mode=self.residual_mode) for s in self.residual_scales)
