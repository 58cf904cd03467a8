"""What a long run meets and must survive: damaged checkpoints, SIGTERM, kills at any point
(SIGTERM to one of two processes: tests/test_train.py). Each interrupted run, rerun, ends
bit-identical to an uninterrupted one."""

import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

from inception_jax import checkpoint
from inception_jax.checkpoint import Checkpointer, CheckpointError
from inception_jax.data.bad_images import SKIPPED_LIST
from inception_jax.preemption import Preemption
from tests.damaged_folder import make_damaged_folder
from tests.helpers import flags, restore_target, run_env, small_state
from tools import kill_points

STEPS = 12  # checkpoints at 4, 8, 12; evaluations at 6, 12 (kill_points.SETTINGS)


# ---- the Checkpointer on a small state (fast) ------------------------------------------------

def saved(directory, steps=(2, 4), meta=None) -> None:
    c = Checkpointer(str(directory), 3, meta or {"model": "tiny"})
    for s in steps:
        c.save(s, small_state(s))
    c.close()


def largest_file(step_dir: Path) -> Path:
    return max((p for p in step_dir.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


def truncate_half(path: Path) -> int:
    size = path.stat().st_size // 2
    os.truncate(path, size)
    return size


def tree_listing(directory: Path) -> dict:
    return {str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in directory.rglob("*")}


def resume(directory, meta=None):
    """(restored state, checkpointer) the way the trainer resumes."""
    c = Checkpointer(str(directory), 3, meta or {"model": "tiny"})
    c.check_compatible()
    assert c.latest_step() is not None
    return c.restore(restore_target(small_state(0))), c


DAMAGES = {
    "truncated data file": lambda d: truncate_half(largest_file(d / "4")),
    "missing data file": lambda d: largest_file(d / "4").unlink(),
    "missing state item": lambda d: shutil.rmtree(d / "4" / "state"),
    "missing identity": lambda d: shutil.rmtree(d / "4" / "meta"),
    "empty step directory": lambda d: (shutil.rmtree(d / "4"), (d / "4").mkdir()),
}
REASONS = {  # what the warning says is wrong, per damage (the checksum manifest's word)
    "truncated data file": r"state/\S+ has \d+ bytes, \d+ expected",
    "missing data file": r"state/\S+ is missing \(listed in checksums\.json\)",
    "missing state item": r"state/\S+ is missing \(listed in checksums\.json\)",
    "missing identity": r"meta/\S+ is missing \(listed in checksums\.json\)",
    "empty step directory": r'Item "meta" was not found',
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_and_is_kept(
        tmp_path, caplog, damage):
    saved(tmp_path)
    DAMAGES[damage](tmp_path)
    before = tree_listing(tmp_path / "4")
    with caplog.at_level(logging.WARNING, logger="inception_jax.checkpoint"):
        state, c = resume(tmp_path)
    assert int(state["step"]) == 2 and float(state["w"][0, 1]) == 3.0
    warnings = [r.getMessage() for r in caplog.records if r.name == "inception_jax.checkpoint"]
    assert len(warnings) == 1 and "\n" not in warnings[0], warnings
    assert warnings[0].startswith(f"Checkpoint {tmp_path / '4'} is damaged (")
    assert re.search(REASONS[damage], warnings[0]), warnings[0]
    assert warnings[0].endswith(f"moved it to {tmp_path / '4.damaged'} and resuming from step 2.")
    assert "TensorStore" not in warnings[0] and len(warnings[0]) < 700
    # Kept whole under its new name; orbax no longer lists it, so step 4 can be saved again.
    assert tree_listing(tmp_path / "4.damaged") == before
    assert c.latest_step() == 2
    c.save(4, small_state(40))
    c.close()
    again, c = resume(tmp_path)
    c.close()
    assert int(again["step"]) == 40 and (tmp_path / "4.damaged").is_dir()


def test_a_second_damage_of_the_same_step_is_kept_beside_the_first(tmp_path):
    saved(tmp_path)
    for _ in range(2):
        truncate_half(largest_file(tmp_path / "4"))
        state, c = resume(tmp_path)
        assert int(state["step"]) == 2
        c.save(4, small_state(4))
        c.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["2", "4", "4.damaged", "4.damaged-2"]


def test_no_readable_checkpoint_is_one_error_and_changes_nothing(tmp_path):
    saved(tmp_path)
    truncate_half(largest_file(tmp_path / "4"))
    truncate_half(largest_file(tmp_path / "2"))
    before = tree_listing(tmp_path)
    with pytest.raises(CheckpointError) as err:
        resume(tmp_path)
    message = str(err.value)
    assert message.startswith(f"No checkpoint in {tmp_path} can be read (step 4: ")
    assert "; step 2: " in message and "Nothing was changed" in message
    assert "\n" not in message and "TensorStore" not in message
    assert isinstance(err.value, ValueError)  # a UserError: the CLI prints one line, exit 2
    assert tree_listing(tmp_path) == before


def test_a_checkpoint_of_another_run_behind_a_damaged_one_is_still_refused(tmp_path):
    saved(tmp_path, meta={"model": "other"})
    shutil.rmtree(tmp_path / "4" / "meta")
    before = tree_listing(tmp_path)
    with pytest.raises(CheckpointError, match=r"\(step 2\) of a different run \(model: saved"):
        resume(tmp_path)
    assert tree_listing(tmp_path) == before


def test_saving_a_step_twice_keeps_the_first(tmp_path):
    c = Checkpointer(str(tmp_path), 3, {"model": "tiny"})
    c.save(4, small_state(4))
    c.save(4, small_state(5))  # SIGTERM on a checkpoint step: the loop saves the step again
    c.close()
    state, c = resume(tmp_path)
    c.close()
    assert int(state["step"]) == 4


def test_saving_replicated_arrays_on_8_cpu_devices_compiles_nothing(tmp_path):
    # orbax's replica-parallel saving slices each replicated array per replica, one eagerly
    # compiled program per shape (40 here before checkpoint.py saved from one replica on CPU).
    compiled = []

    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiled.append(kwargs.get("fun_name"))

    mesh = jax.make_mesh((8,), ("data",))
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    state = {f"w{i}": jax.device_put(jnp.ones((16, 3 + i)), replicated) for i in range(5)}
    jax.block_until_ready(state)
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        c = Checkpointer(str(tmp_path), 3, {"model": "tiny"})
        c.save(2, state)
        c.close()
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert compiled == []
    c = Checkpointer(str(tmp_path), 3, {"model": "tiny"})
    restored = c.restore(restore_target(state))
    c.close()
    assert all(bool(jnp.all(restored[k] == state[k])) for k in state)


def coroutine_from(filename):
    async def read():
        pass

    read.__code__ = read.__code__.replace(co_filename=filename)
    return read()


def error_raised_in(filename):
    """An exception whose traceback's frame is in `filename`."""
    def read():
        raise ValueError("reading array index failed")

    read.__code__ = read.__code__.replace(co_filename=filename)
    try:
        read()
    except ValueError as e:
        return e


def test_echoes_of_a_failed_read_are_dropped_and_other_unraisables_kept(monkeypatch):
    seen = []
    monkeypatch.setattr(sys, "unraisablehook", seen.append)
    checkpoint._quiet_failed_read_echoes()
    checkpoint._quiet_failed_read_echoes()  # installed once
    orbax_read = coroutine_from("/venv/site-packages/orbax/checkpoint/_src/serialization.py")
    ours = coroutine_from("/work/inception_jax/data/pipeline.py")
    unraisables = [
        (RuntimeError("Event loop is closed"), None),  # TensorStore's late callbacks
        (Exception("Encountered error while reading array index"), orbax_read),
        (RuntimeError("Event loop is broken"), None),
        (Exception("Encountered error while reading array index"), ours),
    ]
    for error, obj in unraisables:
        sys.unraisablehook(types.SimpleNamespace(exc_type=type(error), exc_value=error,
                                                 exc_traceback=None, err_msg=None, object=obj))
    orbax_read.close()
    ours.close()
    assert [u.exc_value for u in seen] == [unraisables[2][0], unraisables[3][0]]


def test_unretrieved_orbax_read_tasks_are_dropped_and_other_asyncio_errors_kept(monkeypatch):
    """asyncio's "... exception was never retrieved" for a read task, or a gather of reads,
    that orbax gave up on (tracebacks in a damaged checkpoint's fallback, both seen) goes to
    the debug log."""
    asyncio_log = logging.getLogger("asyncio")
    monkeypatch.setattr(asyncio_log, "filters", [])
    checkpoint._quiet_failed_read_echoes()
    checkpoint._quiet_failed_read_echoes()  # installed once
    assert len(asyncio_log.filters) == 1

    def record(message, error):
        return logging.LogRecord("asyncio", logging.ERROR, __file__, 1, message, None,
                                 (type(error), error, error.__traceback__))

    orbax_error = error_raised_in("/venv/site-packages/orbax/checkpoint/_src/serialization.py")
    our_error = error_raised_in("/work/inception_jax/data/pipeline.py")
    for never in ("Task exception was never retrieved\nfuture: <Task finished>",
                  "_GatheringFuture exception was never retrieved\nfuture: <_GatheringFuture>"):
        assert not asyncio_log.filter(record(never, orbax_error))
        assert asyncio_log.filter(record(never, our_error))
    assert asyncio_log.filter(record("Unclosed client session", orbax_error))


def test_the_error_description_is_the_innermost_cause_without_the_store_spec():
    try:
        try:
            raise ValueError('OUT_OF_RANGE: Error reading "w/0.0": Requested byte range [0, 9) '
                             "is not valid for value of size 4 [tensorstore_spec='{...}']")
        except ValueError as inner:
            raise Exception("Encountered error while reading array index: (). See full "
                            "TensorStore details: {\n 'driver': ...}") from inner
    except Exception as e:  # noqa: BLE001
        described = checkpoint.describe_error(e)
    assert described == ('OUT_OF_RANGE: Error reading "w/0.0": Requested byte range [0, 9) '
                         "is not valid for value of size 4")


def test_preemption_flag_on_one_process():
    previous = signal.getsignal(signal.SIGTERM)
    p = Preemption()
    try:
        assert not p.distributed and not p.should_stop(1)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.01)  # the handler runs between bytecodes of the main thread
        assert p.should_stop(2)
    finally:
        p.close()
    assert signal.getsignal(signal.SIGTERM) == previous


# ---- end to end on the tiny run ---------------------------------------------------------------

@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="module")
def reference(data_dir, tmp_path_factory):
    """An uninterrupted tiny run (a subprocess on one device, as every run compared here)."""
    workdir = tmp_path_factory.mktemp("reference")
    kill_points.run(data_dir, workdir, STEPS)
    return workdir


def assert_same_as(reference, workdir):
    assert kill_points.differing_arrays(reference, workdir, STEPS) == []
    step, top1, top5 = kill_points.final_eval(workdir)
    assert (step, top1, top5) == kill_points.final_eval(reference) and step == STEPS


@pytest.mark.slow
def test_rerun_after_a_flipped_byte_in_the_newest_checkpoint_resumes_from_the_previous(
        reference, data_dir, tmp_path):
    """One byte flipped in the middle of the newest checkpoint's largest data file: orbax alone
    restores it without a word; the manifest's checksum catches it."""
    workdir = tmp_path / "run"
    shutil.copytree(reference, workdir)
    assert kill_points.checkpoint_steps(workdir) == [4, 8, 12]
    newest = workdir / "checkpoints" / str(STEPS)
    damaged = largest_file(newest / "state")
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    output = kill_points.run(data_dir, workdir, STEPS)
    lines = [line for line in output.splitlines() if "damaged" in line]
    assert len(lines) == 1, output[-3000:]
    path, name = re.escape(str(newest)), re.escape(str(damaged.relative_to(newest)))
    assert re.search(rf"Checkpoint {path} is damaged \({name}: crc32c [0-9a-f]{{8}} found, "
                     rf"[0-9a-f]{{8}} expected\); moved it to {path}\.damaged and resuming from "
                     rf"step 8\.$", lines[0]), lines[0]
    assert "Traceback" not in output and "Event loop is closed" not in output
    kept = workdir / "checkpoints" / f"{STEPS}.damaged" / damaged.relative_to(newest)
    assert kept.read_bytes() == bytes(data)
    assert_same_as(reference, workdir)


@pytest.mark.slow
def test_sigterm_saves_the_step_it_is_at_and_the_rerun_is_bit_identical(
        reference, data_dir, tmp_path):
    workdir = tmp_path / "sigterm"
    proc = subprocess.Popen(kill_points.command(data_dir, workdir, STEPS),
                            env=run_env(kill_points.DEVICES), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 600
    while not kill_points.metric_rows(workdir) and proc.poll() is None:
        assert time.time() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)  # at step 2: mid-epoch (8 steps), before any checkpoint
    output = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, output[-3000:]
    stopped = kill_points.sigterm_steps(output)
    assert len(stopped) == 1 and 2 <= stopped[0] < STEPS, output[-3000:]
    assert kill_points.checkpoint_steps(workdir)[-1] == stopped[0]
    assert max(r["step"] for r in kill_points.metric_rows(workdir)) <= stopped[0]

    rows = len(kill_points.metric_rows(workdir))
    kill_points.run(data_dir, workdir, STEPS)
    assert min(r["step"] for r in kill_points.rows_after(workdir, rows)) > stopped[0]  # resumed
    assert_same_as(reference, workdir)


@pytest.mark.slow
def test_kills_before_the_first_checkpoint_between_two_and_during_evaluation(
        reference, data_dir, tmp_path):
    """One run killed three times (SIGKILL), each rerun resuming; the last one finishes."""
    workdir = tmp_path / "killed"

    def kill_at(ready):
        rows = len(kill_points.metric_rows(workdir))
        kill_points.kill_when(kill_points.start(data_dir, workdir, STEPS),
                              lambda: ready(kill_points.rows_after(workdir, rows)))
        return kill_points.rows_after(workdir, rows)

    # 1. Training has logged step 2; the first checkpoint is at step 4.
    kill_at(lambda rows: rows and not kill_points.checkpoint_steps(workdir))
    assert kill_points.checkpoint_steps(workdir) == []
    # 2. Checkpoint 4 is written, checkpoint 8 not yet.
    kill_at(lambda rows: 4 in kill_points.checkpoint_steps(workdir))
    assert kill_points.checkpoint_steps(workdir) == [4]
    # 3. Resumed at 4, step 6 logged, its evaluation not yet written.
    rows = kill_at(lambda rows: any(r["step"] == 6 for r in rows)
                   and not any("eval_top1" in r for r in rows))
    assert not any("eval_top1" in r for r in rows) and kill_points.checkpoint_steps(workdir) == [4]

    kill_points.run(data_dir, workdir, STEPS)
    assert_same_as(reference, workdir)


@pytest.mark.slow
def test_a_skip_run_killed_and_rerun_ends_as_an_uninterrupted_one(tmp_path):
    """`data.on_bad_image=skip` on a folder with damaged images: a run SIGKILLed after its
    second checkpoint and rerun ends bit-identical to one never stopped, and each damaged file
    is listed once in WORKDIR/skipped_images.txt (training and evaluation alike)."""
    root = tmp_path / "images"
    # Ten labels and 132 training files (8 steps an epoch), as the built-in data has, on 8
    # devices: the programs of the suite's in-process tiny runs serve this one (the schedule is
    # compiled into the train step).
    damaged = make_damaged_folder(root, per_label=13, labels=10)
    steps = 16  # two epochs: each damaged file comes up again after the rerun reads the list
    knobs = {"data.name": "image_folder", "data.folder": str(root), "data.eval_split": "test",
             "data.on_bad_image": "skip", "train.num_steps": steps,
             "train.checkpoint_every_steps": 2, "train.eval_every_steps": steps}
    straight, killed, tfds = tmp_path / "straight", tmp_path / "killed", str(tmp_path / "tfds")
    env = run_env(devices=8)
    subprocess.run(flags(tfds, straight, **knobs), env=env, check=True, capture_output=True)
    proc = subprocess.Popen(flags(tfds, killed, **knobs), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kill_points.kill_when(proc, lambda: len(kill_points.checkpoint_steps(killed)) >= 2)
    assert kill_points.checkpoint_steps(killed)[-1] < steps  # killed before the end
    subprocess.run(flags(tfds, killed, **knobs), env=env, check=True, capture_output=True)

    assert kill_points.differing_arrays(straight, killed, steps) == []
    assert kill_points.final_eval(killed) == kill_points.final_eval(straight)
    for workdir in (straight, killed):
        lines = (workdir / SKIPPED_LIST).read_text().splitlines()
        assert sorted(line.split("\t")[0] for line in lines) == sorted(
            damaged["train"] + damaged["test"])
