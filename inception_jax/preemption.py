"""Preemption notices (SIGTERM) as a step at which the training loop saves and stops.

The loop asks `should_stop(step)` after every step; it answers True once, at the same step on
every process, after any process got SIGTERM.

- One process: a SIGTERM handler sets a flag; the loop stops after the step it is in.
- Several processes (`jax.distributed.initialize`): JAX's preemption service, on by default,
  catches SIGTERM on any host, tells every host through the coordination service, and the
  hosts agree on one step: the fastest host's step + 1
  (`multihost_utils.reached_preemption_sync_point`, what orbax's own preemption check uses).
  Until a notice arrives a call costs a mutex and no communication, so it can run every step
  without making the host wait for the devices (an all-reduce of a flag would). Installing a
  Python handler here would replace the service's own, so none is installed.
"""

from __future__ import annotations

import logging
import signal
from typing import Any

import jax
from jax.experimental import multihost_utils

log = logging.getLogger(__name__)


class Preemption:
    """Says at which step to save and stop after a SIGTERM; `close` restores the handler."""

    def __init__(self):
        self.requested = False  # this process got SIGTERM (one-process runs)
        self.distributed = jax.distributed.is_initialized()
        self._installed, self._previous = False, None
        if not self.distributed:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
            self._installed = True
        elif not jax.config.jax_enable_preemption_service:
            log.warning("jax_enable_preemption_service is off: SIGTERM ends this run without "
                        "a checkpoint; the next run resumes from the last one.")

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True

    def should_stop(self, step: int) -> bool:
        """True if the loop must save `step` (the number of steps done) and stop.

        Call it after every step, with increasing steps, on every process.
        """
        if not self.distributed:
            return self.requested
        if not jax.config.jax_enable_preemption_service:
            return False
        return multihost_utils.reached_preemption_sync_point(step)

    def close(self) -> None:
        """Puts back the SIGTERM handler that was there before (one-process runs)."""
        if self._installed:
            # None: the previous handler was not set from Python; the default is the best guess.
            previous = signal.SIG_DFL if self._previous is None else self._previous
            signal.signal(signal.SIGTERM, previous)
            self._installed = False
