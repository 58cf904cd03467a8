"""Evaluation: weights files, ensembles, the evaluate/import/predict CLIs, fine-tuning."""

import json
import subprocess
import sys

import jax
import numpy as np
import pytest

from inception_jax.evaluation import (
    Member,
    class_offsets,
    ensemble_probabilities,
    member_from_checkpoint,
    member_from_weights,
)
from inception_jax.finetune import merge_pretrained
from inception_jax.interop.common import WeightImportError
from inception_jax.models import create
from inception_jax.weights import read_weights, save_weights
from tests.helpers import (
    ROOT,
    TINY_MODEL,
    config_flags,
    flags,
    random_variables,
    run_env,
    tiny_config,
    tiny_settings,
)

SMALL = {"inception_v3": {"width": 0.25, "num_classes": 10},
         # Few blocks: the ensemble test runs them eagerly, op by op (IR-v2 keeps the final
         # block8 of its released layout).
         "inception_resnet_v1": {"width": 0.125, "blocks": (0, 0, 0), "num_classes": 10},
         "inception_resnet_v2": {"width": 0.125, "blocks": (0, 0, 1), "num_classes": 10}}


def small_member(name, seed=0):
    model = create(name, **SMALL[name])
    return Member(name, name, model, random_variables(model, seed=seed))


def test_weights_file_round_trip(tmp_path):
    m = small_member("inception_v3")
    path = str(tmp_path / "w.safetensors")
    save_weights(path, m.variables, "inception_v3", SMALL["inception_v3"], source="test")
    name, knobs, variables = read_weights(path)
    assert name == "inception_v3" and knobs == SMALL["inception_v3"]
    for a, b in zip(jax.tree.leaves(variables), jax.tree.leaves(m.variables), strict=True):
        np.testing.assert_array_equal(a, b)
    loaded = member_from_weights(path)
    assert loaded.model.width == 0.25 and loaded.num_classes == 10


def test_bad_weights_files_give_one_clear_error(tmp_path):
    m = small_member("inception_v3")
    path = tmp_path / "w.safetensors"
    save_weights(str(path), m.variables, "inception_v3", SMALL["inception_v3"])
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(WeightImportError, match="not a readable safetensors file"):
        read_weights(str(truncated))
    from safetensors.numpy import save_file

    foreign = tmp_path / "timm.safetensors"
    save_file({"conv.weight": np.zeros((3, 3), np.float32)}, str(foreign))
    with pytest.raises(WeightImportError, match="import_weights --input=.*--format=timm"):
        read_weights(str(foreign))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_weights(str(tmp_path / "missing.safetensors"))


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_ensemble_of_one_equals_the_model_and_of_two_averages_probabilities():
    a, b = small_member("inception_resnet_v1", 0), small_member("inception_resnet_v2", 1)
    crops = np.random.default_rng(0).uniform(-1, 1, (2, 3, 75, 75, 3)).astype(np.float32)
    flat = crops.reshape(6, 75, 75, 3)
    pa = softmax(np.asarray(a.model.apply(a.variables, flat))).reshape(2, 3, 10).mean(1)
    pb = softmax(np.asarray(b.model.apply(b.variables, flat))).reshape(2, 3, 10).mean(1)
    one = ensemble_probabilities([a], [0], [a.variables], crops)
    np.testing.assert_allclose(one, pa, rtol=1e-5, atol=1e-6)
    single_crop = ensemble_probabilities([a], [0], [a.variables], crops[:, :1])
    np.testing.assert_allclose(
        single_crop, softmax(np.asarray(a.model.apply(a.variables, crops[:, 0]))), atol=1e-6
    )
    two = ensemble_probabilities([a, b], [0, 0], [a.variables, b.variables], crops)
    np.testing.assert_allclose(two, (pa + pb) / 2, rtol=1e-5, atol=1e-6)
    assert np.abs(pa - pb).max() > 1e-3  # the two members really differ


def test_background_class_is_skipped_and_wrong_class_counts_refused():
    m10 = small_member("inception_v3")
    m11 = Member("slim", "inception_v3", create("inception_v3", width=0.25, num_classes=11), {})
    assert class_offsets([m10, m11], 10) == [0, 1]
    with pytest.raises(ValueError, match="predicts 10 classes but the dataset has 1000"):
        class_offsets([m10], 1000)


