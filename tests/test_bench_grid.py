"""The benchmark grid driver: its settings, and one tiny setting run end to end (no speeds)."""

import json
import math
import subprocess
import sys

import pytest

from inception_jax import bench_grid as grid
from tests.helpers import ROOT, run_env

TINY = ["--models=inception_resnet_v1", "--widths=0.125", "--batches=2", "--image-sizes=75",
        "--warmup=0", "--steps=1", "--no-timm"]


def test_presets_expand_to_unique_settings():
    for name in grid.PRESETS:
        settings = grid.resolve(grid.parser().parse_args([f"--preset={name}"]))
        points = grid.expand(settings)
        assert points and len({p["name"] for p in points}) == len(points)
        sizes = settings["image_sizes"] if settings["pipeline"] else []
        assert sum("--pipeline" in p["flags"] for p in points) == len(sizes)  # once per size
    gpu = grid.expand(grid.resolve(grid.parser().parse_args(["--preset=gpu"])))
    assert len(gpu) == 4 * 2 * 2 and "--timm=eager,compile" in gpu[0]["flags"]


def test_flags_override_the_preset_and_are_checked(capsys):
    args = grid.parser().parse_args(["--preset=gpu", "--models=inception_v3",
                                     "--image_sizes=75,99", "--no-timm", "--remat"])
    settings = grid.resolve(args)
    assert settings["models"] == ["inception_v3"] and settings["image_sizes"] == [75, 99]
    assert settings["batches"] == [32, 128] and settings["timm"] == "" and settings["remat"]
    assert grid.main(["--preset=smoke", "--print-commands", "--out=/x"]) == 0
    commands = capsys.readouterr().out.splitlines()
    assert len(commands) == 2 and all("-m inception_jax.bench" in c for c in commands)
    assert "--out=/x/inception_v3_w0.125_b2_s75_float32_auto.json" in commands[0]
    for bad in (["--models=resnet50"], ["--dtypes=float16"], ["--timm=jit"],
                ["--conv-impls=fft"]):
        assert grid.main(bad + ["--print-commands"]) == 2
        assert "error:" in capsys.readouterr().err


def _grid(out, *extra):
    return subprocess.run([sys.executable, "-m", "inception_jax.bench_grid", *TINY, f"--out={out}",
                           *extra], env=run_env(), capture_output=True, text=True, cwd=ROOT)


@pytest.mark.slow  # ~45 s on 2 cores with a cold compilation cache, ~17 s warm
def test_tiny_grid_writes_combined_json_and_table(tmp_path):
    # --compile-cache: the same program as test_bench's CLI test, so a warm cache is reused.
    proc = _grid(tmp_path, "--compile-cache")
    assert proc.returncode == 0, proc.stderr[-3000:]
    combined = json.loads((tmp_path / "grid.json").read_text())
    assert combined["failures"] == [] and len(combined["runs"]) == 1
    run = combined["runs"][0]
    assert run["name"] == "inception_resnet_v1_w0.125_b2_s75_float32_auto"
    assert run["backend"] == "cpu" and run["device_count"] == 1 and run["timm"] == []
    assert run["peak_source"].startswith("measured") and run["peak_flops_per_s"] > 0
    assert [r["mode"] for r in run["ours"]] == ["train", "eval"]
    for r in run["ours"]:
        assert r["images_per_s"] > 0 and len(r["step_times_s"]) == 1
        assert r["flops_per_step"] > 0 and 0 < r["mfu"] and math.isfinite(r["mfu"])
        assert r["compile_s"] > 0 and r["peak_memory_bytes"] > 0
    assert (tmp_path / f"{run['name']}.json").is_file()
    assert "img/s" in (tmp_path / f"{run['name']}.log").read_text()  # the harness's table
    text = (tmp_path / "grid.txt").read_text()
    assert "ours/timm" in text and "inception_resnet_v1" in text and "n/a" in text
    assert text.strip() in proc.stdout

    kept = _grid(tmp_path, "--resume")  # nothing reruns
    assert kept.returncode == 0 and "[1/1] inception_resnet_v1_w0.125_b2_s75_float32_auto: kept" \
        in kept.stdout


def test_a_failed_setting_is_reported_not_fatal(tmp_path):
    proc = _grid(tmp_path, "--timeout=0.01")  # killed at once
    assert proc.returncode == 1
    combined = json.loads((tmp_path / "grid.json").read_text())
    assert combined["runs"] == [] and len(combined["failures"]) == 1
    failure = combined["failures"][0]
    assert failure["timed_out"] and "inception_jax.bench" in failure["command"]
    assert "FAILED inception_resnet_v1" in proc.stdout
