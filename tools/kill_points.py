"""Kill a tiny training run at many points, rerun it each time, compare with an uninterrupted run.

Run:  python -m tools.kill_points --points=10 [--steps=48] [--seed=0] [--workdir=DIR]

It trains the tiny IR-v1 of tests/helpers.py once without interruption, then starts the same
run in a second workdir and SIGKILLs it at `--points` random moments (each rerun resumes from
the newest checkpoint), lets the last rerun finish, and checks that the final train state and
final evaluation are bit-identical to the uninterrupted run's. tests/test_resilience.py uses
the same functions at three chosen points (before the first checkpoint, between two, during
evaluation).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tests.helpers import flags, run_env

DEVICES = 1  # cheapest on CPU; every run compared here is a subprocess with the same flags
# Logs every 2 steps (tests/helpers.py), checkpoints every 4, evaluates every 6: the points
# between them are distinct. With gradient accumulation and BatchNorm groups on (2 micro-batches
# of 8, groups of 4): a resumed run must also continue with the same micro-batches.
SETTINGS = {"train.checkpoint_every_steps": 4, "train.eval_every_steps": 6,
            "train.grad_accum_steps": 2, "model.bn_group_size": 4}


SIGTERM_LINE = re.compile(r"SIGTERM: saving step (\d+) and stopping")


def sigterm_steps(output: str) -> list[int]:
    """The steps at which a run's output says it saved and stopped after SIGTERM."""
    return [int(m.group(1)) for m in SIGTERM_LINE.finditer(output)]


def command(data_dir: str, workdir: str | Path, steps: int) -> list[str]:
    """The train.py command line of the tiny run."""
    return flags(data_dir, workdir, **{**SETTINGS, "train.num_steps": steps})


def start(data_dir: str, workdir: str | Path, steps: int) -> subprocess.Popen:
    """Starts the tiny run in a subprocess (its output is discarded)."""
    return subprocess.Popen(command(data_dir, workdir, steps), env=run_env(DEVICES),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def run(data_dir: str, workdir: str | Path, steps: int, timeout: float = 900) -> str:
    """Runs the tiny run to its end; returns its output (stdout + stderr)."""
    done = subprocess.run(command(data_dir, workdir, steps), env=run_env(DEVICES), text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"train.py exited with {done.returncode}:\n{done.stdout[-3000:]}")
    return done.stdout


def checkpoint_steps(workdir: str | Path) -> list[int]:
    """Steps of the finished checkpoints in `workdir`."""
    ckpts = Path(workdir) / "checkpoints"
    return sorted(int(p.name) for p in ckpts.glob("*") if p.name.isdigit())


def metric_rows(workdir: str | Path) -> list[dict[str, float]]:
    """Rows of `workdir/metrics.jsonl` (a last, half-written line is left out)."""
    path = Path(workdir) / "metrics.jsonl"
    rows = []
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return rows


def rows_after(workdir: str | Path, count: int) -> list[dict[str, float]]:
    """The metric rows written after the first `count` (those of a run started since)."""
    return metric_rows(workdir)[count:]


def final_eval(workdir: str | Path) -> tuple[float, float, float]:
    """(step, top-1, top-5) of the newest evaluation in `workdir/metrics.jsonl`."""
    row = [r for r in metric_rows(workdir) if "eval_top1" in r][-1]
    return row["step"], row["eval_top1"], row["eval_top5"]


def differing_arrays(workdir_a: str | Path, workdir_b: str | Path, step: int) -> list[str]:
    """Paths of the arrays in which checkpoint `step` of the two workdirs differ (any bit)."""
    import jax

    from inception_jax.checkpoint import read_checkpoint

    _, a = read_checkpoint(str(workdir_a), step)
    _, b = read_checkpoint(str(workdir_b), step)
    a_leaves, tree = jax.tree_util.tree_flatten_with_path(a)
    b_leaves = jax.tree.leaves(b)
    assert len(a_leaves) == len(b_leaves) > 10, (len(a_leaves), len(b_leaves))
    return [jax.tree_util.keystr(path) for (path, x), y in zip(a_leaves, b_leaves, strict=True)
            if not np.array_equal(np.asarray(x), np.asarray(y))]


def kill_when(proc: subprocess.Popen, ready: Callable[[], bool], timeout: float = 900) -> None:
    """SIGKILLs `proc` as soon as `ready()` holds (checked every 20 ms)."""
    deadline = time.time() + timeout
    while not ready():
        if proc.poll() is not None:
            raise RuntimeError(f"the run ended (exit {proc.returncode}) before the kill point")
        if time.time() > deadline:
            proc.kill()
            raise TimeoutError("the kill point was not reached")
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def timed_run(data_dir: str, workdir: Path, steps: int) -> tuple[float, float]:
    """Runs the tiny run to its end: (seconds until its first logged step, seconds per step
    after that)."""
    began = time.time()
    proc = start(data_dir, workdir, steps)
    while not metric_rows(workdir) and proc.poll() is None:
        time.sleep(0.05)
    first, first_step = time.time() - began, metric_rows(workdir)[0]["step"]
    if proc.wait() != 0:
        raise RuntimeError(f"train.py exited with {proc.returncode}")
    return first, (time.time() - began - first) / max(1, steps - first_step)


def main(argv: list[str] | None = None) -> int:
    """The command: reference run, `--points` random kills and reruns, comparison."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=10)
    parser.add_argument("--steps", type=int, default=48)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=None, help="default: a new temporary directory")
    args = parser.parse_args(argv)
    root = Path(args.workdir or tempfile.mkdtemp(prefix="kill_points_"))
    data_dir, reference, killed = str(root / "tfds"), root / "reference", root / "killed"
    rng = random.Random(args.seed)

    startup, per_step = timed_run(data_dir, reference, args.steps)
    print(f"uninterrupted run: {startup:.0f} s to its first logged step, {per_step:.2f} s/step")
    # A third of the kills land in start-up (imports, restore, compilation), the others up to
    # two checkpoint intervals into training (steps, evaluations, checkpoint writes), so the
    # run still has steps left for the next kill.
    span = 2 * SETTINGS["train.checkpoint_every_steps"] * per_step
    for point in range(args.points):
        rows = len(metric_rows(killed))
        proc = start(data_dir, killed, args.steps)
        if rng.random() < 1 / 3:
            delay, phase = rng.uniform(0, startup), "after start"
        else:
            while len(metric_rows(killed)) == rows and proc.poll() is None:
                time.sleep(0.02)
            delay, phase = rng.uniform(0, span), "after its first logged step"
        time.sleep(delay)
        if proc.poll() is not None:
            print(f"kill {point + 1}: the run had already finished; stopping the kills")
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        logged = [int(r["step"]) for r in rows_after(killed, rows)]
        print(f"kill {point + 1}: {delay:.1f} s {phase}; newest checkpoint "
              f"{(checkpoint_steps(killed) or [None])[-1]}, last logged step "
              f"{max(logged, default=None)}")
    run(data_dir, killed, args.steps)
    differ = differing_arrays(reference, killed, args.steps)
    same_eval = final_eval(reference) == final_eval(killed)
    print(f"final state: {'bit-identical' if not differ else 'DIFFERS in ' + ', '.join(differ)}")
    print(f"final evaluation: {final_eval(killed)} "
          f"{'identical' if same_eval else '!= ' + str(final_eval(reference))}")
    print(f"workdirs in {root}")
    return 0 if not differ and same_eval else 1


if __name__ == "__main__":
    sys.exit(main())
