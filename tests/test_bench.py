"""The benchmark harness runs on a tiny setting and reports every field (no speed asserted)."""

import json
import math
import os
import subprocess
import sys

import pytest

from configs import inception_resnet_v1, inception_v3
from inception_jax import bench
from tests.helpers import ROOT, run_env

pytest.importorskip("timm")


def tiny_ir_v1():
    """The CLI test's network (an IR-v1 at 1/8 width with no residual block, 75x75); at batch 8 on
    8 devices it compiles the programs of the CLI test and test_bench_grid's tiny grid."""
    config = inception_resnet_v1.get_config()
    config.data.image_size = 75
    config.model.width = 0.125
    config.model.blocks = (0, 0, 0)
    return config


@pytest.mark.slow
def test_harness_reports_every_field():
    result = bench.run(tiny_ir_v1(), batch=8, warmup=1, steps=2, keras=False, pipeline=True)
    assert result["backend"] == "cpu" and result["device_count"] == 8
    assert result["model"] == "inception_resnet_v1" and result["batch"] == 8
    assert result["xla_flags"] == os.environ["XLA_FLAGS"]  # recorded with the figures
    assert result["peak_source"].startswith("measured") and result["peak_flops_per_s"] > 1e8
    assert [r["mode"] for r in result["ours"]] == ["train", "eval"]
    for r in result["ours"]:
        assert r["images_per_s"] > 0 and len(r["step_times_s"]) == 2
        assert r["compile_s"] > 0 and r["flops_per_step"] > 1e7  # 8 images of ~5 MFLOP
        assert 0 < r["mfu"] and math.isfinite(r["mfu"])
        assert r["peak_memory_bytes"] > 0 and r["peak_memory_source"]
        assert "ratio_vs_timm" not in r and "ratio_vs_keras" not in r
    train, evaluation = result["ours"]
    assert train["flops_per_step"] > 2 * evaluation["flops_per_step"]  # backward costs ~2x
    # A narrowed or shortened network is not timm's or Keras': no peer runs.
    assert result["timm"] == [] and result["keras"] == []
    assert result["pipeline"]["images_per_s_per_core"] > 0
    text = bench.table(result)
    assert "input pipeline" in text and "n/a" in text


def test_timm_runs_the_same_network_and_is_compared(monkeypatch):
    """timm's Inception-v3 is timed for real (eager) beside our figures, which are stubbed
    here (the harness test times ours); ratios are ours / timm's per mode."""
    figures = {"step_time_median_s": 1.0, "compile_s": 1.0, "flops_per_step": 1e9, "mfu": 0.1,
               "peak_memory_bytes": 2**20}
    ours = [{"mode": "train", "images_per_s": 3.0, **figures},
            {"mode": "eval", "images_per_s": 8.0, **figures}]
    monkeypatch.setattr(bench, "bench_ours", lambda *args: [dict(r) for r in ours])
    config = inception_v3.get_config()
    config.data.image_size = 75
    result = bench.run(config, batch=2, warmup=0, steps=2, keras=False)
    assert [(t["mode"], t["timm_mode"]) for t in result["timm"]] == [("train", "eager"),
                                                                      ("eval", "eager")]
    for mine, theirs in zip(result["ours"], result["timm"], strict=True):
        assert theirs["images_per_s"] > 0 and len(theirs["step_times_s"]) == 2
        assert mine["timm_best_mode"] == "eager"
        assert mine["ratio_vs_timm"] == pytest.approx(mine["images_per_s"]
                                                      / theirs["images_per_s"])
        assert f"{theirs['images_per_s']:12.2f}{mine['ratio_vs_timm']:11.2f}" in bench.table(result)
    called = []
    monkeypatch.setattr(bench, "bench_timm", lambda *args: called.append(args) or [])
    config.model.width = 0.5
    assert bench.run(config, batch=2, warmup=0, steps=1, keras=False)["timm"] == []
    assert called == []  # no peer run against a narrowed network


@pytest.mark.slow
def test_keras_peer_runs_on_the_jax_backend():
    """Keras' InceptionV3 train and predict steps, in a process whose Keras runs on JAX (this
    one may have imported Keras with another backend)."""
    pytest.importorskip("keras")
    script = ("import json; from inception_jax import bench; "
              "print(json.dumps([bench.keras_backend(), "
              "bench.bench_keras('inception_v3', 2, 75, 10, 'float32', 0, 2)]))")
    env = {**run_env(), "KERAS_BACKEND": "jax"}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    backend, results = json.loads(proc.stdout.splitlines()[-1])
    assert backend == "jax"
    assert [r["mode"] for r in results] == ["train", "eval"]
    for r in results:
        assert r["images_per_s"] > 0 and len(r["step_times_s"]) == 2
        assert r["first_call_s"] > r["compile_s"] > 0  # the first call compiles
    assert bench.bench_keras("inception_v4", 2, 75, 10, "float32", 0, 1) == []  # no Keras v4


def test_ratios_and_table_name_each_peer():
    ours = [{"mode": "train", "images_per_s": 3.0}, {"mode": "eval", "images_per_s": 8.0}]
    timm = [{"mode": "train", "timm_mode": "eager", "images_per_s": 1.0},
            {"mode": "train", "timm_mode": "compile", "images_per_s": 2.0}]
    keras = [{"mode": "train", "images_per_s": 1.5, "compile_s": 40.0},
             {"mode": "eval", "images_per_s": 4.0, "compile_s": 9.0}]
    bench._compare(ours, timm, "timm")
    bench._compare(ours, keras, "keras")
    train, evaluation = ours
    assert train["timm_best_mode"] == "compile" and train["ratio_vs_timm"] == 1.5
    assert train["ratio_vs_keras"] == 2.0 and train["keras_compile_s"] == 40.0
    assert evaluation["ratio_vs_keras"] == 2.0 and "ratio_vs_timm" not in evaluation


@pytest.mark.slow
def test_cli_writes_json_and_table(tmp_path):
    out = tmp_path / "b.json"
    proc = subprocess.run(
        [sys.executable, "-m", "inception_jax.bench", "--config=configs/inception_resnet_v1.py",
         "--batch=8", "--config.data.image_size=75", "--config.model.width=0.125",
         "--config.model.blocks=(0,0,0)",
         "--warmup=0", "--steps=1", f"--out={out}",
         "--compile_cache"],  # the harness test's and the tiny grid's programs (8 devices)
        env=run_env(devices=8), capture_output=True, text=True, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    # timm and Keras have no IR-v1 (and no width knob): no peers, no ratios.
    assert result["timm"] == [] and result["keras"] == []
    assert "ratio_vs_timm" not in result["ours"][0] and "ratio_vs_keras" not in result["ours"][0]
    assert result["batch"] == 8 and result["width"] == 0.125
    assert "img/s" in proc.stdout and "n/a" in proc.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "inception_jax.bench", "--config=configs/inception_v3.py",
         "--timm=jit"],
        env=run_env(), capture_output=True, text=True, cwd=ROOT,
    )
    assert bad.returncode == 2 and "error: --timm takes eager and/or compile" in bad.stderr


def test_bench_config_sets_the_batch_of_a_copy():
    config = inception_resnet_v1.get_config()
    copy = bench.bench_config(config, 8)
    assert copy.train.global_batch_size == copy.train.eval_batch_size == 8
    assert config.train.global_batch_size == 1024  # the caller's config is untouched
