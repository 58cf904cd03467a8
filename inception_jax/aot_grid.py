"""Compile a grid of configs for TPU topologies, each `python -m inception_jax.aot` in its own
process, and print one table of what the compiler says.

    python -m inception_jax.aot_grid --models=inception_resnet_v2,inception_v4 \\
        --topologies=v5e:4x4,v5p:2x2x2 --per_chip_batches=64 --dtypes=bfloat16 \\
        --remats=false,true --out=aot_results/plan
    python -m inception_jax.aot_grid --models=inception_resnet_v2 --topologies=v5e:2x2 \\
        --print_commands                       # one command a line

Every combination of the axes (models x topologies x per-chip batches x dtypes x remat x
conv impls x scan_unroll x FSDP axis, the last varying fastest) runs in a fresh interpreter:
libtpu reads the topology's environment once per process, and one point's compile cannot
touch the next.
A model's settings come from `--config_dir/<model>.py` (default `configs/`), with the axes as
`--config.*` overrides (the global batch is the per-chip batch times the topology's chips).
Each point writes `OUT/<point>.json` (the aot command's report) and `OUT/<point>.log`;
`OUT/grid.json` holds every report and failure, `OUT/grid.txt` the table also printed. A
config that does not fit is a result ("no" in the fits column), a crash is a failure, and the
exit status is 1 when some point failed. Every figure is a compiler estimate: no TPU runs.
"""

from __future__ import annotations

import itertools
import os
import sys
from typing import Any

from absl import flags

from inception_jax import cli, grid
from inception_jax.bench_grid import MODELS
from inception_jax.errors import UserError
from inception_jax.models.modules import CONV_IMPLS
from inception_jax.topology import GiB, parse_topology

DEFAULTS: dict[str, Any] = {
    "models": ["inception_resnet_v2", "inception_v4"], "topologies": ["v5e:4x4", "v5p:2x2x2"],
    "per_chip_batches": [64], "dtypes": ["bfloat16"], "remats": [False],
    "conv_impls": ["auto"], "scan_unrolls": [0], "fsdp_axes": [1], "eval": False,
    "max_batch": False, "batch_step": 8,
}
LIST_AXES = {"models": str, "topologies": str, "per_chip_batches": int, "dtypes": str,
             "remats": lambda v: {"true": True, "false": False}[v.lower()],  # else KeyError
             "conv_impls": str, "scan_unrolls": int, "fsdp_axes": int}
COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter")


def resolve(**given: Any) -> dict[str, Any]:
    """The grid's settings: the defaults, then the values `given` (None: not given; list axes
    as lists of strings, as the flags parse them). Bad values are a UserError."""
    settings = grid.apply_given(dict(DEFAULTS), given, LIST_AXES)
    grid.check_choices("models", "model", settings["models"], MODELS)
    for topology in settings["topologies"]:
        parse_topology(topology)  # names the accepted form when it is wrong
    grid.check_choices("dtypes", "dtype", settings["dtypes"], grid.DTYPES)
    grid.check_choices("conv_impls", "conv_impl", settings["conv_impls"], CONV_IMPLS)
    if min(settings["per_chip_batches"] + settings["fsdp_axes"]) < 1:
        raise UserError("--per_chip_batches and --fsdp_axes must be >= 1.")
    if min(settings["scan_unrolls"]) < 0:
        raise UserError("--scan_unrolls must be >= 0 (0 = auto).")
    return settings


def point_name(model: str, topology: str, per_chip: int, dtype: str, remat: bool, conv: str,
               unroll: int, fsdp: int, extras: str = "") -> str:
    """The point's file name; `extras` names the flags every point shares that change its
    report (--eval, --max_batch), so that --resume never keeps a report made without them."""
    return (f"{model}_{topology.replace(':', '-')}_b{per_chip}_{dtype}"
            f"{'_remat' if remat else ''}_{conv}_u{unroll}_fsdp{fsdp}{extras}")


def expand(settings: dict[str, Any], config_dir: str = "configs") -> list[dict[str, Any]]:
    """One dict per point of the grid, with its name and its aot command's flags."""
    points = []
    for model, topology, per_chip, dtype, remat, conv, unroll, fsdp in itertools.product(
        settings["models"], settings["topologies"], settings["per_chip_batches"],
        settings["dtypes"], settings["remats"], settings["conv_impls"],
        settings["scan_unrolls"], settings["fsdp_axes"],
    ):
        batch = per_chip * parse_topology(topology).chips
        point_flags = [
            f"--config={os.path.join(config_dir, model + '.py')}", f"--topology={topology}",
            f"--config.train.global_batch_size={batch}",
            f"--config.train.eval_batch_size={batch}", f"--config.model.dtype={dtype}",
            f"--config.model.remat={remat}", f"--config.model.conv_impl={conv}",
            f"--config.model.scan_unroll={unroll}", f"--config.mesh.fsdp_axis={fsdp}",
            "--eval" if settings["eval"] else "--noeval",
        ]
        if settings["max_batch"]:
            point_flags += ["--max_batch", f"--batch_step={settings['batch_step']}"]
        extras = ("_eval" if settings["eval"] else "") + (
            f"_maxb{settings['batch_step']}" if settings["max_batch"] else "")
        name = point_name(model, topology, per_chip, dtype, remat, conv, unroll, fsdp, extras)
        points.append({"name": name, "flags": point_flags})
    return points


