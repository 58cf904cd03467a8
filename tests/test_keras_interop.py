"""Our networks with imported Keras applications weights give Keras' logits; bad files fail
with one clear `WeightImportError`."""

import h5py
import jax
import numpy as np
import pytest

keras = pytest.importorskip("keras")

# Keras' TensorFlow backend converts variables with `np.array(x, copy=False)` when saving.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)

from inception_jax.errors import UserError  # noqa: E402
from inception_jax.interop.keras import (  # noqa: E402
    DEFAULT_OVERRIDES,
    WeightImportError,
    auto_named_layers,
    convert,
    load_file,
)
from inception_jax.models import create  # noqa: E402

# 107x107 is the smallest input whose last grid is 2x2 (not 1x1) in both networks, so the
# 3x3/1x3/3x1 kernels of the last stage are checked tap by tap, at a fraction of 299's cost.
SIZE = 107
BUILDERS = {
    "inception_v3": lambda: keras.applications.InceptionV3,
    "inception_resnet_v2": lambda: keras.applications.InceptionResNetV2,
}


def randomized_keras(name: str, seed: int = 0):
    """Keras application model (logits out) with every weight and BN statistic randomized.

    A few Conv2D layers are built first, as another model in the same process would be: the
    model's auto names then start above 0 and conv/batch-norm suffixes no longer agree.
    """
    for _ in range(3):
        keras.layers.Conv2D(1, 1)
    model = BUILDERS[name]()(
        weights=None, input_shape=(SIZE, SIZE, 3), classifier_activation=None
    )
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        for var in layer.weights:
            shape = tuple(var.shape)
            if var.path.endswith("moving_variance"):
                value = rng.uniform(0.5, 1.5, shape)
            elif len(shape) == 1:
                value = rng.standard_normal(shape) * 0.1
            else:  # HWIO conv kernels and (in, out) dense kernels
                value = rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[:-1]))
            var.assign(value.astype(np.float32))
    return model


def save_legacy_h5(model, path) -> None:
    """Keras 3's writer of the legacy Keras-2 weights layout (that of the official files)."""
    from keras.src.legacy.saving import legacy_h5_format

    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)


@pytest.fixture(scope="module", params=list(BUILDERS))
def saved(request, tmp_path_factory):
    """(name, Keras model, reference logits, input, `.weights.h5` path)."""
    name = request.param
    model = randomized_keras(name)
    path = tmp_path_factory.mktemp(name) / f"{name}.weights.h5"
    model.save_weights(path)
    x = np.random.default_rng(1).uniform(-1, 1, (2, SIZE, SIZE, 3)).astype(np.float32)
    ref = np.asarray(model(x, training=False))
    return name, model, ref, x, path


def test_logits_equal_keras(saved):
    name, model, ref, x, path = saved
    weights = load_file(path)
    # Really exercised: conv and batch-norm suffixes disagree, so only their ranks pair them.
    first_conv = auto_named_layers(weights, "conv2d")[0]
    first_norm = auto_named_layers(weights, "batch_normalization")[0]
    assert first_conv.split("_")[-1] != first_norm.split("_")[-1], (first_conv, first_norm)
    variables = convert(name, weights)
    ours_model = create(name, scan_unroll=1, **DEFAULT_OVERRIDES)  # rolled: compiles faster
    ours = np.asarray(jax.jit(lambda v, x: ours_model.apply(v, x, train=False))(variables, x))
    scale = np.abs(ref).max()
    err = np.abs(ours - ref).max()
    print(f"{name}: max|ours - keras| = {err:.3g}, max|keras| = {scale:.3g}, rel {err / scale:.3g}")
    assert scale > 1.0  # randomized weights: the logits are far from trivial
    assert err <= 1e-4 * scale, (name, err, scale)


def test_legacy_h5_gives_the_same_variables(saved, tmp_path):
    name, model, _, _, path = saved
    legacy = tmp_path / f"{name}.h5"
    save_legacy_h5(model, legacy)
    with h5py.File(legacy, "r") as f:
        assert "layer_names" in f.attrs  # really the legacy layout
    new, old = load_file(path), load_file(legacy)
    assert set(new) == set(old)
    a, b = convert(name, new), convert(name, old)
    leaves_a, tree_a = jax.tree_util.tree_flatten(a)
    leaves_b, tree_b = jax.tree_util.tree_flatten(b)
    assert tree_a == tree_b
    assert all(np.array_equal(u, v) for u, v in zip(leaves_a, leaves_b, strict=True))


def test_wrong_architecture_is_refused(saved):
    name, _, _, _, path = saved
    other = next(n for n in BUILDERS if n != name)
    with pytest.raises(WeightImportError) as err:
        convert(other, load_file(path))
    msg = str(err.value)
    assert msg.startswith(f"Keras weights do not fit {other}")
    assert "hint: the file has" in msg and "probably for another architecture" in msg
    assert "mis-shaped" in msg and ("missing (" in msg or "unexpected (" in msg)


def test_truncated_file_is_refused(saved, tmp_path):
    _, _, _, _, path = saved
    data = path.read_bytes()
    truncated = tmp_path / "truncated.weights.h5"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightImportError, match="not a readable Keras weights file") as err:
        load_file(truncated)
    assert "\n" not in str(err.value) and "download it again" in str(err.value)


def test_missing_and_non_hdf5_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such Keras weights file") as missing:
        load_file(tmp_path / "absent.h5")
    assert isinstance(missing.value, UserError)  # a command reports it in one line
    text = tmp_path / "notes.h5"
    text.write_text("not weights")
    with pytest.raises(WeightImportError, match="not a readable Keras weights file"):
        load_file(text)
    empty = tmp_path / "empty.h5"
    h5py.File(empty, "w").close()
    with pytest.raises(WeightImportError, match="not a Keras weights file"):
        load_file(empty)


def test_weights_h5_without_layer_names_is_refused(tmp_path):
    """Keras < 3.6 names layer groups by class and position only: the order is lost."""
    path = tmp_path / "old.weights.h5"
    with h5py.File(path, "w") as f:
        f.create_group("vars")
        f.create_dataset("layers/conv2d/vars/0", data=np.zeros((1, 1, 3, 4), np.float32))
    with pytest.raises(WeightImportError, match="Keras < 3.6"):
        load_file(path)


def test_unsupported_requests_are_refused():
    with pytest.raises(UserError, match="supports inception_v3, inception_resnet_v2"):
        convert("inception_v4", {})
    with pytest.raises(UserError, match="no auxiliary head"):
        convert("inception_v3", {}, aux_head=True)
    with pytest.raises(UserError, match="released layout"):
        convert("inception_resnet_v2", {}, layout="paper")


def test_import_weights_reads_keras_files_with_their_knobs(tmp_path):
    from inception_jax.import_weights import detect_format, import_weights

    model = keras.applications.InceptionV3(weights=None, input_shape=(75, 75, 3))
    path = str(tmp_path / "v3.weights.h5")
    model.save_weights(path)
    assert detect_format(path) == "keras"
    variables, knobs = import_weights(path, "inception_v3")
    assert knobs == {"bn_scale": False}
    expected = convert("inception_v3", load_file(path))
    np.testing.assert_array_equal(variables["params"]["head"]["kernel"],
                                  expected["params"]["head"]["kernel"])
