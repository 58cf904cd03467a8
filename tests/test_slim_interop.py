"""TF-Slim import, checked against checkpoints written with slim's variable names and shapes
(from `tests/slim_reference.py`, derived from slim's network code, not from our importer)."""

from pathlib import Path

import jax
import numpy as np
import pytest
import tensorflow as tf

from inception_jax.import_weights import detect_format, import_weights
from inception_jax.interop.common import WeightImportError
from inception_jax.interop.slim import convert, load_checkpoint
from inception_jax.models import create
from tests.slim_reference import NETWORKS


def write_checkpoint(prefix, shapes, seed=0):
    """A TF V2 checkpoint holding random values under exactly these names, plus global_step."""
    rng = np.random.default_rng(seed)
    values = {}
    for name, shape in shapes.items():
        if name.endswith("moving_variance"):
            values[name] = rng.uniform(0.5, 1.5, shape).astype(np.float32)
        elif name.endswith("weights"):
            fan_in = int(np.prod(shape[:-1]))
            values[name] = (rng.normal(size=shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        else:
            values[name] = (rng.normal(size=shape) * 0.1).astype(np.float32)
    values["global_step"] = np.array(123, np.int64)
    names = sorted(values)
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=[tf.constant(values[n]) for n in names])
    return values


@pytest.fixture(scope="module", params=sorted(NETWORKS))
def checkpoint(request, tmp_path_factory):
    name = request.param
    prefix = str(tmp_path_factory.mktemp("slim") / f"{name}.ckpt")
    return name, prefix, write_checkpoint(prefix, NETWORKS[name]())


def test_every_variable_lands_in_place(checkpoint):
    name, prefix, values = checkpoint
    state = load_checkpoint(prefix + ".index")
    assert set(state) == set(values)
    variables, knobs = convert(name, state)
    assert knobs == {"bn_scale": False, "aux_head": True, "num_classes": 1000}
    p, s = variables["params"], variables["batch_stats"]
    scope = {"inception_v3": "InceptionV3", "inception_v4": "InceptionV4",
             "inception_resnet_v2": "InceptionResnetV2"}[name]
    checks = {
        "inception_v3": lambda: [
            (p["mixed_5c"]["b1_1"]["conv"]["kernel"], "Mixed_5c/Branch_1/Conv_1_0c_5x5/weights"),
            (p["mixed_7c"]["b1_2"]["bn"]["bias"], "Mixed_7c/Branch_1/Conv2d_0c_3x1/BatchNorm/beta"),
            (s["mixed_6b"]["b2_4"]["bn"]["var"],
             "Mixed_6b/Branch_2/Conv2d_0e_1x7/BatchNorm/moving_variance"),
            (p["aux"]["conv_1"]["conv"]["kernel"], "AuxLogits/Conv2d_2a_5x5/weights"),
        ],
        "inception_v4": lambda: [
            (p["inception_b"]["b2_3"]["conv"]["kernel"][6],
             "Mixed_6h/Branch_2/Conv2d_0d_7x1/weights"),
            (s["inception_c"]["b2_4"]["bn"]["mean"][2],
             "Mixed_7d/Branch_2/Conv2d_0e_3x1/BatchNorm/moving_mean"),
            (p["mixed_3a"]["b1_0"]["conv"]["kernel"], "Mixed_3a/Branch_1/Conv2d_0a_3x3/weights"),
        ],
        "inception_resnet_v2": lambda: [
            (p["block17"]["proj"]["bias"][2], "Repeat_1/block17_3/Conv2d_1x1/biases"),
            (p["block35"]["b2_2"]["conv"]["kernel"][9],
             "Repeat/block35_10/Branch_2/Conv2d_0c_3x3/weights"),
            (p["block8_final"]["proj"]["kernel"], "Block8/Conv2d_1x1/weights"),
            (s["conv_7b"]["b0_0"]["bn"]["var"], "Conv2d_7b_1x1/BatchNorm/moving_variance"),
        ],
    }[name]()
    for ours, key in checks:
        np.testing.assert_array_equal(ours, values[f"{scope}/{key}"], err_msg=key)
    head = {"inception_v3": "Logits/Conv2d_1c_1x1", "inception_v4": "Logits/Logits",
            "inception_resnet_v2": "Logits/Logits"}[name]
    w, b = values[f"{scope}/{head}/weights"], values[f"{scope}/{head}/biases"]
    w = w.reshape(w.shape[-2:])
    np.testing.assert_array_equal(p["head"]["kernel"], w[:, 1:])  # background dropped
    np.testing.assert_array_equal(p["head"]["bias"], b[1:])
    kept, kept_knobs = convert(name, state, background="keep")
    assert kept_knobs["num_classes"] == 1001
    np.testing.assert_array_equal(kept["params"]["head"]["kernel"], w)
    model = create(name, scan_unroll=1, **knobs)  # rolled stages: compiles faster
    x = np.random.default_rng(0).uniform(-1, 1, (1, 99, 99, 3)).astype(np.float32)
    logits = jax.jit(lambda v, x: model.apply(v, x))(variables, x)
    assert logits.shape == (1, 1000) and np.isfinite(np.asarray(logits)).all()


def test_import_cli_function_detects_slim_and_bad_input_is_refused(checkpoint, tmp_path):
    name, prefix, values = checkpoint
    assert detect_format(prefix) == detect_format(prefix + ".index") == "slim"
    _, knobs = import_weights(prefix, name, background="keep")
    assert knobs["num_classes"] == 1001 and knobs["bn_scale"] is False
    other = "inception_v4" if name != "inception_v4" else "inception_resnet_v2"
    with pytest.raises(WeightImportError, match=f"TF-Slim weights do not fit {other}"):
        convert(other, load_checkpoint(prefix))
    with pytest.raises(ValueError, match="background must be 'drop' or 'keep'"):
        convert(name, {}, background="maybe")
    data = Path(prefix + ".data-00000-of-00001")
    broken = tmp_path / "broken.ckpt"
    (tmp_path / "broken.ckpt.index").write_bytes(Path(prefix + ".index").read_bytes())
    (tmp_path / "broken.ckpt.data-00000-of-00001").write_bytes(
        data.read_bytes()[: data.stat().st_size // 2]
    )
    with pytest.raises(WeightImportError, match="not a readable TF checkpoint"):
        load_checkpoint(str(broken))
    with pytest.raises(FileNotFoundError, match="No TF checkpoint"):
        load_checkpoint(str(tmp_path / "missing.ckpt"))


def test_overrides_drop_the_aux_head_and_gammas_are_imported(checkpoint):
    name, prefix, values = checkpoint
    state = load_checkpoint(prefix)
    no_aux, knobs = convert(name, state, aux_head=False)
    assert knobs["aux_head"] is False and "aux" not in no_aux["params"]
    with pytest.raises(ValueError, match="use background='drop' for 1000 classes"):
        convert(name, state, num_classes=1001)
    gammas = {k.replace("/beta", "/gamma"): np.full_like(v, 2.0)
              for k, v in values.items() if k.endswith("BatchNorm/beta")}
    with_gamma, knobs = convert(name, {**state, **gammas, "beta1_power": np.float32(0.9)})
    assert knobs["bn_scale"] is True
    leaves = jax.tree_util.tree_leaves_with_path(with_gamma["params"])
    scales = [leaf for path, leaf in leaves if path[-1].key == "scale"]
    assert scales and all(np.all(s == 2.0) for s in scales)
