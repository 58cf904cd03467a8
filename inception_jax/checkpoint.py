"""Checkpoints of the train state in the workdir (orbax), with the run's identity beside them.

Each checkpoint holds the state and a small JSON `meta` (model config, image size) so that a
workdir written by another model is refused before anything is overwritten.
"""

from __future__ import annotations

import json
import os
from typing import Any

import orbax.checkpoint as ocp


class CheckpointError(RuntimeError):
    """The workdir's checkpoint cannot be used for this run (says what to do)."""


class Checkpointer:
    """Saves every `save` call's step, keeps the newest `keep`, restores the newest."""

    def __init__(self, directory: str, keep: int, meta: dict[str, Any]):
        self.directory = os.path.abspath(directory)
        self.meta = json.loads(json.dumps(meta))  # as it reads back (tuples become lists)
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
            item_names=("state", "meta"),
        )

    def latest_step(self) -> int | None:
        """The newest complete checkpoint's step, or None."""
        return self.manager.latest_step()

    def check_compatible(self) -> None:
        """Raises CheckpointError if the newest checkpoint belongs to a different run setup."""
        step = self.latest_step()
        if step is None:
            return
        try:
            saved = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        except Exception as e:  # noqa: BLE001 - any read failure gets the same advice
            raise CheckpointError(
                f"The checkpoint at step {step} in {self.directory} could not be read ({e}). "
                "Move it away or choose another --workdir; nothing was overwritten."
            ) from e
        theirs = saved["meta"]
        diffs = sorted(k for k in set(theirs) | set(self.meta) if theirs.get(k) != self.meta.get(k))
        if diffs:
            detail = "; ".join(
                f"{k}: saved {theirs.get(k)!r}, now {self.meta.get(k)!r}" for k in diffs
            )
            raise CheckpointError(
                f"{self.directory} holds a checkpoint (step {step}) of a different run ({detail}). "
                "Use another --workdir, or delete that directory to start over; "
                "nothing was overwritten."
            )

    def restore(self, abstract_state: Any) -> Any:
        """The newest state, laid out as `abstract_state` (shape/dtype/sharding structs)."""
        step = self.latest_step()
        try:
            restored = self.manager.restore(
                step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state))
            )
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(
                f"The checkpoint at step {step} in {self.directory} could not be restored ({e}). "
                "Move it away or choose another --workdir; nothing was overwritten."
            ) from e
        return restored["state"]

    def save(self, step: int, state: Any) -> None:
        """Writes `state` as checkpoint `step` (asynchronously; `close` waits)."""
        self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(self.meta)
            ),
            force=True,
        )

    def close(self) -> None:
        """Waits for pending saves and releases the manager."""
        self.manager.wait_until_finished()
        self.manager.close()


def read_checkpoint(directory: str, step: int | None = None) -> tuple[dict[str, Any], Any]:
    """(run identity, state as nested dicts of numpy arrays) of a checkpoint, for evaluation.

    `directory` is a training workdir or its `checkpoints/` folder; `step` defaults to the
    newest. Needs no config: the identity saved beside the state names the model.
    """
    directory = os.path.abspath(directory)
    if os.path.isdir(os.path.join(directory, "checkpoints")):
        directory = os.path.join(directory, "checkpoints")
    if not os.path.isdir(directory):
        raise CheckpointError(
            f"No checkpoint directory at {directory}: pass the --workdir of a training run."
        )
    manager = ocp.CheckpointManager(directory, item_names=("state", "meta"))
    try:
        step = manager.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(
                f"{directory} holds no complete checkpoint: train first (train.py --workdir)."
            )
        try:
            restored = manager.restore(step, args=ocp.args.Composite(
                meta=ocp.args.JsonRestore(), state=ocp.args.StandardRestore()
            ))
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(
                f"The checkpoint at step {step} in {directory} could not be read ({e}). "
                "It may be incomplete or corrupted: pick another step or re-train."
            ) from e
    finally:
        manager.close()
    return restored["meta"], restored["state"]
