"""Tracing a window of training steps with jax.profiler (`train.profile_steps`)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import jax

from inception_jax.errors import UserError

log = logging.getLogger(__name__)


class StepProfiler:
    """Traces steps [first, last) of `train.profile_steps` with jax.profiler into `directory`.

    `python` turns on the profiler's Python-call tracer. Off by default: with it, `stop_trace`
    has segfaulted while checkpoint threads were finishing, and XLA ops, host annotations and
    steps are traced without it.
    `settle` runs before the trace stops (the trainer passes the checkpointer's wait, so no
    save's threads are still running then).
    """

    def __init__(self, steps: Any, directory: str, python: bool,
                 settle: Callable[[], None] | None = None):
        steps = tuple(steps or ())
        if steps and (len(steps) != 2 or not 0 <= steps[0] < steps[1]):
            raise UserError(
                f"train.profile_steps must be empty or (first, last) with 0 <= first < last, "
                f"got {steps!r}."
            )
        self.steps, self.directory, self.active = steps, directory, False
        self.python, self.settle = bool(python), settle

    def before(self, step: int) -> None:
        """Starts or stops the trace before `step` runs."""
        if not self.steps:
            return
        if step == self.steps[0] and not self.active:
            options = jax.profiler.ProfileOptions()
            options.python_tracer_level = int(self.python)
            jax.profiler.start_trace(self.directory, profiler_options=options)
            self.active = True
        elif step == self.steps[1] and self.active:
            self.close()
            log.info("Profile of steps %d-%d written to %s", *self.steps, self.directory)

    def close(self) -> None:
        """Ends an open trace."""
        if self.active:
            try:
                if self.settle is not None:
                    self.settle()
            finally:
                jax.profiler.stop_trace()
                self.active = False
