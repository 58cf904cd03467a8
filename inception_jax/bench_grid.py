"""Run a grid of benchmark settings, each `python -m inception_jax.bench` in a fresh process.

    python -m inception_jax.bench_grid --preset=gpu           # 4 models x 2 batches x 2 dtypes
    python -m inception_jax.bench_grid --models=inception_v3,inception_resnet_v2 \\
        --batches=32,128 --image_sizes=299 --dtypes=float32,bfloat16 --timm=eager,compile \\
        --out=bench_results/g
    python -m inception_jax.bench_grid --preset=smoke         # tiny, CPU, a few minutes
    python -m inception_jax.bench_grid --preset=gpu --print_commands   # one command a line

Every combination of the axes (models x widths x batches x image sizes x dtypes x conv
impls, the last varying fastest) runs in its own interpreter, so one setting's compilation
cache, allocator state or crash cannot touch the next. A model's settings come from its config
file, `--config_dir/<model>.py` (default `configs/`, relative to where the command runs, as
`train.py --config` is), with the grid's axes as `--config.*` overrides. Each writes
`OUT/<setting>.json` (the harness's own JSON) and `OUT/<setting>.log` (its console); at the
end `OUT/grid.json` holds every result and every failure, and `OUT/grid.txt` the combined table
that is also printed. The exit status is 1 when some setting failed (the others are still
reported).

The compile times are real compilations, not loads from JAX's persistent cache, unless
`--compile_cache` (passed on to each run) lets the runs load them. When timm runs, the runs get
`XLA_PYTHON_CLIENT_PREALLOCATE=false`, so that JAX does not take 75% of the GPU's memory
before timm's model, in the same process, asks for its share.
"""

from __future__ import annotations

import itertools
import os
import sys
from typing import Any

from absl import flags

from inception_jax import cli, grid
from inception_jax.errors import UserError
from inception_jax.models.modules import CONV_IMPLS

MODELS = ("inception_v3", "inception_v4", "inception_resnet_v1", "inception_resnet_v2")

# Named grids; flags given on the command line override a preset's values.
PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {  # every code path on a laptop CPU in minutes: tiny, no timm
        "models": ["inception_v3", "inception_resnet_v1"], "widths": [0.125], "batches": [2],
        "image_sizes": [75], "dtypes": ["float32"], "warmup": 1, "steps": 3, "timm": "",
    },
    "cpu": {  # full-size networks against timm eager on a CPU host
        "models": ["inception_v3", "inception_resnet_v2"], "batches": [8],
        "image_sizes": [299], "dtypes": ["float32"], "warmup": 1, "steps": 3, "timm": "eager",
    },
    "gpu": {  # one accelerator: every network, two batches, fp32 and bf16, timm eager + compile
        "models": list(MODELS), "batches": [32, 128], "image_sizes": [299],
        "dtypes": ["float32", "bfloat16"], "warmup": 3, "steps": 20, "timm": "eager,compile",
        "pipeline": True,
    },
    "tpu": {  # no torch on TPU: timm would run on the host CPU, so it is left out
        "models": list(MODELS), "batches": [128, 512], "image_sizes": [299],
        "dtypes": ["bfloat16"], "warmup": 3, "steps": 20, "timm": "", "pipeline": True,
    },
}

DEFAULTS: dict[str, Any] = {
    "models": ["inception_resnet_v2"], "widths": [1.0], "batches": [8], "image_sizes": [299],
    "dtypes": ["float32"], "conv_impls": ["auto"], "warmup": 2, "steps": 5, "timm": "eager",
    "remat": False, "pipeline": False, "keras": True,
}
# Axes given as comma-separated lists, and the type of their values.
LIST_AXES = {"models": str, "widths": float, "batches": int, "image_sizes": int, "dtypes": str,
             "conv_impls": str}


def resolve(preset: str | None = None, **given: Any) -> dict[str, Any]:
    """The grid's settings: defaults, then the preset, then the values `given` (None: not
    given; list axes as lists of strings, as the flags parse them)."""
    if preset is not None and preset not in PRESETS:
        raise UserError(f"Unknown preset {preset!r}; known: {', '.join(sorted(PRESETS))}.")
    settings = grid.apply_given({**DEFAULTS, **PRESETS.get(preset or "", {})}, given,
                                LIST_AXES)
    grid.check_choices("models", "model", settings["models"], MODELS)
    grid.check_choices("dtypes", "dtype", settings["dtypes"], grid.DTYPES)
    grid.check_choices("conv_impls", "conv_impl", settings["conv_impls"], CONV_IMPLS)
    for mode in filter(None, settings["timm"].split(",")):
        if mode not in ("eager", "compile"):
            raise UserError(f"--timm takes eager and/or compile, got {mode!r}.")
    return settings


def setting_name(model: str, width: float, batch: int, size: int, dtype: str,
                 conv: str) -> str:
    return f"{model}_w{width:g}_b{batch}_s{size}_{dtype}_{conv}"


