"""Checkpoints of the train state in the workdir (orbax), with the run's identity beside them.

Each checkpoint holds the state and a small JSON `meta` (model config, image size) so that a
workdir written by another model is refused before anything is overwritten.

Every checkpoint carries a manifest of its files' CRC32C checksums (`checksums.py`), written
before the step directory counts as complete; a restore verifies it before any array is used.
Resuming takes the newest checkpoint that verifies and reads back whole. A damaged one (a
flipped byte, a truncated, missing or stray file, a half-copied step directory) is named in a
warning with what is wrong with it and moved aside to `STEP.damaged` beside the others, never
deleted: orbax no longer lists it, so it cannot block the save of the same step nor count among
the `keep` newest. A checkpoint written before checksums existed (no manifest, and no mention
of one in its `meta`) is restored unverified, with a one-line note.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import re
import sys
import tempfile
import threading
import traceback
from typing import Any

import jax
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from inception_jax import checksums
from inception_jax.errors import UserError
from inception_jax.nested import flatten_keys

log = logging.getLogger(__name__)

DAMAGED_SUFFIX = ".damaged"
# The key in a checkpoint's `meta` that says it carries a checksum manifest (and which file).
MANIFEST_KEY = "checksum_manifest"
# orbax writes a step into this directory and renames it into place once it is complete.
TMP_SUFFIX = ".orbax-checkpoint-tmp"


class CheckpointError(UserError):
    """The workdir's checkpoint cannot be used for this run (says what to do)."""


def describe_error(error: BaseException, limit: int = 400) -> str:
    """One line saying what went wrong in a failed read: the innermost cause's first line.

    TensorStore's outer messages embed the whole store spec; its innermost error names the
    file and what is wrong with it (e.g. "Requested byte range [0, 268724) is not valid for
    value of size 134493": a truncated file).
    """
    inner, seen = error, {id(error)}

    def cause(e: BaseException) -> BaseException | None:
        return e.__cause__ or (None if e.__suppress_context__ else e.__context__)

    while cause(inner) is not None:
        inner = cause(inner)
        if id(inner) in seen:
            break
        seen.add(id(inner))
    text = str(inner).split("See full TensorStore details")[0]
    text = text.split(" [tensorstore_spec=")[0].strip().splitlines()
    line = text[0] if text else type(inner).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _drop_failed_read_noise(previous: Any) -> Any:
    """An unraisable-exception hook that drops the echoes of a failed checkpoint read.

    When orbax gives up on a damaged checkpoint, the reads still in flight end later: orbax's
    read coroutines are closed with the same error (and its whole TensorStore spec), and
    TensorStore's callbacks find orbax's event loop closed ("Event loop is closed"). Python
    prints each as a traceback, often at exit; `describe_error` has already said what is
    wrong. These go to the debug log; everything else goes to `previous`.
    """

    def hook(unraisable: Any) -> None:
        obj, error = unraisable.object, unraisable.exc_value
        closed_loop = (obj is None and isinstance(error, RuntimeError)
                       and str(error) == "Event loop is closed")
        orbax_read = inspect.iscoroutine(obj) and "orbax" in obj.cr_code.co_filename
        if closed_loop or orbax_read:
            log.debug("After a failed checkpoint read: %s", describe_error(error))
            return
        previous(unraisable)

    hook.drops_failed_read_noise = True
    return hook


# asyncio's message for a future collected with its exception unread; it names the class.
UNRETRIEVED = re.compile(r"\w+ exception was never retrieved")


class _DropFailedReadTasks(logging.Filter):
    """Drops asyncio's "<Task|_GatheringFuture|...> exception was never retrieved" for orbax's
    reads: another echo of a failed checkpoint read (a read task, or the gather of several,
    that failed after orbax gave up, collected unretrieved; both seen). It goes to the debug
    log; other asyncio errors stay."""

    drops_failed_read_noise = True

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if (error is not None
                and UNRETRIEVED.match(record.getMessage())
                and any("orbax" in frame.filename
                        for frame in traceback.extract_tb(error.__traceback__))):
            log.debug("After a failed checkpoint read: %s", describe_error(error))
            return False
        return True


def _quiet_failed_read_echoes() -> None:
    """Installs `_drop_failed_read_noise` and `_DropFailedReadTasks` once. Called before a
    checkpoint read, not after it fails: the echoes of a failing read can arrive while orbax is
    still raising, before the caller's `except` runs (seen on CI)."""
    if not getattr(sys.unraisablehook, "drops_failed_read_noise", False):
        sys.unraisablehook = _drop_failed_read_noise(sys.unraisablehook)
    asyncio_log = logging.getLogger("asyncio")
    if not any(getattr(f, "drops_failed_read_noise", False) for f in asyncio_log.filters):
        asyncio_log.addFilter(_DropFailedReadTasks())


