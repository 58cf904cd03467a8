"""Pretrained weights end to end: timm file → import_weights CLI → predict; fine-tuning from a
weights file."""

import re
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("timm")

from inception_jax.checkpoint import read_checkpoint  # noqa: E402
from inception_jax.data.class_names import imagenet_class_names  # noqa: E402
from inception_jax.interop.timm import convert  # noqa: E402
from inception_jax.models import create  # noqa: E402
from inception_jax.weights import read_weights, save_weights  # noqa: E402
from tests.helpers import (  # noqa: E402
    ROOT,
    TINY,
    config_flags,
    random_variables,
    run_env,
    tiny_settings,
)
from tests.test_timm_interop import numpy_state, randomized_timm  # noqa: E402


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """A randomized timm inception_v3 as a .safetensors file, converted by the CLI."""
    from safetensors.numpy import save_file

    tmp = tmp_path_factory.mktemp("weights")
    state = numpy_state(randomized_timm("inception_v3", seed=3))
    save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, str(tmp / "timm.safetensors"))
    out = subprocess.run(
        [sys.executable, "-m", "inception_jax.import_weights", f"--input={tmp}/timm.safetensors",
         "--model=inception_v3", f"--out={tmp}/v3.safetensors"],
        env=run_env(), capture_output=True, text=True, cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return state, tmp / "v3.safetensors"


def test_import_cli_writes_the_converted_weights(imported):
    state, path = imported
    name, knobs, variables = read_weights(str(path))
    assert name == "inception_v3" and knobs == {"pool_count_include_pad": True}
    expected = convert("inception_v3", state, pool_count_include_pad=True)
    got = variables["params"]["mixed_6b"]["b1_1"]["conv"]["kernel"]
    np.testing.assert_array_equal(got, expected["params"]["mixed_6b"]["b1_1"]["conv"]["kernel"])
    np.testing.assert_array_equal(variables["params"]["head"]["kernel"],
                                  expected["params"]["head"]["kernel"])


def test_import_cli_refuses_wrong_architecture(imported, tmp_path):
    _, path = imported
    timm_file = path.parent / "timm.safetensors"
    out = subprocess.run(
        [sys.executable, "-m", "inception_jax.import_weights", f"--input={timm_file}",
         "--model=inception_v4", f"--out={tmp_path}/x.safetensors"],
        env=run_env(), capture_output=True, text=True, cwd=ROOT,
    )
    assert out.returncode == 2 and "timm weights do not fit inception_v4" in out.stderr
    assert not (tmp_path / "x.safetensors").exists()


def test_predict_prints_top5_imagenet_names(imported, tmp_path):
    import tensorflow as tf

    _, path = imported
    image = np.random.default_rng(0).integers(0, 255, (120, 90, 3), np.uint8)
    tf.io.write_file(str(tmp_path / "a.png"), tf.io.encode_png(image))
    out = subprocess.run(
        [sys.executable, "-m", "inception_jax.predict", f"--weights={path}", "--image_size=99",
         str(tmp_path / "a.png")],
        env=run_env(), capture_output=True, text=True, cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    lines = [line for line in out.stdout.splitlines() if "%" in line]
    assert len(lines) == 5
    names = set(imagenet_class_names())
    probs = []
    for line in lines:
        match = re.match(r"\s*([\d.]+)%\s+(.*)$", line)
        assert match and match.group(2) in names, line
        probs.append(float(match.group(1)))
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 100.01


@pytest.mark.slow
def test_fine_tuning_from_a_weights_file_on_the_builtin_data(tmp_path):
    """The `finetune` variant from a weights file with ImageNet's 1000 classes: the trunk starts
    from the file, the head is made anew for the built-in data's 10 classes. On the tiny IR-v1
    of the trainer's tests (stem and reductions at width 0.125, XLA's convolution): the path is
    the same for every network, and a full-depth network would cost about a minute of
    compilation. (IR-v1, not IR-v2: IR-v2's full
    config has no `blocks` field to set, its default depends on `layout`.) The timm → weights
    file step is the import tests above."""
    knobs = {"width": TINY["model.width"], "blocks": TINY["model.blocks"], "num_classes": 1000}
    pretrained = random_variables(create("inception_resnet_v1", **knobs), seed=3)
    path = tmp_path / "ir1.safetensors"
    save_weights(str(path), pretrained, "inception_resnet_v1", knobs)
    workdir = tmp_path / "ft"
    out = subprocess.run(
        [sys.executable, str(ROOT / "train.py"),
         f"--config={ROOT}/configs/inception_resnet_v1.py:finetune", f"--workdir={workdir}",
         *config_flags({
             "train.init_weights": str(path), "data.data_dir": f"{tmp_path}/tfds",
             **tiny_settings("model.", "data.builder.image_size"),
             "data.builder.num_train": 64, "data.builder.num_test": 16, "train.num_steps": 2,
             "train.global_batch_size": 8, "train.eval_batch_size": 8,
             "train.eval_every_steps": 0, "train.checkpoint_every_steps": 2,
             "monitor.enabled": False})],
        env=run_env(), capture_output=True, text=True, cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "freshly initialised: params/head/bias, params/head/kernel" in out.stderr
    _, state = read_checkpoint(str(workdir))
    before = pretrained["params"]["reduction_a"]["b1_1"]["conv"]["kernel"]
    after = np.asarray(state["params"]["reduction_a"]["b1_1"]["conv"]["kernel"])
    assert np.abs(after - before).max() < 0.05 * np.abs(before).max()  # started from them
    assert not np.array_equal(after, before)  # and trained
    assert pretrained["params"]["head"]["kernel"].shape == (224, 1000)  # 1792 at full width
    assert state["params"]["head"]["kernel"].shape == (224, 10)