def expand(settings: dict[str, Any], config_dir: str = "configs") -> list[dict[str, Any]]:
    """One dict per point of the grid, with its name and its harness flags."""
    points, sizes_with_pipeline = [], set()
    for model, width, batch, size, dtype, conv in itertools.product(
        settings["models"], settings["widths"], settings["batches"], settings["image_sizes"],
        settings["dtypes"], settings["conv_impls"],
    ):
        pipeline = settings["pipeline"] and size not in sizes_with_pipeline
        if pipeline:  # the pipeline depends on the image size only: once per size
            sizes_with_pipeline.add(size)
        points.append({
            "name": setting_name(model, width, batch, size, dtype, conv),
            "flags": [f"--config={os.path.join(config_dir, model + '.py')}",
                      f"--batch={batch}", f"--config.model.width={width:g}",
                      f"--config.data.image_size={size}", f"--config.model.dtype={dtype}",
                      f"--config.model.conv_impl={conv}",
                      f"--config.model.remat={settings['remat']}",
                      f"--warmup={settings['warmup']}", f"--steps={settings['steps']}",
                      f"--timm={settings['timm']}",
                      "--keras" if settings["keras"] else "--nokeras",
                      "--pipeline" if pipeline else "--nopipeline"],
        })
    return points


def command(point: dict[str, Any], out_dir: str) -> list[str]:
    return [sys.executable, "-m", "inception_jax.bench", *point["flags"],
            f"--out={grid.json_path(out_dir, point['name'])}"]


def environment(settings: dict[str, Any]) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if settings["timm"]:
        env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    return env


def _fmt(value: float | None, spec: str, width: int) -> str:
    if value is None or value != value:  # missing or NaN
        return f"{'n/a':>{width}}"
    return f"{value:{width}{spec}}"


def table(runs: list[dict[str, Any]], failures: list[dict[str, Any]]) -> str:
    """One line per setting and mode (train, eval), then failures and pipeline figures."""
    head = (f"{'model':21}{'width':>6}{'batch':>6}{'size':>5} {'dtype':9}{'conv':8}{'mode':6}"
            f"{'img/s':>10}{'step ms':>9}{'compile s':>10}{'GFLOP/step':>11}{'MFU %':>7}"
            f"{'peak MiB':>9}{'timm img/s':>11}{'ours/timm':>10}")
    lines = [head, "-" * len(head)]
    for run in runs:
        for r in run["ours"]:
            lines.append(
                f"{run['model']:21}{run['width']:6g}{run['batch']:6}{run['image_size']:5} "
                f"{run['dtype']:9}{run['conv_impl']:8}{r['mode']:6}"
                + _fmt(r["images_per_s"], ".2f", 10)
                + _fmt(1e3 * r["step_time_median_s"], ".1f", 9)
                + _fmt(r["compile_s"], ".1f", 10)
                + _fmt(r["flops_per_step"] / 1e9, ".2f", 11)
                + _fmt(100 * r["mfu"], ".1f", 7)
                + _fmt(r["peak_memory_bytes"] / 2**20, ".0f", 9)
                + _fmt(r.get("timm_images_per_s"), ".2f", 11)
                + _fmt(r.get("ratio_vs_timm"), ".2f", 10)
            )
    if runs:
        first = runs[0]
        lines.append(f"backend {first['backend']}: {first['device_count']}x "
                     f"{first['device_kind']}; MFU against {first['peak_source']}")
    for run in runs:
        p = run.get("pipeline")
        if p:
            lines.append(f"input pipeline at {p['image_size']}: {p['images_per_s']:.0f} img/s "
                         f"per host, {p['images_per_s_per_core']:.1f} per core "
                         f"({p['cores']} cores)")
    lines.extend(grid.failure_lines(failures))
    return "\n".join(lines)


@cli.friendly
def main(argv: list[str]) -> None:
    del argv
    settings = resolve(FLAGS.preset, **{key: FLAGS[key].value for key in DEFAULTS})
    out_dir = os.path.abspath(FLAGS.out or os.path.join(
        "bench_results", f"grid_{FLAGS.preset or 'custom'}"))
    points = expand(settings, FLAGS.config_dir)
    if FLAGS.compile_cache:
        for point in points:
            point["flags"].append("--compile_cache")
    grid.run_grid(points, lambda p: command(p, out_dir), out_dir, environment(settings),
                  table, settings, FLAGS.timeout, FLAGS.resume, FLAGS.print_commands)


FLAGS = flags.FLAGS


def define_flags() -> None:
    """The command's flags (defined only when run as a command)."""
    flags.DEFINE_string("preset", None, f"A named grid ({', '.join(sorted(PRESETS))}); the "
                        "flags below override its values.")
    flags.DEFINE_list("models", None, f"Comma-separated, of {', '.join(MODELS)}.")
    flags.DEFINE_list("widths", None, "Width multipliers (ours only).")
    flags.DEFINE_list("batches", None, "Global batch sizes.")
    flags.DEFINE_list("image_sizes", None, "Input sizes.")
    flags.DEFINE_list("dtypes", None, "float32 and/or bfloat16.")
    flags.DEFINE_list("conv_impls", None, "auto, xla and/or rewrite.")
    flags.DEFINE_integer("warmup", None, "Untimed steps after compilation.")
    flags.DEFINE_integer("steps", None, "Timed steps.")
    flags.DEFINE_string("timm", None, "timm modes for every setting: eager,compile; '' for none.")
    flags.DEFINE_bool("keras", None, "Compare with Keras on the JAX backend.")
    flags.DEFINE_bool("remat", None, "Rematerialise each block in the backward pass.")
    flags.DEFINE_bool("pipeline", None, "Time the input pipeline (once per image size).")
    grid.define_common_flags("bench_results/grid_<preset or 'custom'>")
    flags.DEFINE_bool("compile_cache", False, "Let the runs load compilations from JAX's cache.")


if __name__ == "__main__":
    define_flags()
    cli.run(main)