def command(point: dict[str, Any], out_dir: str) -> list[str]:
    return [sys.executable, "-m", "inception_jax.aot", *point["flags"],
            f"--out={grid.json_path(out_dir, point['name'])}"]


def _num(value: float | None, spec: str, width: int) -> str:
    return f"{'n/a':>{width}}" if value is None else f"{value:{width}{spec}}"


def _gib(n: float | None) -> str:
    return _num(None if n is None else n / GiB, ".2f", 9)


def table(reports: list[dict[str, Any]], failures: list[dict[str, Any]]) -> str:
    """One line per compiled point (fits: every step compiled fits; the other columns are its
    train step's), then why each step that does not fit does not, then the failures."""
    head = (f"{'model':21}{'topology':11}{'chips':>6}{'b/chip':>7} {'dtype':9}{'remat':6}"
            f"{'conv':8}{'unroll':>6}{'fsdp':>5}{'fits':>5}{'HBM GiB':>9}{'headroom':>9}"
            f"{'compile s':>10}{'TFLOP/chip':>11}{'all-red':>8}{'all-gat':>8}{'red-sc':>7}"
            f"{'max b':>6}")
    lines = [head, "-" * len(head)]
    for r in reports:
        train = r["train"]
        counts = [train.get("collectives", {}).get(c, {}).get("count") for c in COLLECTIVES]
        flops = train.get("analytic_flops_per_chip")
        cells = [
            _num(train.get("compile_s"), ".1f", 10),
            _num(None if flops is None else flops / 1e12, ".3f", 11),
            *(_num(n, "d", w) for n, w in zip(counts, (8, 8, 7), strict=True)),
        ]
        lines.append(
            f"{r['model']:21}{r['topology']:11}{r['chips']:6}{r['per_chip_batch']:7} "
            f"{r['dtype']:9}{str(r['remat']):6}{r['conv_impl']:8}{r['scan_unroll']:6}"
            f"{r['fsdp_axis']:5}"
            f"{'yes' if r.get('fits', train.get('fits')) else 'no':>5}"
            f"{_gib(train.get('needed_bytes'))}"
            f"{_gib(train.get('headroom_bytes'))}{''.join(cells)}"
            f"{r.get('max_batch', {}).get('max_per_chip_batch', ''):>6}"
        )
    if reports:
        lines.append("HBM: the compiler's HBM assignment plus what stays beside the step; "
                     "collectives: per train step. Compiler estimates: no TPU ran these.")
    for r in reports:
        for step in ("train", "eval"):
            s = r.get(step)
            if s is None or s.get("fits"):
                continue
            why = s["error"][:160] if "error" in s else (
                f"needs {_gib(s.get('needed_bytes')).strip()} GiB, "
                f"{_gib(s.get('headroom_bytes')).strip()} GiB of headroom")
            lines.append(f"does not fit: {r['name']} ({step} step): {why}")
    lines.extend(grid.failure_lines(failures))
    return "\n".join(lines)


@cli.friendly
def main(argv: list[str]) -> None:
    """Compiles every point of the grid and prints the combined table."""
    del argv
    settings = resolve(**{key: FLAGS[key].value for key in DEFAULTS})
    out_dir = os.path.abspath(FLAGS.out or os.path.join("aot_results", "grid"))
    points = expand(settings, FLAGS.config_dir)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3")}
    grid.run_grid(points, lambda p: command(p, out_dir), out_dir, env, table, settings,
                  FLAGS.timeout, FLAGS.resume, FLAGS.print_commands,
                  note="compiler estimates for the named TPU slices; no TPU ran these programs")


FLAGS = flags.FLAGS


def define_flags() -> None:
    """The command's flags (defined only when run as a command)."""
    flags.DEFINE_list("models", None, f"Comma-separated, of {', '.join(MODELS)}.")
    flags.DEFINE_list("topologies", None, "TPU slices, e.g. v5e:4x4,v5p:2x2x2,v4:2x2x4.")
    flags.DEFINE_list("per_chip_batches", None, "Images per chip (global = this x chips).")
    flags.DEFINE_list("dtypes", None, "float32 and/or bfloat16.")
    flags.DEFINE_list("remats", None, "false and/or true.")
    flags.DEFINE_list("conv_impls", None, "auto, xla and/or rewrite.")
    flags.DEFINE_list("scan_unrolls", None, "Blocks per loop iteration of a stage (0 = auto).")
    flags.DEFINE_list("fsdp_axes", None, "mesh.fsdp_axis values (1 = pure data parallelism).")
    flags.DEFINE_bool("eval", None, "Also compile each eval step.")
    flags.DEFINE_bool("max_batch", None, "Search each point's largest per-chip batch.")
    flags.DEFINE_integer("batch_step", None, "Granularity of --max_batch.")
    grid.define_common_flags("aot_results/grid")


if __name__ == "__main__":
    define_flags()
    cli.run(main)
