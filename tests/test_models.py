"""Shapes, parameter counts, knobs and errors of the four networks."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inception_jax.errors import UserError
from inception_jax.models import available_models, create
from inception_jax.models.modules import InceptionBlock, Options, apply_block
from inception_jax.models.specs import AVG_POOL, Residual, block, conv, split
from inception_jax.summary import count_params
from tests.helpers import random_variables

ALL = ["inception_v3", "inception_v4", "inception_resnet_v1", "inception_resnet_v2"]


def shapes(model, size, train=False, batch=2):
    x = jnp.zeros((batch, size, size, 3))
    variables = jax.eval_shape(model.init, jax.random.key(0), x)
    out = jax.eval_shape(
        lambda v, x: model.apply(
            v, x, train=train, rngs={"dropout": jax.random.key(1)}, mutable=["batch_stats"]
        )[0],
        variables,
        x,
    )
    return variables, out


def test_registry_lists_the_four_networks():
    assert available_models() == sorted(ALL)


@pytest.mark.parametrize(
    "name,expected",
    [("inception_v3", 23_834_568), ("inception_v4", 42_679_816),
     ("inception_resnet_v2", 55_843_464)],
)
def test_parameter_counts_match_the_reference_sizes(name, expected):
    variables, _ = shapes(create(name), 299)
    assert count_params(variables["params"]) == expected


def _figure_count_inception_resnet_v1(num_classes=1000):
    """Parameter count of the paper's Figs. 10-14 from their layer lists (BN gamma + beta)."""
    convs = []  # (kh, kw, cin, cout) of conv+BN layers
    proj = []  # (cin, cout) of biased 1x1 up-projections

    def c(kh, kw, cin, cout):
        convs.append((kh, kw, cin, cout))

    # Fig. 14 stem
    c(3, 3, 3, 32); c(3, 3, 32, 32); c(3, 3, 32, 64); c(1, 1, 64, 80); c(3, 3, 80, 192)  # noqa: E702
    c(3, 3, 192, 256)
    for _ in range(5):  # Fig. 10, Inception-ResNet-A
        c(1, 1, 256, 32); c(1, 1, 256, 32); c(3, 3, 32, 32)  # noqa: E702
        c(1, 1, 256, 32); c(3, 3, 32, 32); c(3, 3, 32, 32)  # noqa: E702
        proj.append((96, 256))
    # Fig. 7 Reduction-A with k, l, m, n = 192, 192, 256, 384
    c(3, 3, 256, 384); c(1, 1, 256, 192); c(3, 3, 192, 192); c(3, 3, 192, 256)  # noqa: E702
    for _ in range(10):  # Fig. 11, Inception-ResNet-B
        c(1, 1, 896, 128); c(1, 1, 896, 128); c(1, 7, 128, 128); c(7, 1, 128, 128)  # noqa: E702
        proj.append((256, 896))
    # Fig. 12 Reduction-B
    c(1, 1, 896, 256); c(3, 3, 256, 384); c(1, 1, 896, 256); c(3, 3, 256, 256)  # noqa: E702
    c(1, 1, 896, 256); c(3, 3, 256, 256); c(3, 3, 256, 256)  # noqa: E702
    for _ in range(5):  # Fig. 13, Inception-ResNet-C
        c(1, 1, 1792, 192); c(1, 1, 1792, 192); c(1, 3, 192, 192); c(3, 1, 192, 192)  # noqa: E702
        proj.append((384, 1792))
    total = sum(kh * kw * ci * co + 2 * co for kh, kw, ci, co in convs)
    total += sum(ci * co + co for ci, co in proj)
    return total + 1792 * num_classes + num_classes


