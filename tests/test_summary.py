"""The summary CLI: parameter count, unit shapes and FLOPs against the published sizes."""

import pytest

from inception_jax.summary import main, summarize

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


def test_cli_prints_count_shapes_and_flops(capsys):
    main(["--model", "inception_v4", "--image-size", "75"])
    out = capsys.readouterr().out
    assert "parameters: 42,679,816" in out
    assert "reduction_b      (1, 1, 1536)" in out
    assert "FLOPs/image (XLA cost analysis" in out


def test_cli_rejects_a_too_small_image():
    with pytest.raises(SystemExit) as exit_info:
        main(["--model", "inception_v4", "--image-size", "60"])
    assert exit_info.value.code == 2
