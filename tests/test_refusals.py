"""Every bad input the code checks, what it says, and a test that walks the list.

`ROWS` is the table "What we refuse and what we say" (docs/refusals.md):
`python -m tools.refusals_table` prints it, with the messages the code gives today. Each row
triggers its input as cheaply as it can (mostly a direct call) and checks the message; two
rows run the training command to check its one `error:` line and exit status 2.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import shutil
import subprocess
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from absl import flags as absl_flags
from ml_collections import config_flags

from configs import inception_v4 as v4_config
from inception_jax import (
    cli,
    export,
    import_weights,
    loss_check,
    optim,
    plot,
    predict,
    profiling,
    sharding,
    sweep,
    trainer,
)
from inception_jax.checkpoint import Checkpointer, read_checkpoint
from inception_jax.data import crops, pipeline
from inception_jax.errors import UserError
from inception_jax.evaluation import (
    Member,
    class_offsets,
    evaluate,
    member_from,
    member_from_weights,
)
from inception_jax.finetune import merge_pretrained
from inception_jax.interop import keras, slim
from inception_jax.models import create
from inception_jax.weights import check_fits, read_weights, save_weights
from tests.helpers import ROOT, flags, random_variables, run_env, tiny_config

TINY_V4 = {"width": 0.125, "blocks": (1, 1, 1), "num_classes": 10}


@dataclasses.dataclass(frozen=True)
class Row:
    """One refused input: what the user did, where, how to trigger it, what we say."""

    input: str
    where: str
    trigger: Callable[[Any], Any]
    says: str  # a regex the message must match
    error: type[BaseException] = UserError  # what is raised (the CLI prints UserError's one line)
    warning: bool = False  # a warning and the run goes on (not a refusal)
    gap: str = ""  # a known problem today and its proposed fix: the row is expected to fail


# ---- triggers ---------------------------------------------------------------------------------

def data(ctx, **overrides) -> ml_collections.ConfigDict:
    return tiny_config(ctx.data_dir, **{f"data.{k}": v for k, v in overrides.items()}).data


def config_section(**values) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(values)


def small_state(shift):
    noise = np.random.default_rng(0).normal(size=(30, 100)).astype(np.float32)
    return {"w": jnp.asarray(noise) + shift, "step": jnp.int32(shift)}


def checkpoints(ctx, meta=None) -> Path:
    directory = ctx.tmp / "work" / "checkpoints"
    c = Checkpointer(str(directory), 3, meta or {"model": "inception_v4"})
    for step in (2, 4):
        c.save(step, small_state(step))
    c.close()
    return directory


def truncate_largest(step_dir: Path) -> None:
    path = max((p for p in step_dir.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    os.truncate(path, path.stat().st_size // 2)


def resume(directory: Path, meta=None):
    import jax

    c = Checkpointer(str(directory), 3, meta or {"model": "inception_v4"})
    c.check_compatible()
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
                          small_state(0))
    try:
        return c.restore(target)
    finally:
        c.close()


def damaged_newest(ctx):
    directory = checkpoints(ctx)
    truncate_largest(directory / "4")
    resume(directory)


def none_readable(ctx):
    directory = checkpoints(ctx)
    truncate_largest(directory / "4")
    truncate_largest(directory / "2")
    resume(directory)


def other_run(ctx):
    directory = checkpoints(ctx, {"model": "inception_v3"})
    resume(directory, {"model": "inception_v4"})


def flipped_newest(ctx):
    directory = checkpoints(ctx)
    path = max((p for p in (directory / "4" / "state").rglob("*") if p.is_file()),
               key=lambda p: p.stat().st_size)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    resume(directory)


def flipped_weights(ctx):
    path = ctx.tmp / "flipped.safetensors"
    data = bytearray(Path(ctx.weights).read_bytes())
    data[-100] ^= 0xFF  # inside the last tensor's bytes
    path.write_bytes(bytes(data))
    read_weights(str(path))


def unreadable_for_evaluation(ctx):
    directory = checkpoints(ctx)
    truncate_largest(directory / "4")
    read_checkpoint(str(directory.parent))


def a_file(ctx) -> Path:
    path = ctx.tmp / "a_file"
    path.write_text("not a directory")
    return path


def jpeg(path: Path, damaged: bool = False) -> Path:
    import tensorflow as tf

    pixels = tf.constant(np.random.default_rng(0).integers(0, 255, (40, 40, 3)), tf.uint8)
    encoded = tf.io.encode_jpeg(pixels).numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encoded[: len(encoded) // 3] if damaged else encoded)
    return path


def damaged_image(ctx):
    root = ctx.tmp / "folder"
    for i in range(6):
        jpeg(root / "train" / "ab"[i % 2] / f"{i}.jpg")
    jpeg(root / "train" / "a" / "broken.jpg", damaged=True)
    cfg = data(ctx, name="image_folder", folder=str(root), eval_split="train",
               on_bad_image="error")
    for _ in pipeline.train_batches(cfg, 7, 0):
        pass


def nan_loss(ctx):
    check = loss_check.LossCheck(str(ctx.tmp), types.SimpleNamespace(latest_step=lambda: 2))
    check.push(3, jnp.float32(jnp.nan))
    check.check()


def weights_of(ctx, **knobs) -> dict:
    return random_variables(create("inception_v4", **{**TINY_V4, **knobs}), image_size=75)


def safetensors_without_our_metadata(ctx):
    from safetensors.numpy import save_file

    path = ctx.tmp / "timm.safetensors"
    save_file({"conv.weight": np.zeros((2, 2), np.float32)}, str(path))
    return path


def truncated_weights(ctx):
    path = ctx.tmp / "cut.safetensors"
    shutil.copy(ctx.weights, path)
    os.truncate(path, path.stat().st_size // 2)
    return path


def member(num_classes: int) -> Member:
    return Member("run", "inception_v4", create("inception_v4", num_classes=num_classes), {})


def unknown_config_key(ctx):
    """absl parses the flags and reports them (FATAL Flags parsing error, exit status 1)."""
    values = absl_flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "", flag_values=values, lock_config=True)
    values(["train.py", f"--config={ROOT / 'configs/inception_v4.py'}:smoke",
            "--config.train.nmu_steps=3"])


def population(ctx, *members, **overrides):
    """create_setup of the tiny config training `members` as a population."""
    config = tiny_config(ctx.data_dir, **{"data.name": "synthetic", **overrides})
    config.population.members = members
    return trainer.create_setup(config)


def group_folder_for_evaluation(ctx):
    checkpoints(ctx, {"model": {"name": "inception_v4"}, "population": {
        "members": [{"name": "seed=0", "seed": 0}, {"name": "seed=1", "seed": 1}]}})
    return member_from(None, str(ctx.tmp / "work"))


def the_cli(workdir: Callable[[Any], Path], devices: int = 8, **overrides) -> Callable:
    """A trigger running train.py (tiny config): raises UserError(its message) if it printed
    one `error: ...` line and exited with status 2, AssertionError otherwise."""

    def trigger(ctx):
        done = subprocess.run(flags(ctx.data_dir, workdir(ctx), **overrides),
                              env=run_env(devices), capture_output=True, text=True, timeout=300)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and lines and lines[-1].startswith("error: "), (
            done.returncode, done.stderr[-2000:])
        assert "Traceback" not in done.stderr, done.stderr[-2000:]
        raise UserError(lines[-1].removeprefix("error: "))

    return trigger


# ---- the table --------------------------------------------------------------------------------

TRAIN = "train.py"
CONFIG = "train.py `--config.…`"
EVAL = "evaluate"
IMPORT = "import_weights"
ROWS = [
    Row("Unknown model name", CONFIG, lambda ctx: create("inception_v9"),
        r"^Unknown model 'inception_v9'\. Known models: inception_resnet_v1, "),
    Row("Unknown model option", CONFIG, lambda ctx: create("inception_v4", wdith=0.5),
        r"^inception_v4 has no option\(s\) wdith\. Options: aux_head, "),
    Row("Unknown config variant (`file.py:variant`)", TRAIN,
        lambda ctx: v4_config.get_config("tiny"),
        r"^unknown config variant 'tiny'; use one of smoke, finetune, or a TPU slice such as "
        r"v5e:4x4"),
    Row("TPU slice variant with no measured per-chip batch", TRAIN,
        lambda ctx: v4_config.get_config("v6e:4x4"),
        r"^no measured per-chip batch for inception_v4 on v6e: find the largest that fits with "
        r"python -m inception_jax\.aot "),
    Row("Misspelled config key", TRAIN, unknown_config_key,
        r"^Unknown command line flag 'config\.train\.nmu_steps'", error=absl_flags.Error),
    Row("Unknown dataset", CONFIG, lambda ctx: pipeline.get_builder(data(ctx, name="cifar")),
        r"^Unknown dataset 'cifar'\. Known datasets: inception_shapes, imagenet2012"),
    Row("ImageNet not prepared", CONFIG,
        lambda ctx: pipeline.get_builder(data(ctx, name="imagenet2012",
                                              data_dir=str(ctx.tmp))),
        r"^ImageNet-2012 is not prepared in .*\n.*ILSVRC2012_img_train\.tar"),
    Row("`data.folder` missing (image_folder)", CONFIG,
        lambda ctx: pipeline.get_builder(data(ctx, name="image_folder",
                                              folder=str(ctx.tmp / "none"))),
        r"^data\.folder='.*none' is not a directory\. Point it at a folder laid out as "),
    Row("Split the dataset lacks", CONFIG,
        lambda ctx: pipeline.dataset_info(data(ctx, eval_split="validation")),
        r"^inception_shapes has no split 'validation'; it has \['test', 'train'\]"),
    Row("Fewer training examples than one batch", CONFIG,
        lambda ctx: next(pipeline.train_batches(data(ctx), 256, 0)),
        r"^inception_shapes has 128 training examples per process, fewer than one batch of 256"),
    Row("Damaged image file", CONFIG + " (data.on_bad_image='error')", damaged_image,
        r"broken\.jpg"),
    Row("Image size below the network's minimum", CONFIG,
        lambda ctx: create("inception_resnet_v2").check_image_size(64, "--config.data.image_size"),
        r"^--config\.data\.image_size=64 is below InceptionResNetV2's minimum of 75"),
    Row("Class count differs from the dataset's", CONFIG,
        lambda ctx: trainer.create_setup(tiny_config(ctx.data_dir, **{"model.num_classes": 5})),
        r"^model\.num_classes=5 but dataset 'inception_shapes' has 10 classes; set "),
    Row("Batch not divisible by the devices", CONFIG,
        lambda ctx: sharding.check_batch_size(12),
        r"^train\.global_batch_size=12 must be divisible by the number of devices \(8\)"),
    Row("Batch not divisible by the devices, from the command line", TRAIN,
        the_cli(lambda ctx: ctx.tmp / "work", **{"train.global_batch_size": 12}),
        r"^train\.global_batch_size=12 must be divisible by the number of devices \(8\)"),
    Row("FSDP axis not dividing the devices", CONFIG, lambda ctx: sharding.create_mesh(3),
        r"^mesh\.fsdp_axis=3 must be >= 1 and divide the 8 devices"),
    Row("No run length", CONFIG,
        lambda ctx: trainer.total_steps(config_section(num_steps=None, num_epochs=0.0), 10),
        r"^Set train\.num_steps or train\.num_epochs to a positive number"),
    Row("Gradient accumulation below 1", CONFIG,
        lambda ctx: trainer.check_accumulation(
            config_section(grad_accum_steps=0, global_batch_size=16), 0, 8),
        r"^train\.grad_accum_steps must be an int >= 1, got 0"),
    Row("Batch not divisible into micro-batches over the devices", CONFIG,
        lambda ctx: trainer.check_accumulation(
            config_section(grad_accum_steps=4, global_batch_size=16), 0, 8),
        r"^train\.global_batch_size=16 must be divisible by train\.grad_accum_steps \(4\) x the "
        r"number of devices \(8\)"),
    Row("BatchNorm group not dividing the micro-batch", CONFIG,
        lambda ctx: trainer.check_accumulation(
            config_section(grad_accum_steps=1, global_batch_size=16), 3, 8),
        r"^model\.bn_group_size=3 must divide the micro-batch of 16 examples"),
    Row("Bad profile window", CONFIG,
        lambda ctx: profiling.StepProfiler((5, 2), str(ctx.tmp), python=False),
        r"^train\.profile_steps must be empty or \(first, last\) with 0 <= first < last, "
        r"got \(5, 2\)"),
    Row("Unknown dead-network action", CONFIG,
        lambda ctx: trainer.create_setup(tiny_config(ctx.data_dir,
                                                     **{"monitor.on_dead": "panic"})),
        r"^monitor\.on_dead must be 'stop' or 'warn', got 'panic'"),
    Row("Dead-network threshold outside (0, 1]", CONFIG,
        lambda ctx: trainer.create_setup(tiny_config(ctx.data_dir,
                                                     **{"monitor.dead_threshold": 1.5})),
        r"^monitor\.dead_threshold must be in \(0, 1\]"),
    Row("Unknown residual mode", CONFIG,
        lambda ctx: create("inception_resnet_v2", residual_mode="rezero"),
        r"^InceptionResNetV2: residual_mode must be one of \('fixed', 'scalar', 'channel', 'bn'\)"),
    Row("Unknown colour-distortion mode", CONFIG,
        lambda ctx: pipeline.color_distortion(data(ctx, color_distortion_mode="slim")),
        r"^data\.color_distortion_mode='slim': use 'fast' \(slim's default"),
    Row("Unknown optimizer", CONFIG,
        lambda ctx: optim.create_optimizer(tiny_config(ctx.data_dir, **{"optim.name": "adam"})
                                           .optim, lambda step: 0.1),
        r"^optim\.name must be one of \('rmsprop_tf1', 'rmsprop_torch'\), got 'adam'"),
    Row("Unknown weight-decay mask", CONFIG,
        lambda ctx: optim.create_optimizer(
            tiny_config(ctx.data_dir, **{"optim.weight_decay_mask": "bn"}).optim,
            lambda step: 0.1),
        r"^optim\.weight_decay_mask must be one of "
        r"\('kernels', 'kernels_and_biases', 'all', 'none'\)"),
    Row("Learning-rate setting not positive", CONFIG,
        lambda ctx: optim.learning_rate_schedule(
            tiny_config(ctx.data_dir, **{"schedule.base_lr": 0.0}).schedule, 10, 32),
        r"^schedule\.base_lr must be > 0, got 0\.0"),
    Row("Negative warm-up", CONFIG,
        lambda ctx: optim.learning_rate_schedule(
            tiny_config(ctx.data_dir, **{"schedule.warmup_epochs": -1.0}).schedule, 10, 32),
        r"^schedule\.warmup_epochs must be >= 0, got -1\.0"),
    Row("Loss becomes NaN or infinite", TRAIN, nan_loss,
        r"^Loss became nan at step 3\. The last good checkpoint \(step 2\) is kept in "),
    Row("Workdir holding another run's checkpoints", TRAIN, other_run,
        r" holds a checkpoint \(step 4\) of a different run \(model: saved 'inception_v3', "
        r"now 'inception_v4'\)\. Use another --workdir"),
    Row("Newest checkpoint damaged, an older one good", TRAIN, damaged_newest,
        r"^Checkpoint .*/4 is damaged \(state/\S+ has \d+ bytes, \d+ expected\); moved it to "
        r".*/4\.damaged and resuming from step 2\.$", warning=True),
    Row("Newest checkpoint's bytes changed (its checksums differ)", TRAIN, flipped_newest,
        r"^Checkpoint .*/4 is damaged \(state/\S+: crc32c [0-9a-f]{8} found, [0-9a-f]{8} "
        r"expected\); moved it to .*/4\.damaged and resuming from step 2\.$", warning=True),
    Row("No checkpoint readable", TRAIN, none_readable,
        r"^No checkpoint in .* can be read \(step 4: state/\S+ has \d+ bytes, \d+ expected; "
        r"step 2: state/\S+ has \d+ bytes, \d+ expected\)\. Nothing was changed: "),
    Row("Parameter group to freeze that names nothing", CONFIG,
        lambda ctx: trainer.create_setup(tiny_config(
            ctx.data_dir, **{"train.freeze": ("re:^nothing/",)})),
        r"^train\.freeze entry 're:\^nothing/' matches no parameter of inception_resnet_v1 "
        r"\(groups: stem, reduction_a, "),
    Row("Parameter group to freeze that does not exist", CONFIG,
        lambda ctx: trainer.create_setup(tiny_config(ctx.data_dir, **{"train.freeze": ("body",)})),
        r"^train\.freeze entry 'body' is not a group of inception_resnet_v1: use one of stem, "),
    Row("Freezing every parameter", CONFIG,
        lambda ctx: trainer.create_setup(tiny_config(
            ctx.data_dir, **{"train.freeze": ("stem", "reduction_a", "reduction_b", "head")})),
        r"^train\.freeze=\('stem', 'reduction_a', 'reduction_b', 'head'\) freezes every "
        r"parameter of inception_resnet_v1: nothing would train"),
    Row("Workdir that cannot be written", TRAIN,
        lambda ctx: Checkpointer(str(a_file(ctx) / "work" / "checkpoints"), 3, {}),
        r"^Cannot write to the checkpoint directory .*a_file/work/checkpoints \(Not a "
        r"directory\): choose a directory you can write to"),
    Row("Workdir that cannot be written, from the command line", TRAIN,
        the_cli(lambda ctx: a_file(ctx) / "work", devices=1),
        r"^Cannot write to --workdir .*a_file/work \(Not a directory\)"),
    Row("Checkpoint path that is not a workdir", EVAL,
        lambda ctx: read_checkpoint(str(ctx.tmp / "none")),
        r"^No checkpoint directory at .*none: pass the --workdir of a training run"),
    Row("Workdir without a finished checkpoint", EVAL,
        lambda ctx: ((ctx.tmp / "checkpoints").mkdir(), read_checkpoint(str(ctx.tmp))),
        r"holds no complete checkpoint: train first"),
    Row("Damaged checkpoint", EVAL, unreadable_for_evaluation,
        r"^The checkpoint at step 4 in .* could not be read \(state/\S+ has \d+ bytes, \d+ "
        r"expected\)\. It may be incomplete or damaged"),
    Row("Weights file whose tensors changed (its checksum differs)", EVAL, flipped_weights,
        r"flipped\.safetensors is damaged: its tensors' checksum is crc32c:[0-9a-f]{8}, the file "
        r"records crc32c:[0-9a-f]{8}\. Copy or download it again"),
    Row("Neither or both of --weights and --checkpoint", "predict, export",
        lambda ctx: member_from(None, None),
        r"^Name the network: --weights=FILE \(a weights file\) or --checkpoint=WORKDIR"),
    Row("Unknown export format", "export", lambda ctx: export.check_format("onnx", ["cpu"]),
        r"^--format='onnx' is not one of weights, stablehlo, saved_model"),
    Row("Unknown export platform", "export",
        lambda ctx: export.check_format("stablehlo", ["cpu", "rocm"]),
        r"^--platforms='cpu,rocm': name one or more of cpu, cuda, tpu"),
    Row("Export of a workdir with no checkpoint", "export",
        lambda ctx: member_from(None, str(ctx.tmp / "none")),
        r"^No checkpoint directory at .*none: pass the --workdir of a training run"),
    Row("Nothing to evaluate", EVAL, lambda ctx: evaluate([], data(ctx)),
        r"^Nothing to evaluate: pass at least one --checkpoint or --weights"),
    Row("Model and dataset class counts differ", EVAL,
        lambda ctx: class_offsets([member(7)], 10),
        r"^run predicts 7 classes but the dataset has 10: evaluate it on the dataset it was "
        r"trained for"),
    Row("Unknown crop scheme", EVAL, lambda ctx: crops.check_scheme("12"),
        r"^Unknown crop scheme '12': use one of center, 10, 144"),
    Row("Weights file missing", "--config.train.init_weights, evaluate --weights, predict",
        lambda ctx: read_weights(str(ctx.tmp / "none.safetensors")),
        r"^Weights file .*none\.safetensors does not exist\. Make one "),
    Row("Truncated weights file", "--config.train.init_weights, evaluate --weights, predict",
        lambda ctx: read_weights(str(truncated_weights(ctx))),
        r"cut\.safetensors is not a readable safetensors file \(.*\)\. Re-download it"),
    Row("Weights file of another format (e.g. timm's .safetensors)",
        "--config.train.init_weights, evaluate --weights, predict",
        lambda ctx: read_weights(str(safetensors_without_our_metadata(ctx))),
        r"timm\.safetensors is a safetensors file but not an inception_jax weights file"),
    Row("Weights of another model", "--config.train.init_weights",
        lambda ctx: trainer._start_from_weights(None, str(ctx.weights), "inception_v3"),
        r"holds inception_v4 weights but the config trains inception_v3: set "
        r"--config\.model\.name=inception_v4"),
    Row("Weights that do not fit the model", "evaluate --weights, predict",
        lambda ctx: check_fits(create("inception_v4", **{**TINY_V4, "width": 0.25}),
                               read_weights(str(ctx.weights))[2], 75, "w.safetensors"),
        r"^w\.safetensors does not fit the model \(\d+ variables differ, e\.g\. "),
    Row("Fine-tuning weights made with other knobs", "--config.train.init_weights",
        lambda ctx: merge_pretrained(weights_of(ctx, width=0.25), read_weights(
            str(ctx.weights))[2], "w.safetensors", TINY_V4),
        r"^w\.safetensors does not fit the configured model: \d+ variables missing or "
        r"mis-shaped .* The file was made with: --config\.model\.blocks"),
    Row("Source format not recognised", IMPORT,
        lambda ctx: import_weights.detect_format("model.onnx"),
        r"^Cannot tell the format of model\.onnx from its name: pass --format"),
    Row("Source file missing", IMPORT,
        lambda ctx: import_weights.import_weights(str(ctx.tmp / "none.pth"), "inception_v4"),
        r"none\.pth does not exist"),
    Row("Truncated timm .safetensors", IMPORT,
        lambda ctx: import_weights.import_weights(str(truncated_weights(ctx)), "inception_v4"),
        r"cut\.safetensors is not a readable safetensors file"),
    Row("Keras file that is not HDF5", IMPORT,
        lambda ctx: (a_file(ctx).rename(ctx.tmp / "w.h5"),
                     import_weights.import_weights(str(ctx.tmp / "w.h5"), "inception_v3")),
        r"w\.h5 is not a readable Keras weights file \(.*\): it may be truncated or not HDF5"),
    Row("TF-Slim checkpoint missing", IMPORT,
        lambda ctx: slim.load_checkpoint(
            str(ctx.tmp / "model.ckpt")),
        r"^No TF checkpoint at .*model\.ckpt \(expected .*model\.ckpt\.index\)"),
    Row("TF-Slim background option", IMPORT,
        lambda ctx: slim.convert(
            "inception_v4", {}, background="maybe"),
        r"^background must be 'drop' or 'keep', got 'maybe'"),
    Row("Model the source library does not have", IMPORT,
        lambda ctx: keras.convert(
            "inception_v4", {}),
        r"^Keras import supports inception_v3, inception_resnet_v2; got 'inception_v4'"),
    Row("Image path missing", "predict",
        lambda ctx: predict.predict(
            member_from_weights(str(ctx.weights)), [str(ctx.tmp / "none.jpg")], image_size=75),
        r"^No image at .*none\.jpg: check the path"),
    Row("File that is not an image", "predict",
        lambda ctx: predict.predict(
            member_from_weights(str(ctx.weights)), [str(a_file(ctx))], image_size=75),
        r"a_file is not a JPEG, PNG, GIF or BMP image"),
    Row("No inputs named", "predict, plot", lambda ctx: cli.positional(["predict"], "USAGE"),
        r"^Name at least one input: USAGE"),
    Row("Workdir without metrics", "plot",
        lambda ctx: plot.plot_runs([str(ctx.tmp)], "x.png"),
        r"^No metrics\.jsonl in .*: pass training workdirs"),
    Row("Sweep file missing", "sweep",
        lambda ctx: sweep.load_sweep(str(ctx.tmp / "s.py")),
        r"^No sweep file .*s\.py; see configs/sweeps/"),
    Row("Sweep with nothing to vary", "sweep",
        lambda ctx: sweep.expand({"config": "c.py"}),
        r"^The sweep has nothing to vary: give it `axes` or `variants`"),
    Row("Sweep axis that is not a list", "sweep",
        lambda ctx: sweep.expand(
            {"config": "c.py", "axes": {"seed": 3}}),
        r"^Sweep axis 'seed' must be a non-empty list, got 3"),
    Row("Sweep naming no config", "sweep",
        lambda ctx: sweep.expand({"axes": {"seed": [1, 2]}}),
        r"^The sweep names no config: set `config` or a `config` axis"),
    Row("Population members differing in a knob that shapes the program", CONFIG,
        lambda ctx: population(ctx, {"seed": 0}, {"seed": 1, "train.global_batch_size": 32}),
        r"^population\.members\[1\] sets train\.global_batch_size, which is not a population "
        r"knob: members may differ only in seed, model\.residual_scales, .* Runs that differ in "
        r"train\.global_batch_size train as separate populations"),
    Row("Population member with residual scales the network refuses", CONFIG,
        lambda ctx: population(ctx, {"seed": 0},
                               {"seed": 1, "model.residual_scales": (0.1, 0.1)}),
        r"residual_scales must be 3 positive numbers"),
    Row("Population members that are the same", CONFIG,
        lambda ctx: population(ctx, {"seed": 1}, {"seed": 1}),
        r"^population\.members has members with the same name or settings"),
    Row("Population not split evenly over the devices", CONFIG,
        lambda ctx: population(ctx, {"seed": 0}, {"seed": 1}, {"seed": 2},
                               **{"mesh.population_axis": 2}),
        r"^mesh\.population_axis=2 must divide the 3 members"),
    Row("Unknown way to run a population's members", CONFIG,
        lambda ctx: population(ctx, {"seed": 0}, {"seed": 1},
                               **{"population.execution": "loop"}),
        r"^population\.execution must be one of \('vmap', 'map'\), got 'loop'"),
    Row("Population starting from a weights file", CONFIG,
        lambda ctx: population(ctx, {"seed": 0}, {"seed": 1},
                               **{"train.init_weights": "w.safetensors"}),
        r"^train\.init_weights is not supported for a population"),
    Row("A population's folder where one run is expected", "evaluate, predict, export",
        group_folder_for_evaluation,
        r"holds a population of 2 members: pass one member's folder, e\.g\. .*/seed=0"),
]


def outcome(row: Row, ctx) -> tuple[BaseException | None, str]:
    """(the exception raised, its message) — for a warning row, (None, the warning)."""
    if row.warning:
        records = []
        handler = logging.Handler()
        handler.emit = records.append
        logger = logging.getLogger("inception_jax.checkpoint")
        logger.addHandler(handler)
        try:
            row.trigger(ctx)
        finally:
            logger.removeHandler(handler)
        warnings = [r.getMessage() for r in records if r.levelno == logging.WARNING]
        assert len(warnings) == 1, warnings
        return None, warnings[0]
    try:
        row.trigger(ctx)
    except pytest.skip.Exception:
        raise
    except Exception as e:  # noqa: BLE001 - the row says which it expects
        return e, str(e)
    raise AssertionError(f"{row.input}: nothing was refused")


# ---- the test ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "v4.safetensors"
    model = create("inception_v4", **TINY_V4)
    save_weights(str(path), random_variables(model, image_size=75), "inception_v4", TINY_V4)
    return path


def params(rows):
    return [pytest.param(r, id=re.sub(r"\W+", "_", r.input).strip("_").lower(),
                         marks=[pytest.mark.xfail(strict=True, reason=r.gap)] if r.gap else [])
            for r in rows]


def checked_message(row: Row, ctx) -> str:
    """The row's message, after checking its type, its words and that it is short."""
    error, message = outcome(row, ctx)
    assert row.warning or isinstance(error, row.error), (type(error), message[-2000:])
    assert re.search(row.says, message), message
    first = message.splitlines()[0]
    assert "Traceback" not in message and "TensorStore" not in message and len(first) < 800
    return message


@pytest.mark.parametrize("row", params(ROWS))
def test_each_refused_input_gets_its_message(row, data_dir, weights, tmp_path):
    checked_message(row, types.SimpleNamespace(tmp=tmp_path, data_dir=data_dir, weights=weights))


def test_the_table_is_long_enough():
    assert len(ROWS) >= 15 and len({r.input for r in ROWS}) == len(ROWS)


if __name__ == "__main__":
    sys.exit("Run `python -m tools.refusals_table` to print the table.")
