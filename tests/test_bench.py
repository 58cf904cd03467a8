"""The benchmark harness runs on a tiny setting and reports every field (no speed asserted)."""

import json
import math
import os
import subprocess
import sys

import pytest

from inception_jax import bench
from tests.helpers import ROOT, run_env

pytest.importorskip("timm")


def test_harness_reports_every_field():
    result = bench.run("inception_v3", batch=8, size=75, width=1.0, warmup=1, steps=2,
                       timm_modes=("eager",), pipeline=True,
                       scan_unroll=1)  # rolled stages compile faster; no speed is asserted
    assert result["backend"] == "cpu" and result["device_count"] == 8
    assert result["xla_flags"] == os.environ["XLA_FLAGS"]  # recorded with the figures
    assert result["peak_source"].startswith("measured") and result["peak_flops_per_s"] > 1e8
    assert [r["mode"] for r in result["ours"]] == ["train", "eval"]
    for r in result["ours"]:
        assert r["images_per_s"] > 0 and len(r["step_times_s"]) == 2
        assert r["compile_s"] > 0 and r["flops_per_step"] > 1e9
        assert 0 < r["mfu"] and math.isfinite(r["mfu"])
        assert r["peak_memory_bytes"] > 0 and r["peak_memory_source"]
        assert r["timm_best_mode"] == "eager" and r["ratio_vs_timm"] > 0
    train, evaluation = result["ours"]
    assert train["flops_per_step"] > 2 * evaluation["flops_per_step"]  # backward costs ~2x
    assert {(t["mode"], t["timm_mode"]) for t in result["timm"]} == {("train", "eager"),
                                                                      ("eval", "eager")}
    assert result["pipeline"]["images_per_s_per_core"] > 0
    text = bench.table(result)
    assert "ours/timm" in text and "input pipeline" in text


def test_cli_writes_json_and_table(tmp_path):
    out = tmp_path / "b.json"
    proc = subprocess.run(
        [sys.executable, "-m", "inception_jax.bench", "--model=inception_resnet_v1",
         "--batch=2", "--image_size=75", "--width=0.125", "--warmup=0", "--steps=1",
         f"--out={out}"],
        env=run_env(), capture_output=True, text=True, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["timm"] == [] and "ratio_vs_timm" not in result["ours"][0]  # timm has no IR-v1
    assert "img/s" in proc.stdout and "n/a" in proc.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "inception_jax.bench", "--model=resnet50", "--timm="],
        env=run_env(), capture_output=True, text=True, cwd=ROOT,
    )
    assert bad.returncode == 2 and "Unknown model 'resnet50'" in bad.stderr
