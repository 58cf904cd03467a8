"""The benchmark grid driver: its settings, and one tiny setting run end to end (no speeds)."""

import json
import math
import subprocess
import sys

import pytest

from inception_jax import bench_grid as grid
from tests.helpers import ROOT, run_env

TINY = ["--models=inception_resnet_v1", "--widths=0.125", "--batches=8", "--image_sizes=75",
        "--warmup=0", "--steps=1", "--timm="]


def test_presets_expand_to_unique_settings():
    for name in grid.PRESETS:
        settings = grid.resolve(name)
        points = grid.expand(settings)
        assert points and len({p["name"] for p in points}) == len(points)
        sizes = settings["image_sizes"] if settings["pipeline"] else []
        assert sum("--pipeline" in p["flags"] for p in points) == len(sizes)  # once per size
    gpu = grid.expand(grid.resolve("gpu"))
    assert len(gpu) == 4 * 2 * 2 and "--timm=eager,compile" in gpu[0]["flags"]
    # A model's settings are its config file, with the grid's axes as overrides.
    assert gpu[0]["flags"][:3] == ["--config=configs/inception_v3.py", "--batch=32",
                                   "--config.model.width=1"]
    assert "--config.model.dtype=float32" in gpu[0]["flags"]


def test_flags_override_the_preset_and_are_checked():
    settings = grid.resolve("gpu", models=["inception_v3"], image_sizes=["75", "99"], timm="",
                            remat=True, batches=None)
    assert settings["models"] == ["inception_v3"] and settings["image_sizes"] == [75, 99]
    assert settings["batches"] == [32, 128] and settings["timm"] == "" and settings["remat"]
    assert "--config.model.remat=True" in grid.expand(settings, "/c")[0]["flags"]
    assert "--config=/c/inception_v3.py" in grid.expand(settings, "/c")[0]["flags"]
    for bad in ({"models": ["resnet50"]}, {"dtypes": ["float16"]}, {"timm": "jit"},
                {"conv_impls": ["fft"]}, {"batches": ["a"]}, {"widths": []}):
        with pytest.raises(grid.UserError):
            grid.resolve(**bad)


def test_cli_prints_commands_and_reports_user_errors():
    proc = _grid("/x", "--print_commands", args=["--preset=smoke"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    commands = proc.stdout.splitlines()
    assert len(commands) == 2 and all("-m inception_jax.bench" in c for c in commands)
    assert "--out=/x/inception_v3_w0.125_b2_s75_float32_auto.json" in commands[0]
    assert "--compile_cache" not in commands[0]  # compile times are compilations by default
    cached = _grid("/x", "--print_commands", "--compile_cache", args=["--preset=smoke"])
    assert all("--compile_cache" in c for c in cached.stdout.splitlines())
    bad = _grid("/x", "--print_commands", args=["--models=resnet50"])
    assert bad.returncode == 2 and "error: Unknown model 'resnet50'" in bad.stderr


def _grid(out, *extra, args=TINY):
    command = [sys.executable, "-m", "inception_jax.bench_grid", *args, f"--out={out}", *extra]
    return subprocess.run(command, env=run_env(devices=8), capture_output=True, text=True,
                          cwd=ROOT)


@pytest.fixture
def tiny_configs(tmp_path):
    """A config folder whose IR-v1 has no residual block (the grid reads `--config_dir`)."""
    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / "inception_resnet_v1.py").write_text(
        "from configs import inception_resnet_v1\n\n\n"
        "def get_config(arg=None):\n"
        "    c = inception_resnet_v1.get_config(arg)\n"
        "    c.model.blocks = (0, 0, 0)\n"
        "    return c\n"
    )
    return f"--config_dir={folder}"


@pytest.mark.slow  # ~45 s on 2 cores with a cold compilation cache, ~17 s warm
def test_tiny_grid_writes_combined_json_and_table(tmp_path, tiny_configs):
    # --compile_cache, passed on to the run: the same programs (8 devices, batch 8) as
    # test_bench's harness and CLI tests, so whichever runs later loads them from the cache.
    proc = _grid(tmp_path / "out", "--compile_cache", tiny_configs)
    assert proc.returncode == 0, proc.stderr[-3000:]
    combined = json.loads((tmp_path / "out" / "grid.json").read_text())
    assert combined["failures"] == [] and len(combined["runs"]) == 1
    run = combined["runs"][0]
    assert run["name"] == "inception_resnet_v1_w0.125_b8_s75_float32_auto"
    assert run["backend"] == "cpu" and run["device_count"] == 8 and run["timm"] == []
    assert run["peak_source"].startswith("measured") and run["peak_flops_per_s"] > 0
    assert [r["mode"] for r in run["ours"]] == ["train", "eval"]
    for r in run["ours"]:
        assert r["images_per_s"] > 0 and len(r["step_times_s"]) == 1
        assert r["flops_per_step"] > 0 and 0 < r["mfu"] and math.isfinite(r["mfu"])
        assert r["compile_s"] > 0 and r["peak_memory_bytes"] > 0
    assert (tmp_path / "out" / f"{run['name']}.json").is_file()
    assert "img/s" in (tmp_path / "out" / f"{run['name']}.log").read_text()  # the harness's table
    text = (tmp_path / "out" / "grid.txt").read_text()
    assert "ours/timm" in text and "inception_resnet_v1" in text and "n/a" in text
    assert text.strip() in proc.stdout

    kept = _grid(tmp_path / "out", "--resume", tiny_configs)  # nothing reruns
    assert kept.returncode == 0 and "[1/1] inception_resnet_v1_w0.125_b8_s75_float32_auto: kept" \
        in kept.stdout


def test_a_failed_setting_is_reported_not_fatal(tmp_path):
    proc = _grid(tmp_path, "--timeout=0.01")  # killed at once
    assert proc.returncode == 1
    combined = json.loads((tmp_path / "grid.json").read_text())
    assert combined["runs"] == [] and len(combined["failures"]) == 1
    failure = combined["failures"][0]
    assert failure["timed_out"] and "inception_jax.bench" in failure["command"]
    assert "FAILED inception_resnet_v1" in proc.stdout