def test_inception_resnet_v1_count_equals_the_papers_figures():
    variables, _ = shapes(create("inception_resnet_v1"), 299)
    expected = _figure_count_inception_resnet_v1()
    assert expected == 22_756_328  # ≈ 22.8M as the paper says
    assert count_params(variables["params"]) == expected


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("size", [299, 75])
def test_output_shapes_at_299_and_at_the_minimum(name, size):
    model = create(name, num_classes=17)
    assert model.min_input_size == 75
    _, logits = shapes(model, size)
    assert logits.shape == (2, 17) and logits.dtype == jnp.float32


@pytest.mark.parametrize("name", ALL)
def test_below_minimum_size_names_the_minimum(name):
    with pytest.raises(ValueError, match="at least 75x75 pixels, got 74x74"):
        shapes(create(name), 74)


def test_unit_output_shapes_follow_the_paper():
    def unit_shapes(model):
        x = jnp.zeros((1, 299, 299, 3))
        v = jax.eval_shape(model.init, jax.random.key(0), x)
        _, state = jax.eval_shape(
            lambda v, x: model.apply(v, x, mutable=["intermediates"]), v, x
        )
        return {k[:-4]: tuple(s[0].shape[1:]) for k, s in state["intermediates"].items()}

    v4 = unit_shapes(create("inception_v4"))
    assert v4["mixed_5a"] == (35, 35, 384)
    assert v4["reduction_a"] == (17, 17, 1024)
    assert v4["reduction_b"] == (8, 8, 1536)
    assert v4["inception_c"] == (8, 8, 1536)
    v1 = unit_shapes(create("inception_resnet_v1"))
    assert (v1["stem"], v1["reduction_a"], v1["block8"]) == (
        (35, 35, 256), (17, 17, 896), (8, 8, 1792))
    rel = unit_shapes(create("inception_resnet_v2"))
    assert (rel["block35"], rel["block17"], rel["conv_7b"]) == (
        (35, 35, 320), (17, 17, 1088), (8, 8, 1536))
    paper = unit_shapes(create("inception_resnet_v2", layout="paper"))
    assert (paper["block35"], paper["block17"], paper["block8"]) == (
        (35, 35, 384), (17, 17, 1152), (8, 8, 2144))
    v3 = unit_shapes(create("inception_v3"))
    assert (v3["mixed_5d"], v3["mixed_6e"], v3["mixed_7c"]) == (
        (35, 35, 288), (17, 17, 768), (8, 8, 2048))


def test_unknown_model_and_option_errors():
    with pytest.raises(UserError, match="Known models: inception_resnet_v1, inception_resnet_v2"):
        create("inception_v5")
    with pytest.raises(UserError, match="has no option.*widht"):
        create("inception_v4", widht=2.0)


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"width": 0}, "width must be > 0"),
        ({"dropout_rate": 1.0}, "dropout_rate must be in"),
        ({"dtype": "int8"}, "dtype must be one of"),
        ({"blocks": (1, 2)}, "blocks must be 3 non-negative ints"),
        ({"residual_scales": (0.1, 0.0, 0.2)}, "residual_scales must be 3 positive"),
        ({"layout": "figure"}, "layout must be one of"),
    ],
)
def test_bad_knob_values_raise_clear_errors(overrides, message):
    name = "inception_resnet_v2"
    with pytest.raises(UserError, match=message):
        create(name, **overrides)


