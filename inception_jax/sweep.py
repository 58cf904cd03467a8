"""Run a sweep: every combination of a sweep file's axes, one training run each.

    python -m inception_jax.sweep --sweep=configs/sweeps/residual_scaling.py:cpu \\
        --workdir=sweeps/residual_scaling            # runs them one after another, then plots
    python -m inception_jax.sweep --sweep=... --workdir=... --print_commands   # for a launcher

A sweep file's `get_sweep(arg)` returns a dict with `config` (a config spec such as
"configs/inception_resnet_v1.py:smoke"), `fixed` (overrides for every run, dotted keys) and
`axes` (dotted key → list of values; the key "config" sweeps over config specs) and/or
`variants` (a list of {"name", "config", dotted overrides}, crossed with the axes). Each run
trains in `WORKDIR/<setting>=<value>,...`, so rerunning the command resumes unfinished runs.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import json
import os
import shlex
import subprocess
import sys
import time
from typing import Any

from absl import flags

from inception_jax import cli
from inception_jax.errors import UserError


@dataclasses.dataclass(frozen=True)
class Run:
    """One point of the sweep."""

    name: str  # the workdir's name: its settings
    config: str  # config spec
    overrides: dict[str, Any]


def load_sweep(spec: str):
    """`get_sweep(arg)` of the sweep file `path[:arg]`."""
    path, _, arg = spec.partition(":")
    if not os.path.isfile(path):
        raise UserError(f"No sweep file {path}; see configs/sweeps/.")
    module_spec = importlib.util.spec_from_file_location("sweep_definition", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_sweep(arg or None)


def format_value(value: Any) -> str:
    """A value as the config flag parser reads it: tuples as (a,b,c)."""
    if isinstance(value, (list, tuple)):
        return "(" + ",".join(format_value(v) for v in value) + ")"
    return str(value)


def _short(key: str, value: Any) -> str:
    if key == "config":
        return "config=" + os.path.splitext(os.path.basename(str(value).split(":")[0]))[0]
    if isinstance(value, (list, tuple)):  # a workdir name without brackets or commas
        text = str(value[0]) if len(set(value)) == 1 else "-".join(map(str, value))
    else:
        text = str(value)
    return f"{key.split('.')[-1]}={text}"


def expand(sweep: dict[str, Any]) -> list[Run]:
    """Every variant × every combination of the axes (the last axis varies fastest)."""
    axes = dict(sweep.get("axes", {}))
    variants = list(sweep.get("variants", [{}]))
    if not axes and len(variants) < 2:
        raise UserError("The sweep has nothing to vary: give it `axes` or `variants`.")
    for key, values in axes.items():
        if not isinstance(values, (list, tuple)) or not values:
            raise UserError(f"Sweep axis {key!r} must be a non-empty list, got {values!r}.")
    fixed = dict(sweep.get("fixed", {}))
    runs = []
    for variant in variants:
        variant = dict(variant)
        variant_name = variant.pop("name", "")
        variant_config = variant.pop("config", None)
        for combo in itertools.product(*axes.values()):
            settings = dict(zip(axes, combo, strict=True))
            config = settings.pop("config", None) or variant_config or sweep.get("config")
            if not config:
                raise UserError("The sweep names no config: set `config` or a `config` axis.")
            parts = [variant_name] if variant_name else []
            parts += [_short(k, v) for k, v in zip(axes, combo, strict=True)]
            runs.append(Run(",".join(parts), config, {**fixed, **variant, **settings}))
    return runs


def command(run: Run, workdir: str) -> list[str]:
    """The training command line of `run` (train.py's, as the installed module)."""
    args = [sys.executable, "-m", "inception_jax.train_cli", f"--config={run.config}",
            f"--workdir={os.path.join(workdir, run.name)}"]
    args += [f"--config.{k}={format_value(v)}" for k, v in run.overrides.items()]
    return args


@cli.friendly
def main(argv: list[str]) -> None:
    del argv
    if not _SWEEP.value or not _WORKDIR.value:
        raise UserError("Pass --sweep=configs/sweeps/FILE.py[:arg] and --workdir=DIR.")
    runs = expand(load_sweep(_SWEEP.value))
    if _PRINT.value:
        for run in runs:
            print(shlex.join(command(run, _WORKDIR.value)))
        return
    os.makedirs(_WORKDIR.value, exist_ok=True)
    summary = []
    for i, run in enumerate(runs):
        print(f"[{i + 1}/{len(runs)}] {run.name}", flush=True)
        start = time.perf_counter()
        code = subprocess.run(command(run, _WORKDIR.value)).returncode
        seconds = time.perf_counter() - start
        summary.append({"run": run.name, "exit_code": code, "seconds": round(seconds, 1)})
        print(f"[{i + 1}/{len(runs)}] {run.name}: exit {code} after {seconds:.0f} s", flush=True)
    with open(os.path.join(_WORKDIR.value, "sweep.json"), "w") as f:
        json.dump({"sweep": _SWEEP.value, "runs": summary}, f, indent=2)
    if _PLOT.value:
        from inception_jax.plot import plot_runs

        out = os.path.join(_WORKDIR.value, "sweep.png")
        plot_runs([os.path.join(_WORKDIR.value, r.name) for r in runs], out)
        print(f"plot: {out}")
    failed = [s["run"] for s in summary if s["exit_code"]]
    if failed:
        print(f"{len(failed)} run(s) stopped with an error: {', '.join(failed)}", file=sys.stderr)


if __name__ == "__main__":  # flags exist only when run as a command
    _SWEEP = flags.DEFINE_string("sweep", None, "Sweep file[:arg], e.g. configs/sweeps/x.py:cpu.")
    _WORKDIR = flags.DEFINE_string("workdir", None, "Parent directory of the runs' workdirs.")
    _PRINT = flags.DEFINE_bool("print_commands", False, "Print one command per run; run nothing.")
    _PLOT = flags.DEFINE_bool("plot", True, "Plot the runs into WORKDIR/sweep.png at the end.")
    cli.run(main)
