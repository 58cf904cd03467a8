"""What every command-line entry point does first: XLA flags, quiet library logs, a
compilation cache, no GPU for TensorFlow; and how commands report user errors."""

from __future__ import annotations

import atexit
import functools
import importlib.abc
import importlib.util
import logging as pylogging
import os
import sys
import threading
from collections.abc import Callable
from types import ModuleType
from typing import Any, NoReturn

import jax
from absl import app, logging

from inception_jax import xla_flags
from inception_jax.errors import UserError

CACHE_DIR = os.path.expanduser("~/.cache/inception_jax/jax_cache")


class _QuietLibraries(pylogging.Filter):
    """Drops the INFO chatter of orbax, TFDS and JAX; keeps warnings and our own logs."""

    NOISY = ("orbax", "tensorflow_datasets", "tensorflow/python", "jax/_src", "etils")

    def filter(self, record: pylogging.LogRecord) -> bool:
        return record.levelno >= pylogging.WARNING or not any(
            n in record.pathname for n in self.NOISY
        )


def hide_gpus_from_tensorflow(tf: ModuleType) -> None:
    """TensorFlow (the input pipeline) sees no GPU, so it takes no GPU memory from JAX."""
    tf.config.set_visible_devices([], "GPU")


class _OnImport(importlib.abc.MetaPathFinder):
    """Calls `hook(module)` once `name` has been imported, wherever the import happens."""

    def __init__(self, name: str, hook: Callable[[ModuleType], None]):
        self.name, self.hook = name, hook

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)  # once; and lets find_spec below see the real finders
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            exec_module = spec.loader.exec_module

            def exec_then_hook(module: ModuleType) -> None:
                exec_module(module)
                self.hook(module)

            spec.loader.exec_module = exec_then_hook
        return spec


def _hide_gpus_from_tensorflow_when_imported() -> None:
    """Hides GPUs from TensorFlow now if it is imported, else right after its import: commands
    that never use TensorFlow do not pay for importing it (several seconds)."""
    if "tensorflow" in sys.modules:
        hide_gpus_from_tensorflow(sys.modules["tensorflow"])
    elif not any(isinstance(f, _OnImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _OnImport("tensorflow", hide_gpus_from_tensorflow))


def setup() -> None:
    """Sets our XLA flags, filters library INFO logs, turns on the compilation cache (in
    `$JAX_COMPILATION_CACHE_DIR` if set, else `CACHE_DIR`) and hides GPUs from TensorFlow.
    Call it first, before anything runs a TensorFlow op."""
    xla_flags.apply()
    logging.get_absl_handler().addFilter(_QuietLibraries())
    # A cache the user chose (JAX's own variable) wins over ours.
    jax.config.update(
        "jax_compilation_cache_dir", os.environ.get("JAX_COMPILATION_CACHE_DIR") or CACHE_DIR
    )
    _hide_gpus_from_tensorflow_when_imported()


def config_file_flag(help_string: str, lock_config: bool = True) -> Any:
    """`--config=FILE[:variant]` (ml_collections), whose file may import its sibling modules.

    Our config files do `from configs import common`. train.py finds that package because it
    sits beside it; an installed command run from elsewhere does not, so the folder holding the
    config file's package (`.../configs/__init__.py`) goes first on `sys.path`.
    """
    from ml_collections import config_flags

    for i, arg in enumerate(sys.argv):
        path = arg.split("=", 1)[1] if arg.startswith("--config=") else (
            sys.argv[i + 1] if arg == "--config" and i + 1 < len(sys.argv) else None)
        if path:
            folder = os.path.dirname(os.path.abspath(path.split(":", 1)[0]))
            root = os.path.dirname(folder)
            if os.path.isfile(os.path.join(folder, "__init__.py")) and root not in sys.path:
                sys.path.insert(0, root)
    return config_flags.DEFINE_config_file("config", None, help_string, lock_config=lock_config)


def positional(argv: list[str], usage: str) -> list[str]:
    """The command's positional arguments; UserError showing `usage` when there are none."""
    if len(argv) < 2:
        raise UserError(f"Name at least one input: {usage}")
    return argv[1:]


def friendly(main: Callable[[list[str]], None]) -> Callable[[list[str]], None]:
    """Wraps an absl `main`: a `UserError` prints `error: <message>` and exits with status 2;
    any other exception is a bug and propagates with its traceback."""

    @functools.wraps(main)
    def wrapped(argv: list[str]) -> None:
        try:
            main(argv)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)

    return wrapped


def run(main: Callable[[list[str]], None]) -> NoReturn:
    """Runs an absl `main` as a command (`app.run`), then exits without tearing down the
    interpreter.

    Once TensorFlow is imported, the interpreter's own teardown (freeing every module) takes
    over a second after the work is done (BENCHMARKS.md). What
    a normal exit does before that teardown is kept, in its order: threads that are not
    daemons are waited for, the exit handlers run (JAX's: backends cleared, `jax.distributed`
    shut down in step with the other processes), both streams are flushed. A bug's exception
    propagates as usual, with its traceback and the normal exit; so does every exit under a
    profiler, tracer or debugger (`python -m cProfile -o ...` writes its file after the
    command returns).
    """
    try:
        app.run(main)
        code: Any = 0
    except SystemExit as e:
        code = e.code
    if code is None:
        code = 0
    elif not isinstance(code, int):  # sys.exit("message"): printed, status 1
        print(code, file=sys.stderr)
        code = 1
    if sys.getprofile() is not None or sys.gettrace() is not None:
        sys.exit(code)
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