def test_scanned_stages_make_depth_free_to_compile():
    """Rolled stages lower 40 residual blocks to the same program as 6: a stage is one loop.

    The lowered StableHLO is what XLA compiles. "auto" rolls the stages when compiling for GPU
    or TPU; on CPU it unrolls them (faster backward), and there the program grows with depth.
    """

    def hlo_lines(blocks, **knobs):
        model = create("inception_resnet_v2", blocks=blocks, width=0.25, **knobs)
        x = jnp.zeros((1, 75, 75, 3))
        v = jax.eval_shape(model.init, jax.random.key(0), x)
        return len(jax.jit(model.apply).lower(v, x).as_text().splitlines())

    assert hlo_lines((2, 2, 2), scan_unroll=1) == hlo_lines((10, 20, 10), scan_unroll=1)
    # Unrolled (auto on CPU), depth costs program size: 1,396 -> 3,081 lines when measured.
    assert hlo_lines((10, 20, 10)) > 2 * hlo_lines((2, 2, 2))
    shallow = create("inception_resnet_v2", blocks=(2, 2, 2))
    deep = create("inception_resnet_v2")
    v_shallow, _ = shapes(shallow, 75)
    v_deep, _ = shapes(deep, 75)
    assert v_deep["params"]["block17"]["proj"]["kernel"].shape == (20, 1, 1, 384, 1088)
    assert v_shallow["params"]["block17"]["proj"]["kernel"].shape == (2, 1, 1, 384, 1088)


def test_width_multiplier_scales_every_conv():
    v, _ = shapes(create("inception_v4", width=0.5), 75)
    assert v["params"]["stem"]["b0_0"]["conv"]["kernel"].shape == (3, 3, 3, 16)
    assert v["params"]["inception_c"]["b0_0"]["conv"]["kernel"].shape == (3, 1, 1, 768, 128)
    assert v["params"]["head"]["kernel"].shape == (768, 1000)


def test_bn_without_gamma_has_no_scale_parameters():
    with_gamma, _ = shapes(create("inception_v4"), 75)
    without, _ = shapes(create("inception_v4", bn_scale=False), 75)
    gammas = sum(
        int(np.prod(x.shape))
        for p, x in jax.tree_util.tree_flatten_with_path(with_gamma["params"])[0]
        if p[-1].key == "scale"
    )
    assert gammas > 0
    assert count_params(with_gamma["params"]) - count_params(without["params"]) == gammas


# The fewest blocks each network allows (v3 has no blocks knob; IR-v2's released layout keeps
# its final block8): the aux head reads the 17x17 map whatever the depth before it, and XLA's
# convolutions (no conv-impl question here). Train + eval forwards compiled: v4
# 7.8 s at (1,1,1) with the CPU rewrite, 4.4 s so; IR-v2 7.0 s, 4.4 s; v3 9.3 s, 7.9 s.
FEWEST_BLOCKS = {"inception_v3": {}, "inception_v4": {"blocks": (0, 0, 0)},
                 "inception_resnet_v2": {"blocks": (0, 0, 1)}}


def _tiny_forward(name, train, **overrides):
    model = create(name, num_classes=5, width=0.125, conv_impl="xla", **FEWEST_BLOCKS[name],
                   **overrides)
    x = jax.random.uniform(jax.random.key(0), (2, 75, 75, 3), minval=-1, maxval=1)
    variables = random_variables(model, 75, seed=1)
    out, _ = jax.jit(
        lambda v, x: model.apply(
            v, x, train=train, rngs={"dropout": jax.random.key(2)}, mutable=["batch_stats"]
        )
    )(variables, x)
    return variables, out


@pytest.mark.parametrize("name", ["inception_v3", "inception_v4", "inception_resnet_v2"])
def test_aux_head_adapts_to_a_small_map_and_returns_only_in_training(name):
    variables, (logits, aux) = _tiny_forward(name, train=True, aux_head=True)
    assert logits.shape == aux.shape == (2, 5)
    assert np.all(np.isfinite(aux))
    # The 5x5 aux kernel keeps its shape at any input size.
    assert variables["params"]["aux"]["conv_1"]["conv"]["kernel"].shape[:2] == (5, 5)
    _, eval_out = _tiny_forward(name, train=False, aux_head=True)
    assert eval_out.shape == (2, 5)


