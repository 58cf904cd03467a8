"""From a training run to a used model: export to our weights file, StableHLO and a SavedModel,
predict from a run, and the class names that travel with the weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inception_jax import export as export_lib
from inception_jax.checkpoint import Checkpointer
from inception_jax.data.class_names import save_run_class_names
from inception_jax.data.shapes_dataset import CLASSES
from inception_jax.errors import UserError
from inception_jax.evaluation import member_from_checkpoint, member_from_weights
from inception_jax.predict import predict
from inception_jax.trainer import build_model, run_identity
from inception_jax.weights import load_weights
from tests.helpers import random_variables, tiny_config

IMAGE_SIZE = 75


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A training workdir as the trainer leaves it: a checkpoint (step 6) whose moving average
    differs from the raw weights, and the class names of its data."""
    workdir = tmp_path_factory.mktemp("run")
    config = tiny_config(str(workdir / "tfds"))
    model = build_model(config.model)
    raw = random_variables(model, IMAGE_SIZE, seed=1)
    ema = random_variables(model, IMAGE_SIZE, seed=2)
    state = {"step": jnp.int32(6), "params": raw["params"], "batch_stats": raw["batch_stats"],
             "opt_state": {}, "ema": ema}
    c = Checkpointer(str(workdir / "checkpoints"), 2, run_identity(config))
    c.save(6, jax.tree.map(jnp.asarray, state))
    c.close()
    save_run_class_names(str(workdir), CLASSES)
    return workdir, raw, ema


def images(seed=0, size=(90, 120), count=3):
    return np.random.default_rng(seed).integers(0, 256, (count, *size, 3), dtype=np.uint8)


def our_logits(member, uint8_images, image_size=IMAGE_SIZE):
    import tensorflow as tf

    from inception_jax.data.preprocess import eval_preprocess

    x = np.stack([eval_preprocess(tf.constant(im), image_size).numpy() for im in uint8_images])
    return x, np.asarray(member.model.apply(member.variables, x, train=False))


def test_weights_export_carries_knobs_size_and_class_names(run, tmp_path):
    workdir, raw, ema = run
    member = member_from_checkpoint(str(workdir))
    assert member.image_size == IMAGE_SIZE and member.class_names == CLASSES
    out = tmp_path / "w.safetensors"
    result = export_lib.export(member, "weights", str(out), ["cpu"])
    assert result["image_size"] == IMAGE_SIZE and result["bytes"] == out.stat().st_size
    saved = load_weights(str(out))
    assert (saved.image_size, saved.class_names) == (IMAGE_SIZE, CLASSES)
    assert saved.model == "inception_resnet_v1" and saved.knobs["width"] == 0.125
    for a, b in zip(jax.tree.leaves(saved.variables), jax.tree.leaves(ema), strict=True):
        np.testing.assert_array_equal(a, b)  # the moving average by default
    back = member_from_weights(str(out))
    assert back.class_names == CLASSES and back.image_size == IMAGE_SIZE
    raw_member = member_from_checkpoint(str(workdir), use_ema=False)
    for a, b in zip(jax.tree.leaves(raw_member.variables), jax.tree.leaves(raw), strict=True):
        np.testing.assert_array_equal(a, b)


def test_predict_from_a_run_prints_its_class_names(run, tmp_path):
    import tensorflow as tf

    workdir, _, _ = run
    path = tmp_path / "a.jpg"
    path.write_bytes(tf.io.encode_jpeg(images(3, count=1)[0]).numpy())
    member = member_from_checkpoint(str(workdir))
    top = predict(member, [str(path)], top=3)[0]
    assert len(top) == 3 and all(name in CLASSES for name, _ in top)
    probabilities = [p for _, p in top]
    assert probabilities == sorted(probabilities, reverse=True) and 0 < sum(probabilities) <= 1
    _, logits = our_logits(member, [tf.io.decode_jpeg(path.read_bytes()).numpy()])
    assert top[0][0] == CLASSES[int(np.argmax(logits[0]))]


STABLEHLO_READER = """
import sys
import numpy as np
from jax import export
exported = export.deserialize(open(sys.argv[1], "rb").read())
np.save(sys.argv[3], np.asarray(exported.call(np.load(sys.argv[2]))))
assert not [m for m in sys.modules if m.startswith("inception_jax")], "imported the package"
print(exported.in_avals[0].shape, exported.platforms)
"""


def test_stablehlo_runs_in_a_process_without_the_package(run, tmp_path):
    workdir, _, _ = run
    member = member_from_checkpoint(str(workdir))
    out = tmp_path / "model.stablehlo"
    export_lib.export(member, "stablehlo", str(out), list(export_lib.PLATFORMS))
    x, ours = our_logits(member, images(4, count=5))
    np.save(tmp_path / "x.npy", x)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["JAX_PLATFORMS"] = "cpu"
    done = subprocess.run(
        [sys.executable, "-c", STABLEHLO_READER, str(out), str(tmp_path / "x.npy"),
         str(tmp_path / "y.npy")], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "(batch, 75, 75, 3) ('cpu', 'cuda', 'tpu')" in done.stdout
    theirs = np.load(tmp_path / "y.npy")
    # XLA's convolutions there, the CPU rewrite here: float32 rounding apart (measured 1.4e-6
    # of logits up to 1.9 on random weights, i.e. 8e-7 relative).
    assert theirs.shape == ours.shape == (5, 10)
    np.testing.assert_allclose(theirs, ours, rtol=0, atol=1e-5 * np.abs(ours).max())


def test_saved_model_takes_uint8_images_of_any_size(run, tmp_path):
    import tensorflow as tf

    workdir, _, _ = run
    member = member_from_checkpoint(str(workdir))
    out = tmp_path / "saved"
    export_lib.export(member, "saved_model", str(out), ["cpu"])
    assert json.loads((out / "inception_jax.json").read_text())["class_names"] == list(CLASSES)
    serve = tf.saved_model.load(str(out)).signatures["serving_default"]
    for size in ((90, 120), (75, 75), (200, 160)):
        batch = images(5, size=size, count=2)
        result = serve(images=tf.constant(batch))
        _, ours = our_logits(member, batch)
        theirs = result["logits"].numpy()
        np.testing.assert_allclose(theirs, ours, rtol=0, atol=1e-5 * np.abs(ours).max())
        np.testing.assert_allclose(result["probabilities"].numpy().sum(-1), 1.0, atol=1e-5)


def test_bad_exports_are_refused_in_one_line(tmp_path):
    with pytest.raises(UserError, match=r"--format='onnx' is not one of weights, stablehlo, "
                                        r"saved_model\."):
        export_lib.check_format("onnx", ["cpu"])
    with pytest.raises(UserError, match=r"--platforms='cpu,rocm': name one or more of"):
        export_lib.check_format("stablehlo", ["cpu", "rocm"])
    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(UserError, match=r"holds no complete checkpoint: train first"):
        member_from_checkpoint(str(tmp_path))