def ensure_writable(directory: str, what: str) -> None:
    """Creates `directory` if needed and writes a probe file in it; UserError naming `what`
    (the flag that sets it) if either fails, so that a run never trains for hours and then
    cannot save."""
    try:
        os.makedirs(directory, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".write_test_", dir=directory)
        os.close(handle)
        os.remove(probe)
    except OSError as e:
        raise UserError(
            f"Cannot write to {what} {directory} ({e.strerror or e}): choose a directory you "
            "can write to."
        ) from e


def _all_processes(ok: bool) -> bool:
    """True if `ok` on every process (one small all-gather on multi-process runs)."""
    if jax.process_count() == 1:
        return ok
    return bool(multihost_utils.process_allgather(int(ok)).min())


def _save_cpu_arrays_from_one_replica() -> None:
    """On CPU, orbax saves each replicated array from one replica.

    orbax otherwise splits the writing of a replicated array across its replicas (spreading a
    pod's bytes over hosts; it already does not when JAX_PLATFORMS names a GPU). In a one-process
    CPU run the replicas share one host's memory, so the split only adds an eagerly compiled
    slice program per array shape and replica (320 of them, 32 s, for the first checkpoint of
    the suite's tiny IR-v2 on 8 forced CPU devices). The handler keeps orbax's array-metadata
    store; where orbax's handler has not the fields read here, it is left as it is.
    """
    current = ocp.type_handlers.get_type_handler(jax.Array)
    if jax.default_backend() != "cpu" or not getattr(current, "_use_replica_parallel", False):
        return  # not CPU, already one replica, or an orbax whose handler we do not know
    handler = ocp.type_handlers.ArrayHandler(
        use_replica_parallel=False,
        array_metadata_store=getattr(current, "_array_metadata_store", None),
    )
    absl_log = logging.getLogger("absl")  # orbax warns of every override it is asked for
    level = absl_log.level
    absl_log.setLevel(logging.ERROR)
    try:
        ocp.type_handlers.register_type_handler(jax.Array, handler, override=True)
    finally:
        absl_log.setLevel(level)


class _Manager(ocp.CheckpointManager):
    """orbax's manager, leaving the preemption sync point to `inception_jax.preemption` alone.

    orbax reports its save steps to JAX's preemption service too (for its logs only), once from
    a background thread after the loop has moved on; the service would then agree on a stop
    step the loop has already passed, and no process would stop.
    """

    def reached_preemption(self, step: int) -> bool:
        """Never: see the class docstring."""
        return False


class _Verification:
    """`checksums.verify_manifest(directory)` running on a thread; `result` waits and raises."""

    def __init__(self, directory: str):
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(directory,), daemon=True)
        self.thread.start()

    def _run(self, directory: str) -> None:
        try:
            checksums.verify_manifest(directory)
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            self.error = e

    def result(self) -> None:
        """Waits for the verification; raises what it raised."""
        self.thread.join()
        if self.error is not None:
            raise self.error from None  # raised where a read failed: not caused by that failure


