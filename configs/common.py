"""The paper's ImageNet recipe as a ConfigDict, shared by the per-network config files."""

from __future__ import annotations

import dataclasses

import ml_collections

from inception_jax.errors import UserError
from inception_jax.models import model_class
from inception_jax.topology import parse_topology


def imagenet_config(model_name: str, **model_knobs) -> ml_collections.ConfigDict:
    """The defaults of every run: Inception-v4 paper recipe on ImageNet-2012 at 299x299."""
    c = ml_collections.ConfigDict()
    c.seed = 0

    c.model = ml_collections.ConfigDict()
    c.model.name = model_name
    c.model.num_classes = 1000
    c.model.width = 1.0
    c.model.dropout_rate = 0.2  # keep 0.8
    c.model.aux_head = True  # slim trains v3/v4/IR-v2 with the aux head, loss weight 0.4
    c.model.bn_momentum = 0.9997  # slim
    c.model.dtype = "float32"  # "bfloat16" on GPU/TPU
    c.model.remat = False
    # Examples per BatchNorm statistics group in training: 0 = the whole global batch (one
    # cross-device reduction per BN layer); a divisor of the per-device batch = statistics
    # computed on each device with no communication (the paper: 32 per replica).
    c.model.bn_group_size = 0
    # Every other knob of the network, at the model's own default, so that all are overridable
    # (--config.model.residual_scales=...) and recorded with the run. None means "the model's
    # layout default" and is left out (ConfigDict cannot retype a None field from a flag).
    for field in dataclasses.fields(model_class(model_name)):
        if field.name not in ("parent", "name") and field.name not in c.model:
            if field.default is not None and field.default is not dataclasses.MISSING:
                c.model[field.name] = field.default
    c.model.update(model_knobs)

    c.data = ml_collections.ConfigDict()
    c.data.name = "imagenet2012"
    c.data.data_dir = ml_collections.FieldReference(None, field_type=str)  # None: TFDS default
    c.data.image_size = 299
    c.data.train_split = "train"
    c.data.eval_split = "validation"
    c.data.shuffle_buffer = 16_384
    c.data.color_distortion = True
    # slim's modes: "fast" (its default: random brightness, then saturation) or "full"
    # (brightness, saturation, hue, contrast in one of four orders drawn per image).
    c.data.color_distortion_mode = "fast"
    c.data.min_crop_area = 0.05  # distorted crop covers 5-100% of the image
    c.data.folder = ""  # for data.name = "image_folder": root/split/label/*.jpg
    c.data.builder = ml_collections.ConfigDict(  # for data.name = "inception_shapes"
        {"image_size": 64, "num_train": 2000, "num_test": 500, "seed": 0}
    )
    # For data.name = "synthetic": fixed random images and labels made on the devices (no host
    # work), to measure the training loop apart from the input pipeline. Sizes of an epoch.
    c.data.synthetic = ml_collections.ConfigDict(
        {"num_train": 1_281_167, "num_eval": 50_000, "num_classes": 1000}
    )
    # A damaged or undecodable image: "error" stops naming the file; "skip" drops it and lists it
    # in WORKDIR/skipped_images.txt.
    c.data.on_bad_image = "error"
    # The seed of the data order (shuffling, augmentation); None = `seed`. A population's
    # members share one order: each member's config.json records it here.
    c.data.shuffle_seed = ml_collections.FieldReference(None, field_type=int)

    c.train = ml_collections.ConfigDict()
    c.train.global_batch_size = 1024
    c.train.eval_batch_size = 1024
    # Micro-batches per optimizer step: the global batch is split into this many slices run one
    # after another in one jitted step (the paper's effective batch on fewer chips).
    c.train.grad_accum_steps = 1
    c.train.prefetch_batches = 2  # global batches put on the devices ahead of the step
    # Steps to trace with jax.profiler into WORKDIR/profile, e.g. (10, 15) = steps 10..14.
    c.train.profile_steps = ()
    # Also trace Python calls in the profile (slower steps, bigger traces; off: see StepProfiler).
    c.train.profile_python = False
    c.train.num_epochs = 100.0  # the Inception-v3 paper's length
    c.train.num_steps = ml_collections.FieldReference(None, field_type=int)  # overrides epochs
    c.train.init_weights = ""  # a weights file (import_weights, export) to fine-tune from
    # Parameter groups that get no updates (fine-tuning): unit names, "stem", "head", "aux",
    # or "re:REGEX" over parameter paths, e.g. ("stem", "block35"). See inception_jax/freeze.py.
    c.train.freeze = ()
    c.train.label_smoothing = 0.1
    c.train.aux_loss_weight = 0.4
    c.train.ema_decay = 0.9999
    c.train.ema_warmup = True  # TF's min(decay, (1 + step) / (10 + step))
    c.train.log_every_steps = 100
    # Scalars printed on the console; every scalar goes to TensorBoard and metrics.jsonl.
    c.train.console_metrics = (
        "loss", "accuracy", "learning_rate", "grad_norm", "images_per_s",
        "dead/prepool_zero_frac", "eval_top1", "eval_top5", "died_at_step",
    )
    c.train.eval_every_steps = 5000
    c.train.checkpoint_every_steps = 2000
    c.train.keep_checkpoints = 3

    c.optim = ml_collections.ConfigDict()
    c.optim.name = "rmsprop_tf1"  # TF1-exact (the paper's); or "rmsprop_torch" (timm's)
    c.optim.decay = 0.9
    c.optim.momentum = 0.9
    c.optim.eps = 1.0
    c.optim.grad_clip_norm = 2.0
    c.optim.weight_decay = 4e-5
    # "kernels" (slim's v3/v4 arg scope), "kernels_and_biases" (slim's IR-v2 arg scope: also
    # conv and dense biases, never BatchNorm's), "all" or "none".
    c.optim.weight_decay_mask = "kernels"

    c.schedule = ml_collections.ConfigDict()
    c.schedule.base_lr = 0.045
    c.schedule.reference_batch_size = 256  # lr = base_lr * global_batch / reference
    c.schedule.decay_rate = 0.94
    c.schedule.decay_epochs = 2.0
    c.schedule.warmup_epochs = 0.0

    c.monitor = ml_collections.ConfigDict()
    c.monitor.enabled = True  # dead-unit / residual-scale scalars at every log step
    c.monitor.dead_patience = 0  # K > 0: act when the pre-pool map is dead K logs running
    # The pre-pool zero fraction that counts as dead: 1.0 = only zeros (the paper's words).
    c.monitor.dead_threshold = 1.0
    c.monitor.on_dead = "stop"  # "stop" (checkpoint and end the run) or "warn"

    c.mesh = ml_collections.ConfigDict()
    # FSDP: > 1 shards parameters, optimizer state and moving average over this many devices
    # (the batch is split over all devices either way). `model_axis` is the old name.
    c.mesh.fsdp_axis = 1
    c.mesh.model_axis = c.mesh.get_ref("fsdp_axis")
    c.mesh.min_shard_mb = 4.0  # arrays smaller than this stay replicated (BN vectors, biases)
    # A population's members are split over this many device groups (each a data x fsdp mesh).
    c.mesh.population_axis = 1

    # Population training (inception_jax/population.py): one member per entry, each a dict of
    # population knobs (seed, model.residual_scales, model.dropout_rate, schedule.base_lr,
    # schedule.warmup_epochs, optim.weight_decay, train.label_smoothing, train.aux_loss_weight,
    # train.ema_decay) and an optional "name" (its folder). () = a single run.
    c.population = ml_collections.ConfigDict()
    c.population.members = ()
    # How the members run in the one program: "vmap" (batched) or "map" (one after another:
    # one member's activations at a time, 4x slower on CPU).
    c.population.execution = "vmap"
    return c


