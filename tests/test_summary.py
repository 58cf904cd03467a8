"""The summary CLI: parameter count, unit shapes and FLOPs against the published sizes."""

import subprocess
import sys

import pytest

from inception_jax.summary import summarize
from tests.helpers import ROOT, run_env

# timm's published GMACs at 299x299 (1000 classes, no aux head).
TIMM_GMACS = {"inception_v3": 5.73, "inception_v4": 12.28, "inception_resnet_v2": 13.18}


@pytest.mark.parametrize("name", sorted(TIMM_GMACS))
def test_flops_match_twice_timms_gmacs(name):
    s = summarize(name, 299)
    reference = 2e9 * TIMM_GMACS[name]
    assert abs(s.analytic_flops - reference) <= 0.03 * reference
    # XLA skips the multiply-adds on SAME padding, so it reads a little lower, never higher.
    assert 0.94 * s.analytic_flops <= s.xla_flops <= s.analytic_flops


def test_inception_resnet_v1_flops_match_the_papers_size():
    s = summarize("inception_resnet_v1", 299)
    assert s.params == 22_756_328
    assert abs(s.analytic_flops / 2e9 - 6.2) <= 0.03 * 6.2  # ≈ 6.2 GMACs (paper-facts)


def summary_cli(*args):
    return subprocess.run([sys.executable, "-m", "inception_jax.summary", *args], env=run_env(),
                          capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_cli_prints_count_shapes_and_flops():
    proc = summary_cli("--model=inception_v4", "--image_size=75")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "parameters: 42,679,816" in proc.stdout
    assert "reduction_b      (1, 1, 1536)" in proc.stdout
    assert "FLOPs/image (XLA cost analysis" in proc.stdout


def test_cli_rejects_a_too_small_image_in_one_line():
    proc = summary_cli("--model=inception_v4", "--image_size=60")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: --image_size=60 is below InceptionV4's minimum of 75; set --image_size to at "
        "least that."
    ]
