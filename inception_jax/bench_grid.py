"""Run a grid of benchmark settings, each `python -m inception_jax.bench` in a fresh process.

    python -m inception_jax.bench_grid --preset=gpu           # 4 models x 2 batches x 2 dtypes
    python -m inception_jax.bench_grid --models=inception_v3,inception_resnet_v2 \\
        --batches=32,128 --image-sizes=299 --dtypes=float32,bfloat16 --timm=eager,compile \\
        --out=bench_results/g
    python -m inception_jax.bench_grid --preset=smoke         # tiny, CPU, a few minutes
    python -m inception_jax.bench_grid --preset=gpu --print-commands   # one command a line

Every combination of the axes (models x widths x batches x image sizes x dtypes x conv
impls, the last varying fastest) runs in its own interpreter, so one setting's compilation
cache, allocator state or crash cannot touch the next. Each writes `OUT/<setting>.json` (the
harness's own JSON) and `OUT/<setting>.log` (its console); at the end `OUT/grid.json` holds
every result and every failure, and `OUT/grid.txt` the combined table that is also printed.
The exit status is 1 when some setting failed (the others are still reported).

By default the runs get `JAX_ENABLE_COMPILATION_CACHE=false`, so that the compile times are
real compilations rather than loads from the persistent cache (`--compile-cache` keeps it),
and, when timm runs, `XLA_PYTHON_CLIENT_PREALLOCATE=false`, so that JAX does not take 75% of
the GPU's memory before timm's model, in the same process, asks for its share.
This file imports neither JAX nor torch; flags take `--image-sizes` and `--image_sizes` alike.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import os
import shlex
import subprocess
import sys
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

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
    "remat": False, "pipeline": False,
}


def _csv(kind: type):
    def parse(text: str) -> list:
        values = [v.strip() for v in text.split(",") if v.strip()]
        if not values:
            raise argparse.ArgumentTypeError("needs at least one value")
        return [kind(v) for v in values]

    return parse


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m inception_jax.bench_grid",
        description="Runs `python -m inception_jax.bench` over a grid of settings, each in a "
        "fresh process, and writes one combined JSON and table.",
    )
    p.add_argument("--preset", choices=sorted(PRESETS), help="a named grid (flags override)")
    p.add_argument("--models", type=_csv(str), help=f"comma-separated, of {', '.join(MODELS)}")
    p.add_argument("--widths", type=_csv(float), help="width multipliers (ours only)")
    p.add_argument("--batches", type=_csv(int), help="global batch sizes")
    p.add_argument("--image-sizes", "--image_sizes", dest="image_sizes", type=_csv(int))
    p.add_argument("--dtypes", type=_csv(str), help="float32 and/or bfloat16")
    p.add_argument("--conv-impls", "--conv_impls", dest="conv_impls", type=_csv(str),
                   help="auto, xla and/or rewrite")
    p.add_argument("--warmup", type=int, help="untimed steps after compilation")
    p.add_argument("--steps", type=int, help="timed steps")
    p.add_argument("--timm", help="timm modes for every setting: eager,compile; '' for none")
    p.add_argument("--no-timm", "--no_timm", dest="timm", action="store_const", const="",
                   help="same as --timm=''")
    p.add_argument("--remat", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--pipeline", action=argparse.BooleanOptionalAction, default=None,
                   help="time the input pipeline (once per image size)")
    p.add_argument("--out", default=None,
                   help="output directory (default bench_results/grid_<preset or 'custom'>)")
    p.add_argument("--timeout", type=float, default=0, help="seconds per setting; 0: none")
    p.add_argument("--resume", action="store_true",
                   help="skip settings whose JSON already exists in the output directory")
    p.add_argument("--compile-cache", "--compile_cache", dest="compile_cache",
                   action="store_true", help="let the runs load compilations from JAX's cache")
    p.add_argument("--print-commands", "--print_commands", dest="print_commands",
                   action="store_true", help="print one command per setting and exit")
    return p


def resolve(args: argparse.Namespace) -> dict[str, Any]:
    """The grid's settings: defaults, then the preset, then the flags given."""
    settings = {**DEFAULTS, **PRESETS.get(args.preset or "", {})}
    for key in DEFAULTS:
        value = getattr(args, key)
        if value is not None:
            settings[key] = value
    for model in settings["models"]:
        if model not in MODELS:
            raise ValueError(f"Unknown model {model!r}; known: {', '.join(MODELS)}.")
    for dtype in settings["dtypes"]:
        if dtype not in ("float32", "bfloat16"):
            raise ValueError(f"--dtypes takes float32 and/or bfloat16, got {dtype!r}.")
    for conv in settings["conv_impls"]:
        if conv not in ("auto", "xla", "rewrite"):
            raise ValueError(f"--conv-impls takes auto, xla and/or rewrite, got {conv!r}.")
    for mode in filter(None, settings["timm"].split(",")):
        if mode not in ("eager", "compile"):
            raise ValueError(f"--timm takes eager and/or compile, got {mode!r}.")
    return settings