class Checkpointer:
    """Saves every `save` call's step, keeps the newest `keep`, restores the newest good one.

    The trainer calls `check_compatible()`, then `restore(target)` if `latest_step()` is not
    None; `restore` falls back past damaged checkpoints (see the module docstring).
    """

    def __init__(self, directory: str, keep: int, meta: dict[str, Any],
                 may_differ: tuple[str, ...] = ()):
        """`meta` is the run's identity, saved beside each state; a checkpoint whose identity
        differs is refused, except in the dotted keys of `may_differ` (logged)."""
        self.directory = os.path.abspath(directory)
        ensure_writable(self.directory, "the checkpoint directory")
        self.meta = json.loads(json.dumps(meta))  # as it reads back (tuples become lists)
        self.may_differ = frozenset(may_differ)
        self.damaged: dict[int, str] = {}  # step -> what is wrong with it
        _save_cpu_arrays_from_one_replica()
        _quiet_failed_read_echoes()  # before any read: `check_compatible` and `restore` read
        self._saving: int | None = None  # the step of the save in flight
        self.manager = _Manager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep, create=True,
                async_options=ocp.AsyncOptions(post_finalization_callback=self._write_manifest),
            ),
            item_names=("state", "meta"),
        )

    def latest_step(self) -> int | None:
        """The newest complete checkpoint's step, or None."""
        return self.manager.latest_step()

    def step_dir(self, step: int) -> str:
        """The directory of checkpoint `step`."""
        return os.path.join(self.directory, str(step))

    def _newest_first(self) -> list[int]:
        return sorted(self.manager.all_steps(), reverse=True)

    def _note_damaged(self, step: int, error: BaseException) -> None:
        """Records what is wrong with `step`: the manifest's word where the checkpoint has one
        and it names a fault (it names the file), else the read's own error."""
        if not isinstance(error, checksums.ChecksumError) and checksums.has_manifest(
                self.step_dir(step)):
            try:
                checksums.verify_manifest(self.step_dir(step))
            except checksums.ChecksumError as found:
                found.__suppress_context__ = True  # the read's error is not its cause
                error = found
        # Paths inside the checkpoint directory, which the messages name already.
        self.damaged[step] = describe_error(error).replace(self.directory + os.sep, "")

    def _refuse_other_run(self, step: int, theirs: dict[str, Any]) -> None:
        theirs = {k: v for k, v in theirs.items() if k != MANIFEST_KEY}
        ours, saved = flatten_keys(self.meta), flatten_keys(theirs)
        diffs = sorted(k for k in set(ours) | set(saved) if ours.get(k) != saved.get(k))
        def detail(keys: list[str]) -> str:
            return "; ".join(f"{k}: saved {saved.get(k)!r}, now {ours.get(k)!r}" for k in keys)

        refused = [k for k in diffs if k not in self.may_differ]
        if refused:
            raise CheckpointError(
                f"{self.directory} holds a checkpoint (step {step}) of a different run "
                f"({detail(refused)}). Use another --workdir, or delete that directory to start "
                "over; nothing was overwritten."
            )
        if diffs:
            log.info("Resuming step %d with other execution settings (%s).", step, detail(diffs))

    def check_compatible(self) -> None:
        """Raises CheckpointError if the newest readable checkpoint is of a different run setup.

        Checkpoints whose identity cannot be read are noted as damaged (`restore` skips them).
        """
        for step in self._newest_first():
            try:
                if checksums.has_manifest(self.step_dir(step)):  # the identity itself, first
                    checksums.verify_manifest(self.step_dir(step), prefix="meta" + os.sep)
                saved = self.manager.restore(
                    step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())
                )
            except Exception as e:  # noqa: BLE001 - any read failure means damaged
                self._note_damaged(step, e)
                continue
            self._refuse_other_run(step, saved["meta"])
            return

    def restore(self, abstract_state: Any) -> Any:
        """The newest state that reads back whole, laid out as `abstract_state` (shape, dtype,
        sharding structs).

        Damaged checkpoints newer than it are warned about and moved aside (never deleted).
        Raises CheckpointError, changing nothing, if no checkpoint can be read.
        """
        for step in self._newest_first():
            restored = None
            if step not in self.damaged:
                try:
                    restored = self._read_verified(step, abstract_state)
                except Exception as e:  # noqa: BLE001 - any read failure means damaged
                    self._note_damaged(step, e)
            if not _all_processes(restored is not None):
                self.damaged.setdefault(step, "unreadable on another process")
                continue
            self._refuse_other_run(step, restored["meta"])
            self._set_aside(step)
            return restored["state"]
        found = "; ".join(f"step {s}: {self.damaged[s]}" for s in self._newest_first())
        raise CheckpointError(
            f"No checkpoint in {self.directory} can be read ({found}). Nothing was changed: "
            "restore them from a copy, or move them away to start over, or choose another "
            "--workdir."
        )

    def _read_verified(self, step: int, abstract_state: Any) -> dict[str, Any]:
        """Checkpoint `step` read by orbax while its checksums are verified on other threads
        (both read the same files; the arrays are returned only if every checksum matched).
        Raises ChecksumError or orbax's error."""
        directory = self.step_dir(step)
        check = _Verification(directory) if checksums.has_manifest(directory) else None
        try:
            restored = self.manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state),
                meta=ocp.args.JsonRestore(),
            ))
        except Exception:
            if check is not None:  # the manifest's word on what is wrong names the file
                check.result()
            raise
        if check is not None:
            check.result()
        elif restored["meta"].get(MANIFEST_KEY):
            raise checksums.ChecksumError(f"{restored['meta'][MANIFEST_KEY]} is missing")
        else:
            log.info("Checkpoint %s carries no checksums (written before they existed): "
                     "restored unverified.", directory)
        return restored

    def _write_manifest(self) -> None:
        """orbax's post-finalization callback (primary process, background thread): the
        manifest of the step just written, in its temporary directory before orbax renames
        it into place (or in place, where orbax writes no temporary directory)."""
        step = self._saving
        if step is None:
            return
        final = self.step_dir(step)
        directory = final + TMP_SUFFIX if os.path.isdir(final + TMP_SUFFIX) else final
        checksums.write_manifest(directory)

    def _set_aside(self, resumed: int) -> None:
        """Renames every damaged checkpoint newer than `resumed` to STEP.damaged[-N]."""
        newer = sorted(s for s in self.damaged if s > resumed)
        if not newer:
            return
        if jax.process_index() == 0:
            for step in newer:
                source, target = self.step_dir(step), self.step_dir(step) + DAMAGED_SUFFIX
                n = 1
                while os.path.exists(target):
                    n += 1
                    target = f"{self.step_dir(step)}{DAMAGED_SUFFIX}-{n}"
                os.rename(source, target)
                log.warning(
                    "Checkpoint %s is damaged (%s); moved it to %s and resuming from step %d.",
                    source, self.damaged[step], target, resumed,
                )
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices("checkpoint: damaged steps set aside")
        self.manager.reload()

    def save(self, step: int, state: Any) -> None:
        """Writes `state` as checkpoint `step` (asynchronously; `close` waits).

        A step already saved is left as it is (a preemption on a checkpoint step saves once).
        """
        if step in self.manager.all_steps():
            return
        self.manager.wait_until_finished()  # one save in flight: `_write_manifest` knows its step
        self._saving = step
        meta = {**self.meta, MANIFEST_KEY: checksums.MANIFEST}
        self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)
            ),
            force=True,
        )

    def wait(self) -> None:
        """Blocks until the saves in flight are written."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        """Waits for pending saves and releases the manager."""
        self.manager.wait_until_finished()
        self.manager.close()


def checkpoints_dir(path: str) -> str:
    """The checkpoints folder of `path`: a training workdir or that folder itself."""
    path = os.path.abspath(path)
    nested = os.path.join(path, "checkpoints")
    return nested if os.path.isdir(nested) else path


def read_checkpoint(directory: str, step: int | None = None) -> tuple[dict[str, Any], Any]:
    """(run identity, state as nested dicts of numpy arrays) of a checkpoint, for evaluation.

    `directory` is a training workdir or its `checkpoints/` folder; `step` defaults to the
    newest. Needs no config: the identity saved beside the state names the model.
    """
    directory = checkpoints_dir(directory)
    if not os.path.isdir(directory):
        raise CheckpointError(
            f"No checkpoint directory at {directory}: pass the --workdir of a training run."
        )
    manager = ocp.CheckpointManager(
        directory, item_names=("state", "meta"),
        item_handlers={"state": ocp.StandardCheckpointHandler(),
                       "meta": ocp.JsonCheckpointHandler()},
    )
    _quiet_failed_read_echoes()
    try:
        step = manager.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(
                f"{directory} holds no complete checkpoint: train first (train.py --workdir)."
            )
        try:
            step_dir = os.path.join(directory, str(step))
            if checksums.has_manifest(step_dir):
                checksums.verify_manifest(step_dir)
            # Every array onto this process's first device: a run saved on 8 devices is read
            # on any number (orbax refuses other devices than the saved ones without a target).
            saved = manager.item_metadata(step)["state"]
            device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
            target = jax.tree.map(
                lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), saved
            )
            restored = manager.restore(step, args=ocp.args.Composite(
                meta=ocp.args.JsonRestore(), state=ocp.args.StandardRestore(target)
            ))
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(
                f"The checkpoint at step {step} in {directory} could not be read "
                f"({describe_error(e).replace(directory + os.sep, '')}). It may be incomplete "
                "or damaged: pick another step or re-train."
            ) from e
        meta = dict(restored["meta"])
        if meta.pop(MANIFEST_KEY, None) and not checksums.has_manifest(step_dir):
            raise CheckpointError(
                f"The checkpoint at step {step} in {directory} could not be verified "
                f"({checksums.MANIFEST} is missing). It may be incomplete or damaged: pick "
                "another step or re-train."
            )
    finally:
        manager.close()
    return meta, jax.device_get(restored["state"])
