"""Run a sweep: every combination of a sweep file's axes, one training run each.

    python -m inception_jax.sweep --sweep=configs/sweeps/residual_scaling.py:cpu \\
        --workdir=sweeps/residual_scaling            # runs them one after another, then plots
    python -m inception_jax.sweep --sweep=... --workdir=... --population  # as populations
    python -m inception_jax.sweep --sweep=... --workdir=... --print_commands   # for a launcher

With `--population`, runs that differ only in population knobs (`hparams.POPULATION_KNOBS`:
residual scales, learning rate, seed, ...) train together as one program
(`inception_jax.population`): one process per group in `WORKDIR/<group>`, each run in
`WORKDIR/<group>/<its settings>`. Groups are named by the other settings they differ in.

A sweep file's `get_sweep(arg)` returns a dict with `config` (a config spec such as
"configs/inception_resnet_v1.py:smoke"), `fixed` (overrides for every run, dotted keys) and
`axes` (dotted key → list of values; the key "config" sweeps over config specs) and/or
`variants` (a list of {"name", "config", dotted overrides}, crossed with the axes), and
optionally `map` (two dotted keys: the runs are also drawn as a grid of their outcomes). Each run
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
from inception_jax.hparams import POPULATION_KNOBS
from inception_jax.run_names import setting_name


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
            parts += [setting_name(k, v) for k, v in zip(axes, combo, strict=True)]
            runs.append(Run(",".join(parts), config, {**fixed, **variant, **settings}))
    return runs


@dataclasses.dataclass(frozen=True)
class Group:
    """Runs that differ only in population knobs: one population, one process."""

    name: str  # its workdir's name: the non-population settings that set it apart
    config: str
    overrides: dict[str, Any]  # shared by its runs
    runs: tuple[Run, ...]

    def members(self) -> tuple[dict[str, Any], ...]:
        """`population.members`: each run's population knobs and its name."""
        return tuple({"name": r.name, **{k: v for k, v in r.overrides.items()
                                         if k in POPULATION_KNOBS}} for r in self.runs)


def group(runs: list[Run]) -> list[Group]:
    """The runs grouped into populations, in the order of their first run."""
    keyed: dict[Any, list[Run]] = {}
    for run in runs:
        shared = {k: v for k, v in run.overrides.items() if k not in POPULATION_KNOBS}
        keyed.setdefault((run.config, repr(sorted(shared.items()))), []).append(run)
    shared_of = [{k: v for k, v in rs[0].overrides.items() if k not in POPULATION_KNOBS}
                 for rs in keyed.values()]
    configs = [rs[0].config for rs in keyed.values()]
    keys = list(dict.fromkeys(k for s in shared_of for k in s))
    differ = [k for k in keys if len({repr(s.get(k)) for s in shared_of}) > 1]
    groups = []
    for rs, shared, config in zip(keyed.values(), shared_of, configs, strict=True):
        parts = [setting_name("config", config)] if len(set(configs)) > 1 else []
        parts += [setting_name(k, shared[k]) for k in differ if k in shared]
        groups.append(Group(",".join(parts) or ("population" if len(keyed) == 1 else "default"),
                            config, shared, tuple(rs)))
    return groups


def group_command(g: Group, workdir: str) -> list[str]:
    """The training command line of a population (one process for its runs)."""
    args = command(Run(g.name, g.config, g.overrides), workdir)
    return args + [f"--config.population.members={g.members()!r}"]


def member_dirs(groups: list[Group], workdir: str) -> list[str]:
    """Every run's folder when the sweep runs as populations."""
    return [os.path.join(workdir, g.name, r.name) for g in groups for r in g.runs]


def command(run: Run, workdir: str) -> list[str]:
    """The training command line of `run` (train.py's, as the installed module)."""
    args = [sys.executable, "-m", "inception_jax.train_cli", f"--config={run.config}",
            f"--workdir={os.path.join(workdir, run.name)}"]
    args += [f"--config.{k}={format_value(v)}" for k, v in run.overrides.items()]
    return args


def write_map(run_dirs: list[str], x_key: str, y_key: str, workdir: str) -> None:
    """The sweep's runs as a map of `x_key` by `y_key`: WORKDIR/death_map.png and .md."""
    from inception_jax.plot import death_map

    table = death_map(run_dirs, x_key, y_key, os.path.join(workdir, "death_map.png"))
    with open(os.path.join(workdir, "death_map.md"), "w") as f:
        f.write(table + "\n")
    print(f"map: {os.path.join(workdir, 'death_map.png')}\n{table}")


@cli.friendly
def main(argv: list[str]) -> None:
    del argv
    if not _SWEEP.value or not _WORKDIR.value:
        raise UserError("Pass --sweep=configs/sweeps/FILE.py[:arg] and --workdir=DIR.")
    sweep = load_sweep(_SWEEP.value)
    runs = expand(sweep)
    if _POPULATION.value:
        groups = group(runs)
        jobs = [(g.name, group_command(g, _WORKDIR.value)) for g in groups]
        run_dirs = member_dirs(groups, _WORKDIR.value)
    else:
        jobs = [(r.name, command(r, _WORKDIR.value)) for r in runs]
        run_dirs = [os.path.join(_WORKDIR.value, r.name) for r in runs]
    if _PRINT.value:
        for _, args in jobs:
            print(shlex.join(args))
        return
    os.makedirs(_WORKDIR.value, exist_ok=True)
    summary = []
    for i, (name, args) in enumerate(jobs):
        print(f"[{i + 1}/{len(jobs)}] {name}", flush=True)
        start = time.perf_counter()
        code = subprocess.run(args).returncode
        seconds = time.perf_counter() - start
        summary.append({"run": name, "exit_code": code, "seconds": round(seconds, 1)})
        print(f"[{i + 1}/{len(jobs)}] {name}: exit {code} after {seconds:.0f} s", flush=True)
    with open(os.path.join(_WORKDIR.value, "sweep.json"), "w") as f:
        json.dump({"sweep": _SWEEP.value, "population": _POPULATION.value, "runs": summary,
                   "seconds": round(sum(s["seconds"] for s in summary), 1)}, f, indent=2)
    if _PLOT.value:
        from inception_jax.plot import plot_runs

        out = os.path.join(_WORKDIR.value, "sweep.png")
        plot_runs(run_dirs, out)
        print(f"plot: {out}")
    if _PLOT.value and sweep.get("map"):
        write_map(run_dirs, *sweep["map"], _WORKDIR.value)
    failed = [s["run"] for s in summary if s["exit_code"]]
    if failed:
        print(f"{len(failed)} run(s) stopped with an error: {', '.join(failed)}", file=sys.stderr)


if __name__ == "__main__":  # flags exist only when run as a command
    _SWEEP = flags.DEFINE_string("sweep", None, "Sweep file[:arg], e.g. configs/sweeps/x.py:cpu.")
    _WORKDIR = flags.DEFINE_string("workdir", None, "Parent directory of the runs' workdirs.")
    _PRINT = flags.DEFINE_bool("print_commands", False, "Print one command per run; run nothing.")
    _PLOT = flags.DEFINE_bool("plot", True, "Plot the runs into WORKDIR/sweep.png at the end.")
    _POPULATION = flags.DEFINE_bool(
        "population", False,
        "Train runs that differ only in population knobs together, one program per group.")
    cli.run(main)