def setting_name(model: str, width: float, batch: int, size: int, dtype: str,
                 conv: str) -> str:
    return f"{model}_w{width:g}_b{batch}_s{size}_{dtype}_{conv}"


def expand(settings: dict[str, Any]) -> list[dict[str, Any]]:
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
            "flags": [f"--model={model}", f"--width={width:g}", f"--batch={batch}",
                      f"--image_size={size}", f"--dtype={dtype}", f"--conv_impl={conv}",
                      f"--warmup={settings['warmup']}", f"--steps={settings['steps']}",
                      f"--timm={settings['timm']}",
                      "--remat" if settings["remat"] else "--noremat",
                      "--pipeline" if pipeline else "--nopipeline"],
        })
    return points


def command(point: dict[str, Any], out_dir: str) -> list[str]:
    json_path = os.path.join(out_dir, point["name"] + ".json")
    return [sys.executable, "-m", "inception_jax.bench", *point["flags"], f"--out={json_path}"]


def environment(settings: dict[str, Any], compile_cache: bool) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if not compile_cache:
        env["JAX_ENABLE_COMPILATION_CACHE"] = "false"
    if settings["timm"]:
        env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    return env


def run_point(point: dict[str, Any], out_dir: str, env: dict[str, str],
              timeout: float) -> dict[str, Any]:
    """Runs one setting; its result JSON, or a failure record."""
    cmd = command(point, out_dir)
    json_path = cmd[-1].removeprefix("--out=")
    log_path = os.path.join(out_dir, point["name"] + ".log")
    start = time.perf_counter()
    with open(log_path, "w") as log:
        try:
            proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                  timeout=timeout or None)
            returncode = proc.returncode
        except subprocess.TimeoutExpired:
            returncode = None
    wall = time.perf_counter() - start
    if returncode == 0 and os.path.isfile(json_path):
        with open(json_path) as f:
            result = json.load(f)
        result.update(name=point["name"], command=shlex.join(cmd), wall_s=wall)
        return result
    with open(log_path) as f:
        tail = f.read()[-3000:]
    return {"name": point["name"], "command": shlex.join(cmd), "wall_s": wall,
            "returncode": returncode, "timed_out": returncode is None, "log": log_path,
            "log_tail": tail}


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
    for f in failures:
        why = "timed out" if f["timed_out"] else f"exit status {f['returncode']}"
        lines.append(f"FAILED {f['name']}: {why}; see {f['log']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        settings = resolve(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out_dir = os.path.abspath(args.out or os.path.join(
        "bench_results", f"grid_{args.preset or 'custom'}"))
    points = expand(settings)
    if args.print_commands:
        for point in points:
            print(shlex.join(command(point, out_dir)))
        return 0
    os.makedirs(out_dir, exist_ok=True)
    env = environment(settings, args.compile_cache)
    runs, failures = [], []
    for i, point in enumerate(points, 1):
        json_path = os.path.join(out_dir, point["name"] + ".json")
        if args.resume and os.path.isfile(json_path):
            with open(json_path) as f:
                result = {**json.load(f), "name": point["name"], "resumed": True}
            status = "kept"
        else:
            result = run_point(point, out_dir, env, args.timeout)
            status = f"{result['wall_s']:.0f} s"
        if "ours" in result:
            runs.append(result)
        else:
            failures.append(result)
            status = "FAILED"
        print(f"[{i}/{len(points)}] {point['name']}: {status}", flush=True)
        if status == "FAILED":
            print(result["log_tail"][-1500:], file=sys.stderr, flush=True)
    text = table(runs, failures)
    combined = {
        "grid": settings, "out_dir": out_dir,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "runs": runs, "failures": failures,
    }
    with open(os.path.join(out_dir, "grid.json"), "w") as f:
        json.dump(combined, f, indent=2)
    with open(os.path.join(out_dir, "grid.txt"), "w") as f:
        f.write(text + "\n")
    print(text)
    print(f"-> {os.path.join(out_dir, 'grid.json')}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
