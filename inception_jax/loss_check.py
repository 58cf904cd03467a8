"""Reading the training loss without making the host wait: NaN/inf stops the run, named."""

from __future__ import annotations

import math
from typing import Any

import jax

from inception_jax.errors import UserError


class NonFiniteLossError(UserError):
    """Training produced a NaN/inf loss; the last good checkpoint is kept."""


class LossCheck:
    """Holds the newest step's loss (a device scalar) until it is read: `check` raises
    NonFiniteLossError naming the step if it is NaN or infinite."""

    def __init__(self, workdir: str, checkpointer: Any):
        self.workdir, self.checkpointer = workdir, checkpointer
        self.pending: tuple[int, jax.Array] | None = None

    def push(self, step: int, loss: jax.Array) -> None:
        """Remembers `loss` of `step` (the number of steps done) without reading it."""
        self.pending = (step, loss)

    def check(self) -> None:
        """Reads the pending loss (waits for its step) and raises if it is not finite."""
        if self.pending is None:
            return
        step, loss = self.pending
        self.pending = None
        value = float(loss)
        if not math.isfinite(value):
            good = self.checkpointer.latest_step()
            raise NonFiniteLossError(
                f"Loss became {value} at step {step}. The last good checkpoint "
                f"(step {good}) is kept in {self.workdir}/checkpoints. Lower "
                "schedule.base_lr or optim.grad_clip_norm and rerun."
            )
