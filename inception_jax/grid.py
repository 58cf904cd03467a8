"""Run the points of a grid, each a command in a fresh process that writes one JSON result.

The grid commands (`bench_grid`, `aot_grid`) expand their axes into points; this module runs
them one after another: `OUT/<name>.json` is the point's result, `OUT/<name>.log` its console,
and a point whose command fails or writes no JSON is a failure record (with its log's tail),
not the end of the grid. `--resume` keeps the JSON of points already done.
"""

from __future__ import annotations

import datetime
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from inception_jax.errors import UserError

DTYPES = ("float32", "bfloat16")


def apply_given(settings: dict[str, Any], given: dict[str, Any],
                list_axes: dict[str, Callable[[str], Any]]) -> dict[str, Any]:
    """`settings` with the values `given` (None: not given); a list axis arrives as a list of
    strings, as absl's list flags parse it, and is converted by `list_axes[axis]`."""
    for key, value in given.items():
        if key not in settings:
            raise TypeError(f"unknown setting {key!r}")
        if value is None:
            continue
        if key in list_axes:
            try:
                value = [list_axes[key](v) for v in value]
            except (ValueError, KeyError) as e:
                raise UserError(f"--{key}: {e}") from None
            if not value:
                raise UserError(f"--{key} needs at least one value.")
        settings[key] = value
    return settings


def check_choices(flag: str, noun: str, values: list[Any], known: tuple[Any, ...]) -> None:
    """A UserError naming the first of `values` that is not one of `known`."""
    for value in values:
        if value not in known:
            raise UserError(f"Unknown {noun} {value!r} in --{flag}; known: "
                            f"{', '.join(map(str, known))}.")


def json_path(out_dir: str, name: str) -> str:
    """Where the point `name` writes its result."""
    return os.path.join(out_dir, name + ".json")


def run_point(name: str, cmd: list[str], out_dir: str, env: dict[str, str],
              timeout: float) -> dict[str, Any]:
    """Runs one point's command; its result JSON (with name, command, wall_s), or a failure
    record (with returncode, timed_out, log, log_tail)."""
    result_path = json_path(out_dir, name)
    log_path = os.path.join(out_dir, name + ".log")
    start = time.perf_counter()
    with open(log_path, "w") as log:
        try:
            proc = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                  timeout=timeout or None)
            returncode = proc.returncode
        except subprocess.TimeoutExpired:
            returncode = None
    wall = time.perf_counter() - start
    if returncode == 0 and os.path.isfile(result_path):
        with open(result_path) as f:
            result = json.load(f)
        result.update(name=name, command=shlex.join(cmd), wall_s=wall)
        return result
    with open(log_path) as f:
        tail = f.read()[-3000:]
    return {"name": name, "command": shlex.join(cmd), "wall_s": wall, "failed": True,
            "returncode": returncode, "timed_out": returncode is None, "log": log_path,
            "log_tail": tail}


def run_points(points: list[dict[str, Any]], command: Callable[[dict[str, Any]], list[str]],
               out_dir: str, env: dict[str, str], timeout: float = 0,
               resume: bool = False) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Runs every point (a dict with a "name") in order, printing a line each: (results,
    failures). `command(point)` is its argv, which must write `json_path(out_dir, name)`."""
    os.makedirs(out_dir, exist_ok=True)
    runs, failures = [], []
    for i, point in enumerate(points, 1):
        path = json_path(out_dir, point["name"])
        if resume and os.path.isfile(path):
            with open(path) as f:
                result = {**json.load(f), "name": point["name"], "resumed": True}
            status = "kept"
        else:
            result = run_point(point["name"], command(point), out_dir, env, timeout)
            status = f"{result['wall_s']:.0f} s"
        if result.get("failed"):
            failures.append(result)
            status = "FAILED"
        else:
            runs.append(result)
        print(f"[{i}/{len(points)}] {point['name']}: {status}", flush=True)
        if status == "FAILED":
            print(result["log_tail"][-1500:], file=sys.stderr, flush=True)
    return runs, failures


def failure_lines(failures: list[dict[str, Any]]) -> list[str]:
    """One table line per failed point."""
    return [f"FAILED {f['name']}: "
            f"{'timed out' if f['timed_out'] else 'exit status ' + str(f['returncode'])}; "
            f"see {f['log']}" for f in failures]


def write_combined(out_dir: str, combined: dict[str, Any], text: str) -> str:
    """Writes OUT/grid.json and OUT/grid.txt; returns the JSON's path."""
    path = os.path.join(out_dir, "grid.json")
    with open(path, "w") as f:
        json.dump(combined, f, indent=2)
    with open(os.path.join(out_dir, "grid.txt"), "w") as f:
        f.write(text + "\n")
    return path


def run_grid(points: list[dict[str, Any]], command: Callable[[dict[str, Any]], list[str]],
             out_dir: str, env: dict[str, str], table: Callable[..., str],
             settings: dict[str, Any], timeout: float = 0, resume: bool = False,
             print_commands: bool = False, **combined_extra: Any) -> None:
    """A grid command's body: prints the commands (`print_commands`) or runs the points,
    prints `table(runs, failures)`, writes OUT/grid.json and grid.txt; exit status 1 when a
    point failed."""
    if print_commands:
        for point in points:
            print(shlex.join(command(point)))
        return
    runs, failures = run_points(points, command, out_dir, env, timeout, resume)
    text = table(runs, failures)
    combined = {
        "grid": settings, "out_dir": out_dir,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **combined_extra, "runs": runs, "failures": failures,
    }
    path = write_combined(out_dir, combined, text)
    print(text)
    print(f"-> {path}")
    if failures:
        sys.exit(1)


def define_common_flags(default_out: str) -> None:
    """The flags every grid command has: --config_dir, --out, --timeout, --resume,
    --print_commands."""
    from absl import flags

    flags.DEFINE_string("config_dir", "configs", "Folder of the models' config files.")
    flags.DEFINE_string("out", None, f"Output directory (default {default_out}).")
    flags.DEFINE_float("timeout", 0, "Seconds per point; 0: none.")
    flags.DEFINE_bool("resume", False, "Skip points whose JSON already exists in the output.")
    flags.DEFINE_bool("print_commands", False, "Print one command per point and exit.")
