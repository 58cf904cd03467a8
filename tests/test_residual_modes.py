"""The residual-scale ablations (`residual_mode`) and IR-v1's facenet-style final block."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inception_jax.errors import UserError
from inception_jax.models import create
from inception_jax.summary import count_params

TINY = dict(num_classes=10, width=0.125, conv_impl="xla")
# The tests that read only the 35x35 stage leave the 17x17 and 8x8 stages empty (their two
# blocks' eager programs are a third of those tests' time); the gradient test needs all three.
FIRST_STAGE, ALL_STAGES = (1, 0, 0), (1, 1, 1)


def _learned(variables):
    """Parameters and BN statistics only (init also returns what the network sowed)."""
    return {k: variables[k] for k in ("params", "batch_stats")}


def _init(model, x):
    """The learned variables of `model`, initialised eagerly (each op's program is reused by
    the next model: jitting whole programs per model config is slower here) with JAX's
    original threefry, whose programs compile faster than the partitionable default's (ten
    truncated normals: 2.4 s against 12.6 s). Only these tests' initial values change."""
    with jax.threefry_partitionable(False):
        return _learned(model.init(jax.random.key(1), x))


def _stage_io(name, mode, scale, train=False, blocks=FIRST_STAGE, **knobs):
    """(input, output) of the 35x35 stage, and the variables."""
    model = create(name, residual_mode=mode, residual_scales=(scale, scale, scale),
                   blocks=blocks, **TINY, **knobs)
    x = jax.random.uniform(jax.random.key(0), (2, 75, 75, 3), minval=-1, maxval=1)
    variables = _init(model, x)
    _, sown = model.apply(variables, x, train=train, rngs={"dropout": jax.random.key(2)},
                          mutable=["intermediates", "batch_stats"])
    inter = sown["intermediates"]
    before = "mixed_5b_out" if name == "inception_resnet_v2" else "stem_out"
    return inter[before][0], inter["block35_out"][0], variables, model, x


# IR-v1 only: both networks take their residual knobs from `InceptionResNet` and run the
# same `InceptionBlock.merge` (test_bad_residual_knobs checks IR-v2 takes them).
@pytest.mark.parametrize("name", ["inception_resnet_v1"])
@pytest.mark.parametrize("mode", ["scalar", "channel"])
def test_a_learned_scale_at_zero_makes_a_residual_stage_the_identity(name, mode):
    # ReZero: scale 0 at init, so block35 returns its (ReLU, non-negative) input unchanged.
    x_in, x_out, *_ = _stage_io(name, mode, 0.0)
    assert float(jnp.abs(x_in).max()) > 0.1
    np.testing.assert_array_equal(np.asarray(x_out), np.asarray(x_in))
    # A non-zero start changes the stage.
    x_in, x_out, *_ = _stage_io(name, mode, 0.2)
    assert float(jnp.abs(x_out - x_in).max()) > 1e-3


@pytest.mark.parametrize("mode,shape", [("scalar", (1,)), ("channel", (1, 32))])
def test_a_learned_scale_is_a_parameter_and_receives_a_gradient(mode, shape):
    *_, variables, model, x = _stage_io("inception_resnet_v1", mode, 0.2, blocks=ALL_STAGES)
    scale = variables["params"]["block35"]["residual_scale"]
    # Stacked over the stage's one block; per channel: the 35x35 trunk width 256 x 0.125 = 32.
    assert scale.shape == shape and np.allclose(scale, 0.2)

    def loss(params):
        logits, _ = model.apply({**variables, "params": params}, x, train=True,
                                rngs={"dropout": jax.random.key(2)}, mutable=["batch_stats"])
        return jnp.mean(logits**2)

    # Jitted: one program, where the eager gradient compiled each backward op (twice the
    # time for both cases with an empty cache).
    grads = jax.jit(jax.grad(loss))(variables["params"])
    for stage in ("block35", "block17", "block8"):
        g = grads[stage]["residual_scale"]
        assert g.shape == variables["params"][stage]["residual_scale"].shape
        assert float(jnp.abs(g).max()) > 0


def test_fixed_and_learned_scales_agree_at_init():
    # At init a learned scalar/per-channel scale equals the fixed one it starts from.
    _, fixed, *_ = _stage_io("inception_resnet_v1", "fixed", 0.3)
    for mode in ("scalar", "channel"):
        _, learned, *_ = _stage_io("inception_resnet_v1", mode, 0.3)
        np.testing.assert_allclose(np.asarray(learned), np.asarray(fixed), rtol=1e-6, atol=1e-6)


def test_branch_batchnorm_normalises_the_branch_and_drops_the_projection_bias():
    gamma = 0.25
    model = create("inception_resnet_v1", residual_mode="bn", residual_scales=(gamma,) * 3,
                   blocks=FIRST_STAGE, **TINY)
    x = jax.random.uniform(jax.random.key(0), (4, 75, 75, 3), minval=-1, maxval=1)
    variables = _init(model, x)
    p = variables["params"]["block35"]
    assert "bias" not in p["proj"] and set(p["proj_bn"]) == {"scale", "bias"}
    assert np.allclose(p["proj_bn"]["scale"], gamma)
    # In training, the scaled branch is the BN output: per-channel mean 0, std gamma.
    _, sown = model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(2)},
                          mutable=["intermediates", "batch_stats", "monitor"])
    branch_rms = float(sown["monitor"]["block35"]["branch_rms"][0][0])
    assert branch_rms == pytest.approx(gamma, rel=0.02)


def test_bad_residual_knobs_are_refused():
    with pytest.raises(UserError, match="residual_mode must be one of"):
        create("inception_resnet_v2", residual_mode="rezero")
    assert create("inception_resnet_v2", residual_mode="scalar").stage_residuals()[0].mode \
        == "scalar"
    with pytest.raises(UserError, match="3 positive numbers.*'fixed'"):
        create("inception_resnet_v1", residual_scales=(0.0, 0.1, 0.1))
    create("inception_resnet_v1", residual_mode="scalar", residual_scales=(0.0, 0.0, 0.0))
    with pytest.raises(UserError, match="3 non-negative numbers"):
        create("inception_resnet_v1", residual_mode="scalar", residual_scales=(-0.1, 0, 0))


def test_inception_resnet_v1_final_linear_block_is_a_knob():
    paper = create("inception_resnet_v1")
    facenet = create("inception_resnet_v1", final_linear_block=True)
    assert [u.name for u in facenet.units()][-1] == "block8_final"
    last = facenet.units()[-1].block.residual
    assert last.scale == 1.0 and not last.activate
    # One block8 (no aux head): 1,600,768 parameters more than the paper's 22,756,328.
    def params(model):
        x = jnp.zeros((1, 75, 75, 3))
        return jax.eval_shape(model.init, jax.random.key(0), x)["params"]

    assert count_params(params(paper)) == 22_756_328
    assert count_params(params(facenet)) - count_params(params(paper)) == 1_600_768
