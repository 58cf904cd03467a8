"""What every command-line entry point does first: XLA flags, quiet library logs, a
compilation cache."""

from __future__ import annotations

import functools
import logging as pylogging
import os
import sys
from collections.abc import Callable

import jax
from absl import logging

from inception_jax import xla_flags

CACHE_DIR = os.path.expanduser("~/.cache/inception_jax/jax_cache")


class _QuietLibraries(pylogging.Filter):
    """Drops the INFO chatter of orbax, TFDS and JAX; keeps warnings and our own logs."""

    NOISY = ("orbax", "tensorflow_datasets", "jax/_src", "etils")

    def filter(self, record: pylogging.LogRecord) -> bool:
        return record.levelno >= pylogging.WARNING or not any(
            n in record.pathname for n in self.NOISY
        )


def setup() -> None:
    """Sets our XLA flags, filters library INFO logs, turns on the compilation cache."""
    xla_flags.apply()
    logging.get_absl_handler().addFilter(_QuietLibraries())
    jax.config.update("jax_compilation_cache_dir", CACHE_DIR)


def user_errors() -> tuple[type[BaseException], ...]:
    """Exception types a CLI reports as one message: bad config, file, weights or checkpoint."""
    from inception_jax.checkpoint import CheckpointError
    from inception_jax.trainer import NonFiniteLossError

    # DatasetNotPreparedError is a FileNotFoundError; WeightImportError a ValueError.
    return (ValueError, FileNotFoundError, CheckpointError, NonFiniteLossError)


def positional(argv: list[str], usage: str) -> list[str]:
    """The command's positional arguments; ValueError showing `usage` when there are none."""
    if len(argv) < 2:
        raise ValueError(f"Name at least one input: {usage}")
    return argv[1:]


def friendly(main: Callable[[list[str]], None]) -> Callable[[list[str]], None]:
    """Wraps an absl `main`: a user error prints `error: <message>` and exits with status 2."""

    @functools.wraps(main)
    def wrapped(argv: list[str]) -> None:
        try:
            main(argv)
        except user_errors() as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)

    return wrapped