def make_smoke(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Shrinks a config to train on a 2-core CPU in a few minutes on the built-in dataset."""
    c.model.num_classes = 10
    c.model.width = 0.25
    c.model.aux_head = False
    c.model.bn_momentum = 0.9
    c.data.name = "inception_shapes"
    c.data.image_size = 75  # the networks' minimum
    c.data.eval_split = "test"
    c.data.synthetic = ml_collections.ConfigDict({"num_train": 2000, "num_eval": 500,
                                                  "num_classes": 10})
    c.data.shuffle_buffer = 2000
    c.data.color_distortion = False
    c.data.min_crop_area = 0.35  # small crops would cut the shape out
    c.train.global_batch_size = 32
    c.train.eval_batch_size = 64
    c.train.num_epochs = 8.0
    c.train.ema_decay = 0.99
    c.train.log_every_steps = 20
    c.train.eval_every_steps = 100
    c.train.checkpoint_every_steps = 50
    c.schedule.reference_batch_size = 32
    c.schedule.decay_epochs = 1.0
    return c


def make_finetune(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The smoke run at full width, starting from pretrained weights (`train.init_weights`).

    The head is re-initialised for the built-in dataset's 10 classes; every other knob must
    match the weights file (the error names the ones that differ, e.g. bn_scale=False for
    Keras and TF-Slim weights).
    """
    make_smoke(c)
    c.model.width = 1.0
    c.train.num_epochs = 2.0
    c.train.eval_every_steps = 50
    c.schedule.base_lr = 0.01
    return c


# Images per chip of a TPU slice's train step, from deviceless compiles (BENCHMARKS.md, "TPU
# train-step compiles": compiler estimates, no TPU ran them): bfloat16, remat off, stages
# unrolled (the TPU default), the largest measured power of two whose step the compiler fits
# beside two prefetched batches.
TPU_PER_CHIP_BATCH: dict[tuple[str, str], int] = {
    ("inception_resnet_v2", "v5e"): 128,  # 9.7 of 15.75 GiB (64: 7.8 GiB)
    ("inception_v4", "v5e"): 128,  # 7.9 GiB
    ("inception_resnet_v2", "v5p"): 256,  # 17.5 of 95.7 GiB: the batch, not HBM, limits it
}


def make_tpu(c: ml_collections.ConfigDict, topology: str) -> ml_collections.ConfigDict:
    """The ImageNet run on a TPU slice (`v5e:4x4`): bfloat16 and the measured per-chip batch.

    The global batch (and with it the learning rate, base_lr x batch / 256) is the per-chip
    batch times the slice's chips. A model or generation with no measurement is refused.
    """
    slice_ = parse_topology(topology)
    generation = slice_.generation.topology_prefix
    per_chip = TPU_PER_CHIP_BATCH.get((c.model.name, generation))
    if per_chip is None:
        start = 64 * slice_.chips
        raise UserError(
            f"no measured per-chip batch for {c.model.name} on {generation}: find the largest "
            f"that fits with python -m inception_jax.aot --config=configs/{c.model.name}.py "
            f"--topology={topology} --config.model.dtype=bfloat16 "
            f"--config.train.global_batch_size={start} --max_batch, then run without the "
            "variant with --config.model.dtype=bfloat16 and --config.train.global_batch_size and "
            "--config.train.eval_batch_size set to that batch x chips (or add it to "
            "configs/common.py's TPU_PER_CHIP_BATCH)."
        )
    c.model.dtype = "bfloat16"
    c.train.global_batch_size = c.train.eval_batch_size = per_chip * slice_.chips
    return c


VARIANTS = {"smoke": make_smoke, "finetune": make_finetune}


def apply_variant(c: ml_collections.ConfigDict, arg: str | None) -> ml_collections.ConfigDict:
    """Applies the `:variant` of a config file ("" = the full ImageNet run; a TPU slice such as
    `v5e:4x4` = that run sized for the slice)."""
    if arg in (None, ""):
        return c
    if ":" in arg:
        return make_tpu(c, arg)
    if arg not in VARIANTS:
        raise UserError(
            f"unknown config variant {arg!r}; use one of {', '.join(VARIANTS)}, or a TPU slice "
            "such as v5e:4x4"
        )
    return VARIANTS[arg](c)
