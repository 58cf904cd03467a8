"""Our networks with converted timm weights give timm's logits; bad weights give one error."""

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")

from inception_jax.errors import UserError  # noqa: E402
from inception_jax.interop.timm import WeightImportError, convert  # noqa: E402
from inception_jax.models import create  # noqa: E402

# timm's v3 (from torchvision) counts padding in its block average pools; slim/Keras do not.
TIMM_OVERRIDES = {"inception_v3": {"pool_count_include_pad": True}}


def randomized_timm(name: str, seed: int = 0):
    """timm model in eval mode with every weight and BN statistic randomized."""
    model = timm.create_model(name, pretrained=False).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, value in model.state_dict().items():
            if not value.dtype.is_floating_point:
                continue
            if key.endswith(("running_var", "bn.weight")):
                value.copy_(torch.rand(value.shape, generator=g) + 0.5)
            elif value.ndim == 1:
                value.copy_(torch.randn(value.shape, generator=g) * 0.1)
            else:
                fan_in = float(np.prod(value.shape[1:]))
                value.copy_(torch.randn(value.shape, generator=g) * np.sqrt(2.0 / fan_in))
    return model


def numpy_state(model):
    return {k: v.numpy() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module", params=["inception_v3", "inception_v4", "inception_resnet_v2"])
def pair(request):
    name = request.param
    tm = randomized_timm(name)
    overrides = TIMM_OVERRIDES.get(name, {})
    # Rolled stages (scan_unroll=1): the same outputs as CPU's default full unrolling
    # (test_models checks the two agree), in a program that compiles several times faster.
    model = create(name, scan_unroll=1, **overrides)
    return name, tm, model, convert(name, numpy_state(tm), **overrides)


@pytest.mark.parametrize("size", [299, 139])
def test_logits_equal_timm(pair, size):
    name, tm, model, variables = pair
    x = np.random.default_rng(size).uniform(-1, 1, (2, size, size, 3)).astype(np.float32)
    with torch.no_grad():
        ref = tm(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
    ours = np.asarray(jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x))
    scale = np.abs(ref).max()
    assert scale > 1.0  # randomized weights: the logits are far from trivial
    assert np.abs(ours - ref).max() <= 1e-4 * scale, (name, size, np.abs(ours - ref).max())


def test_v3_pooling_convention_matters():
    """Without timm's include-pad pooling the logits differ: the knob is load-bearing."""
    tm = randomized_timm("inception_v3", seed=1)
    variables = convert("inception_v3", numpy_state(tm), pool_count_include_pad=True)
    x = np.random.default_rng(0).uniform(-1, 1, (1, 99, 99, 3)).astype(np.float32)
    with torch.no_grad():
        ref = tm(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
    slim_style = np.asarray(jax.jit(create("inception_v3").apply)(variables, x))
    assert np.abs(slim_style - ref).max() > 1e-3 * np.abs(ref).max()


def test_timm_v3_aux_head_imports():
    tm = timm.create_model("inception_v3", pretrained=False, aux_logits=True)
    variables = convert("inception_v3", numpy_state(tm), aux_head=True)
    assert variables["params"]["aux"]["conv_1"]["conv"]["kernel"].shape == (5, 5, 128, 768)
    assert variables["params"]["aux"]["head"]["kernel"].shape == (768, 1000)


def test_bad_state_dict_lists_missing_unexpected_and_misshaped_names():
    state = numpy_state(timm.create_model("inception_resnet_v2", pretrained=False))
    del state["repeat.3.branch1.1.conv.weight"]
    state["extra.weight"] = np.zeros(3, np.float32)
    state["classif.bias"] = np.zeros(10, np.float32)
    with pytest.raises(WeightImportError) as err:
        convert("inception_resnet_v2", state)
    msg = str(err.value)
    assert "missing (1): repeat.3.branch1.1.conv.weight" in msg
    assert "unexpected (1): extra.weight" in msg
    assert "classif.bias: got (10,), need (1000,)" in msg


def test_unsupported_model_is_refused():
    with pytest.raises(UserError, match="timm has no such model|supports"):
        convert("inception_resnet_v1", {})