def test_merge_pretrained_keeps_the_trunk_and_reinitialises_a_different_head():
    model = create("inception_v3", width=0.25, num_classes=10)
    fresh = random_variables(model, seed=0)
    pretrained = random_variables(create("inception_v3", width=0.25, num_classes=1000), seed=1)
    merged, kept = merge_pretrained(fresh, pretrained, "w", {"width": 0.25})
    assert sorted(kept) == ["params/head/bias", "params/head/kernel"]
    np.testing.assert_array_equal(merged["params"]["head"]["kernel"],
                                  fresh["params"]["head"]["kernel"])
    np.testing.assert_array_equal(merged["params"]["mixed_5b"]["b0_0"]["conv"]["kernel"],
                                  pretrained["params"]["mixed_5b"]["b0_0"]["conv"]["kernel"])
    no_gamma = random_variables(create("inception_v3", width=0.25, bn_scale=False), seed=2)
    with pytest.raises(WeightImportError, match="--config.model.bn_scale=False"):
        merge_pretrained(fresh, no_gamma, "w", {"width": 0.25, "bn_scale": False})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny training run (2 steps, eval at the end): its data dir and workdir. On 8 devices,
    as the suite's in-process runs: it compiles the programs they load (or loads theirs)."""
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    workdir = tmp_path_factory.mktemp("run")
    subprocess.run(flags(data_dir, workdir, **{"train.num_steps": 2}),
                   env=run_env(devices=8), check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return data_dir, workdir


@pytest.mark.slow
def test_evaluation_of_a_checkpoint_equals_the_trainers_own_eval(trained):
    from inception_jax.evaluation import evaluate

    data_dir, workdir = trained
    records = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
    trainer_top1 = [r for r in records if "eval_top1" in r][-1]["eval_top1"]
    config = tiny_config(data_dir)
    member = member_from_checkpoint(str(workdir))
    # The run kept its data's class names beside its checkpoints (predict and export show them).
    from inception_jax.data.shapes_dataset import CLASSES
    assert member.class_names == CLASSES and member.image_size == config.data.image_size
    result = evaluate([member], config.data, "center", 16, progress=False)
    assert result["count"] == 32
    assert result["top1"] == pytest.approx(trainer_top1, abs=1e-6)
    ten = evaluate([member], config.data, "10", 16, progress=False)
    assert ten["count"] == 32 and ten["num_crops"] == 10 and 0 <= ten["top1"] <= 1


def evaluate_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "inception_jax.evaluate",
         f"--config={ROOT}/configs/{TINY_MODEL}.py:smoke", *args],
        env=run_env(devices=2), capture_output=True, text=True, cwd=ROOT,
    )


@pytest.mark.slow
def test_evaluate_cli_writes_json_and_refuses_bad_input(trained, tmp_path):
    # The checkpoint was saved on 8 devices and is read on 2 (orbax refused that until
    # read_checkpoint gave it a target on the reading process's devices).
    data_dir, workdir = trained
    settings = config_flags({"data.data_dir": data_dir,
                             **tiny_settings("model.", "data.builder.")})
    out = evaluate_cli(*settings, f"--checkpoint={workdir}", f"--checkpoint={workdir}",
                       "--crops=10", f"--workdir={tmp_path}")
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads((tmp_path / "eval_test_10crop.json").read_text())
    assert result["count"] == 32 and len(result["members"]) == 2
    assert "top-1" in out.stdout
    bad = evaluate_cli(*settings, f"--checkpoint={workdir}", "--crops=12", f"--workdir={tmp_path}")
    assert bad.returncode == 2 and "Unknown crop scheme '12'" in bad.stderr
    assert "Traceback" not in bad.stderr
    missing = evaluate_cli(*settings, f"--checkpoint={tmp_path}/nothing", f"--workdir={tmp_path}")
    assert missing.returncode == 2 and "No checkpoint directory" in missing.stderr


def test_merge_pretrained_adds_a_fresh_aux_head_the_file_lacks():
    fresh = random_variables(create("inception_v3", width=0.25, num_classes=10, aux_head=True))
    pretrained = random_variables(create("inception_v3", width=0.25, num_classes=10), seed=1)
    merged, kept = merge_pretrained(fresh, pretrained, "w", {"width": 0.25})
    assert "params/aux/head/kernel" in kept and "batch_stats/aux/conv_0/bn/mean" in kept
    np.testing.assert_array_equal(merged["params"]["head"]["kernel"],
                                  pretrained["params"]["head"]["kernel"])