def test_residual_branch_is_scaled_before_the_addition():
    x = jax.random.normal(jax.random.key(0), (1, 9, 9, 8))

    def run(scale):
        spec = block([conv(4)], [conv(4), conv(4, 3)], residual=Residual(scale, activate=False))
        m = InceptionBlock(spec, Options())
        return jax.jit(m.apply)(jax.jit(m.init)(jax.random.key(1), x), x)

    full, half = run(1.0), run(0.5)
    np.testing.assert_allclose(np.asarray(half - x), 0.5 * np.asarray(full - x), atol=1e-6)
    assert float(jnp.abs(full - x).max()) > 1e-2


def test_a_specs_conv_names_are_the_blocks_parameter_names():
    spec = block([conv(4)], [AVG_POOL, conv(4)],
                 [conv(8), split([conv(4, (1, 3))], [conv(4, (3, 1))]), conv(4, 3)])
    assert [c.name for c in spec.convs] == ["b0_0", "b1_0", "b2_0", "b2_1", "b2_2", "b2_3"]
    assert [c.kernel for c in spec.convs][3:] == [(1, 3), (3, 1), (3, 3)]
    x = jnp.zeros((1, 9, 9, 8))
    for name in ALL:
        model = create(name, width=0.125)
        params = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 75, 75, 3)))
        for unit in model.units():
            expected = {c.name for c in unit.block.convs} | (
                {"proj"} if unit.block.residual else set())
            assert set(params["params"][unit.name]) == expected, (name, unit.name)
    m = InceptionBlock(spec, Options())
    assert set(jax.eval_shape(m.init, jax.random.key(0), x)["params"]) == {
        c.name for c in spec.convs}


class SummedBranches(InceptionBlock):
    """A one-off structure through the module hook: branches added instead of concatenated."""

    def merge(self, x, outs):
        return sum(outs)


def test_a_block_module_hook_changes_structure_and_keeps_the_names():
    branches = ([conv(4)], [conv(2), conv(4, 3)])
    plain, summed = block(*branches), block(*branches, module=SummedBranches)
    assert [c.name for c in summed.convs] == [c.name for c in plain.convs]
    x = jax.random.normal(jax.random.key(0), (2, 9, 9, 3))

    class Net(nn.Module):
        spec: object

        @nn.compact
        def __call__(self, x):
            return apply_block(x, self.spec, Options(), "unit", None)

    variables = Net(plain).init(jax.random.key(1), x)
    concatenated = Net(plain).apply(variables, x)
    added = Net(summed).apply(variables, x)  # the same variables fit: same names and shapes
    assert concatenated.shape == (2, 9, 9, 8) and added.shape == (2, 9, 9, 4)
    np.testing.assert_allclose(added, concatenated[..., :4] + concatenated[..., 4:], atol=1e-6)
    assert float(jnp.abs(concatenated[..., 4:]).max()) > 1e-2


def test_bfloat16_compute_keeps_float32_parameters_and_close_logits():
    knobs = {"num_classes": 5, "width": 0.125, "blocks": (1, 1, 1)}
    model32 = create("inception_resnet_v2", **knobs)
    model16 = create("inception_resnet_v2", **knobs, dtype="bfloat16")
    x = jax.random.uniform(jax.random.key(0), (2, 75, 75, 3), minval=-1, maxval=1)
    variables = random_variables(model32, 75, seed=1)
    v16 = jax.eval_shape(model16.init, jax.random.key(1), x)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(v16["params"]))
    jaxpr = str(jax.make_jaxpr(lambda v, x: model16.apply(v, x))(variables, x))
    assert "bf16" in jaxpr
    out32 = jax.jit(model32.apply)(variables, x)
    out16 = jax.jit(model16.apply)(variables, x)
    assert out16.dtype == jnp.float32
    np.testing.assert_allclose(out16, out32, atol=0.05 * float(jnp.abs(out32).max()) + 1e-3)


def test_remat_gives_the_same_gradients():
    x = jax.random.uniform(jax.random.key(0), (2, 75, 75, 3), minval=-1, maxval=1)

    def grads(remat):
        # Two blocks a stage (remat inside each stage's loop) of the smaller IR-v1, with XLA's
        # convolution: remat is orthogonal to both, and the two gradients compile in 40% less
        # time than IR-v2's with the CPU rewrite.
        model = create("inception_resnet_v1", num_classes=5, width=0.125, remat=remat,
                       blocks=(2, 2, 2), conv_impl="xla")
        variables = random_variables(model, 75, seed=1)

        def loss(p):
            out, _ = model.apply({**variables, "params": p}, x, train=True,
                                 rngs={"dropout": jax.random.key(2)}, mutable=["batch_stats"])
            return jnp.sum(out**2)

        return jax.jit(jax.grad(loss))(variables["params"])

    for a, b in zip(jax.tree.leaves(grads(False)), jax.tree.leaves(grads(True)), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("kernel,stride,padding", [
    ((1, 1), 1, "SAME"), ((7, 1), 1, "SAME"), ((3, 1), 1, ((1, 1), (0, 0))), ((1, 7), 1, "SAME"),
    ((3, 3), 2, "VALID"), ((1, 1), 2, "VALID"),
])
def test_conv_rewrite_equals_xla_conv_in_value_and_gradient(kernel, stride, padding):
    from inception_jax.models.modules import conv2d

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(2, 11, 9, 5)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(*kernel, 5, 4)), jnp.float32)
    ref = conv2d(x, k, stride, padding, rewrite=False)
    out = conv2d(x, k, stride, padding, rewrite=True)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    loss = lambda k, rw: jnp.sum(jnp.sin(conv2d(x, k, stride, padding, rw)))
    np.testing.assert_allclose(jax.grad(loss)(k, True), jax.grad(loss)(k, False),
                               rtol=1e-4, atol=1e-4)


def test_conv_impl_keeps_parameters_and_outputs():
    x = jnp.asarray(np.random.default_rng(1).uniform(-1, 1, (1, 75, 75, 3)), jnp.float32)
    xla = create("inception_v4", width=0.125, blocks=(1, 1, 1), conv_impl="xla")
    rewrite = create("inception_v4", width=0.125, blocks=(1, 1, 1), conv_impl="rewrite")
    variables = random_variables(xla)
    shapes = lambda m: jax.tree.map(jnp.shape, jax.eval_shape(m.init, jax.random.key(0), x))
    assert shapes(xla) == shapes(rewrite)
    ref = xla.apply(variables, x)
    scale = float(jnp.abs(ref).max())
    np.testing.assert_allclose(rewrite.apply(variables, x), ref, atol=1e-5 * scale)
    with pytest.raises(ValueError, match="conv_impl must be one of"):
        create("inception_v4", conv_impl="cudnn")


def test_stage_unroll_auto_unrolls_on_cpu_and_keeps_outputs():
    from inception_jax.models.modules import stage_unroll

    assert jax.default_backend() == "cpu"
    assert [stage_unroll(0, 20), stage_unroll(1, 20), stage_unroll(4, 3)] == [20, 1, 3]
    # Auto follows the target: unrolled for CPU and TPU, one block an iteration for GPU.
    assert [stage_unroll(0, 20, p) for p in ("cpu", "tpu", "gpu", "cuda")] == [20, 20, 1, 1]
    x = jnp.asarray(np.random.default_rng(2).uniform(-1, 1, (1, 75, 75, 3)), jnp.float32)
    rolled = create("inception_resnet_v2", width=0.125, blocks=(2, 3, 2), scan_unroll=1)
    auto = create("inception_resnet_v2", width=0.125, blocks=(2, 3, 2))
    variables = random_variables(rolled)
    ref = rolled.apply(variables, x)
    np.testing.assert_allclose(auto.apply(variables, x), ref, atol=1e-5 * float(jnp.abs(ref).max()))
    with pytest.raises(ValueError, match="scan_unroll must be an int >= 0"):
        create("inception_v4", scan_unroll=-1)
