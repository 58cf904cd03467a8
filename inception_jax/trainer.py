"""The training loop: the thin, side-effecting shell around the pure step functions.

`train_and_evaluate(config, workdir)` builds the model, data, optimizer and sharded state
from the config, resumes from the newest checkpoint in `workdir` if there is one, and trains
with periodic metrics, evaluation of the moving-average weights, and checkpoints (also on
SIGTERM). A run is a pure function of its config: resuming continues the same stream.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from clu import parameter_overview
from tqdm import tqdm

from inception_jax import population, sharding
from inception_jax.checkpoint import Checkpointer
from inception_jax.data.bad_images import skipped_list_path
from inception_jax.data.class_names import run_class_names, save_run_class_names
from inception_jax.data.device import (
    prefetch_to_device,
    synthetic_batches,
    synthetic_eval_batches,
)
from inception_jax.data.pipeline import DatasetInfo, dataset_info, eval_batches, train_batches
from inception_jax.errors import UserError
from inception_jax.evaluation import accumulate_hits
from inception_jax.finetune import merge_pretrained
from inception_jax.freeze import NOTHING, Frozen, freeze_optimizer
from inception_jax.freeze import resolve as resolve_freeze
from inception_jax.hparams import HParams
from inception_jax.interop.common import WeightImportError
from inception_jax.loss_check import LossCheck
from inception_jax.metrics import create_writer
from inception_jax.models import InceptionNet, create
from inception_jax.models.modules import target_platform
from inception_jax.monitor import DeadNetworkWatch, health_step
from inception_jax.optim import (
    check_schedule,
    create_optimizer,
    decay_steps,
    ema_init,
    staircase_schedule,
)
from inception_jax.preemption import Preemption
from inception_jax.profiling import StepProfiler
from inception_jax.train_step import TrainState, eval_step, init_state, train_step
from inception_jax.weights import read_weights

log = logging.getLogger(__name__)


def build_model(model_cfg: ml_collections.ConfigDict) -> InceptionNet:
    """The network named by `config.model.name` with the section's other fields as knobs."""
    kwargs = {k: v for k, v in model_cfg.to_dict().items() if k != "name"}
    return create(model_cfg.name, **kwargs)


def total_steps(train_cfg: ml_collections.ConfigDict, steps_per_epoch: int) -> int:
    """The run's length in steps, from `num_steps` or else `num_epochs` (the one conversion)."""
    if train_cfg.num_steps is not None and train_cfg.num_steps > 0:
        return int(train_cfg.num_steps)
    if train_cfg.num_epochs is None or train_cfg.num_epochs <= 0:
        raise UserError("Set train.num_steps or train.num_epochs to a positive number.")
    return max(1, int(math.ceil(train_cfg.num_epochs * steps_per_epoch)))


# Model knobs that change how the step executes, not the state's shapes or the run's meaning:
# a run may resume with other values (the log says which changed).
EXECUTION_KNOBS = tuple(f"model.{k}" for k in ("remat", "dtype", "conv_impl", "scan_unroll"))


def run_identity(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """What a checkpoint must match to be resumed by this config (but `EXECUTION_KNOBS`).

    `train.freeze` shapes the optimizer state, so a run that freezes records what it froze
    (a run that freezes nothing records nothing, as before the knob existed)."""
    identity = {
        "model": config.model.to_dict(),
        "image_size": config.data.image_size,
        "dataset": config.data.name,
    }
    if config.train.freeze:
        identity["freeze"] = list(config.train.freeze)
    return identity


SYNTHETIC = "synthetic"


def data_info(data_cfg: ml_collections.ConfigDict) -> DatasetInfo:
    """Sizes of the configured dataset; `synthetic` takes them from `data.synthetic`."""
    if data_cfg.name == SYNTHETIC:
        s = data_cfg.synthetic
        return DatasetInfo(s.num_train, s.num_eval, s.num_classes, data_cfg.image_size)
    return dataset_info(data_cfg)


def training_batches(config: ml_collections.ConfigDict, setup: Setup, start_step: int,
                     workdir: str) -> tuple[Any, Any]:
    """(the run's global training batches from `start_step` on, prefetched onto the devices;
    a function giving the number of damaged images skipped so far)."""
    data_cfg, train_cfg = config.data, config.train
    if data_cfg.name == SYNTHETIC:
        batches = synthetic_batches(train_cfg.global_batch_size, data_cfg.image_size,
                                    setup.model.num_classes, population.data_seed(config),
                                    setup.batch_sharding)
        return batches, lambda: 0
    host = train_batches(data_cfg, train_cfg.global_batch_size, population.data_seed(config),
                         start_step=start_step,
                         skipped_list=skipped_list_path(workdir, jax.process_index()))
    batches = prefetch_to_device(host, setup.batch_sharding, train_cfg.prefetch_batches)
    return batches, lambda: host.num_listed


def evaluate(setup: Setup, variables: Any, config: ml_collections.ConfigDict,
             workdir: str | None = None) -> dict[str, float]:
    """Top-1/top-5 accuracy of `variables` over the whole eval split. Damaged eval images
    skipped (`data.on_bad_image=skip`) join the run's list in `workdir`."""
    data_cfg, batch = config.data, config.train.eval_batch_size
    if data_cfg.name == SYNTHETIC:
        info = data_info(data_cfg)
        batches = synthetic_eval_batches(batch, data_cfg.image_size, info.num_classes,
                                         info.num_eval_examples, population.data_seed(config))
    else:
        skipped = skipped_list_path(workdir, jax.process_index()) if workdir else None
        batches = eval_batches(data_cfg, batch, skipped_list=skipped)
    result = accumulate_hits(setup.eval, variables, batches, setup.batch_sharding)
    return {"eval_top1": result["top1"], "eval_top5": result["top5"]}


def check_accumulation(train_cfg: ml_collections.ConfigDict, bn_group_size: int,
                       devices: int) -> None:
    """The global batch must split into `grad_accum_steps` micro-batches over every device,
    and BatchNorm groups must tile a micro-batch."""
    accum, batch = train_cfg.grad_accum_steps, train_cfg.global_batch_size
    if not isinstance(accum, int) or accum < 1:
        raise UserError(f"train.grad_accum_steps must be an int >= 1, got {accum!r}.")
    if batch % (accum * devices):
        raise UserError(
            f"train.global_batch_size={batch} must be divisible by train.grad_accum_steps "
            f"({accum}) x the number of devices ({devices}): each micro-batch is split over "
            "every device."
        )
    micro = batch // accum
    if bn_group_size and micro % bn_group_size:
        raise UserError(
            f"model.bn_group_size={bn_group_size} must divide the micro-batch of {micro} "
            f"examples (train.global_batch_size / train.grad_accum_steps)."
        )
    if bn_group_size and (micro // devices) % bn_group_size:
        log.info("model.bn_group_size=%d does not divide the %d examples per device and "
                 "micro-batch: BatchNorm statistics groups span devices (communication).",
                 bn_group_size, micro // devices)


@dataclasses.dataclass
class Setup:
    """Everything built from the config for one mesh: model, optimizer, shardings, jitted fns."""

    model: InceptionNet
    members: list[population.MemberRun]  # a population's members; [] for a single run
    class_names: tuple[str, ...]
    frozen: Frozen
    steps_per_epoch: int
    num_steps: int
    batch_sharding: Any
    state_sharding: Any
    abstract_state: Any
    init: Any  # () -> sharded TrainState (a population: PopulationState)
    step: Any  # (state, global batch) -> (state, metrics)
    eval: Any  # (ema variables, global batch) -> sums
    health: Any  # (state, global batch) -> dead-unit and residual-scale scalars


def create_setup(
    config: ml_collections.ConfigDict, mesh: Any = None, info: DatasetInfo | None = None
) -> Setup:
    """Validates the config against the data and builds the sharded, jitted functions.

    `info` replaces the dataset's sizes (benchmarks on synthetic data); default: read them.
    A config with `population.members` gets a population's functions (`population`): the
    state stacks the members and the step trains them all on each batch.
    """
    train_cfg = config.train
    if config.monitor.on_dead not in ("stop", "warn"):
        raise UserError(
            f"monitor.on_dead must be 'stop' or 'warn', got {config.monitor.on_dead!r}."
        )
    if not 0.0 < config.monitor.dead_threshold <= 1.0:
        raise UserError(
            f"monitor.dead_threshold must be in (0, 1] (the pre-pool zero fraction that counts "
            f"as dead; 1.0 = only zeros), got {config.monitor.dead_threshold!r}."
        )
    runs = population.members(config) if population.is_population(config) else []
    sharding.check_batch_size(train_cfg.global_batch_size)
    sharding.check_batch_size(train_cfg.eval_batch_size)
    info = info or data_info(config.data)
    if mesh is None:
        groups = config.mesh.population_axis if runs else None
        mesh = sharding.create_mesh(config.mesh.fsdp_axis, population_axis=groups)
    if runs:
        population.check_mesh(len(runs), mesh.shape[sharding.POPULATION_AXIS])
        if train_cfg.init_weights:
            raise UserError(
                "train.init_weights is not supported for a population: fine-tune each "
                "member as its own run, or leave population.members empty."
            )
    # "auto" model choices follow the devices the step is compiled for, not the host's backend.
    model = build_model(config.model).clone(
        platform=target_platform(mesh.devices.flat[0].platform)
    )
    if model.num_classes != info.num_classes:
        raise UserError(
            f"model.num_classes={model.num_classes} but dataset {config.data.name!r} has "
            f"{info.num_classes} classes; set --config.model.num_classes={info.num_classes}."
        )
    model.check_image_size(config.data.image_size, "--config.data.image_size")
    devices = sharding.batch_devices(mesh)
    check_accumulation(train_cfg, config.model.bn_group_size, devices)
    steps_per_epoch = max(1, info.num_train_examples // train_cfg.global_batch_size)
    check_schedule(config.schedule)
    for run in runs:  # the knobs each member changes, checked as its own run would check them
        build_model(run.config.model)
        check_schedule(run.config.schedule)
    frozen = frozen_set(config, model)
    model = model.clone(inference_units=frozen.units)
    decay_every = decay_steps(config.schedule, steps_per_epoch)

    def run_parts(hp: HParams) -> tuple[InceptionNet, Any, Any]:
        """The model, optimizer and schedule of the run (or member) with knobs `hp`."""
        schedule = staircase_schedule(hp.peak_lr, config.schedule.decay_rate, decay_every,
                                      hp.warmup_steps)
        tx = freeze_optimizer(create_optimizer(config.optim, schedule, hp.weight_decay), frozen)
        return model.clone(**hp.model_knobs()), tx, schedule

    def run_init(hp: HParams) -> TrainState:
        net, tx, _ = run_parts(hp)
        return init_state(net, tx, jax.random.key(hp.seed, impl="rbg"), config.data.image_size)

    def run_step(hp: HParams, state: TrainState, batch: Any) -> tuple[TrainState, Any]:
        net, tx, schedule = run_parts(hp)
        return train_step(state, batch, model=net, tx=tx, schedule=schedule, cfg=train_cfg,
                          hp=hp, batch_shards=devices, frozen=frozen)

    def run_eval(hp: HParams, variables: Any, batch: Any) -> Any:
        return eval_step(variables, batch, model=run_parts(hp)[0])

    def run_health(hp: HParams, state: TrainState, batch: Any) -> Any:
        rng = jax.random.fold_in(jax.random.key(hp.seed + 1), state.step)
        variables = {"params": state.params, "batch_stats": state.batch_stats}
        return health_step(variables, batch["image"], model=run_parts(hp)[0], rng=rng)

    min_shard = int(config.mesh.min_shard_mb * sharding.MB)
    if runs:
        hps = population.stacked_hparams(runs, steps_per_epoch)
        init_fn = functools.partial(population.init, run_init, hps)
        population.check_execution(config.population.execution)
        step_fn, eval_fn, health_fn = population.sharded_functions(
            mesh, hps, config.population.execution, run_step, run_eval, run_health)
        shardings_of = sharding.population_shardings
    else:
        hp = HParams.of(config, steps_per_epoch)
        init_fn = functools.partial(run_init, hp)
        step_fn = functools.partial(run_step, hp)
        eval_fn = functools.partial(run_eval, hp)
        health_fn = functools.partial(run_health, hp)
        shardings_of = sharding.state_shardings
    abstract = jax.eval_shape(init_fn)
    state_sharding = shardings_of(mesh, abstract, min_shard)
    batch_sharding = sharding.batch_sharding(mesh)
    replicated = sharding.replicated(mesh)
    return Setup(
        model=model,
        members=runs,
        class_names=info.class_names,
        frozen=frozen,
        steps_per_epoch=steps_per_epoch,
        num_steps=total_steps(train_cfg, steps_per_epoch),
        batch_sharding=batch_sharding,
        state_sharding=state_sharding,
        abstract_state=abstract,
        init=jax.jit(init_fn, out_shardings=state_sharding),
        step=jax.jit(step_fn, in_shardings=(state_sharding, batch_sharding),
                     out_shardings=(state_sharding, replicated), donate_argnums=0),
        eval=jax.jit(eval_fn, in_shardings=(state_sharding.ema, batch_sharding),
                     out_shardings=replicated),
        health=jax.jit(health_fn, out_shardings=replicated),
    )


def frozen_set(config: ml_collections.ConfigDict, model: InceptionNet) -> Frozen:
    """What `train.freeze` holds fixed in `model` (UserError for entries that name nothing)."""
    if not config.train.freeze:
        return NOTHING
    size = config.data.image_size
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, size, size, 3)))
    return resolve_freeze(config.train.freeze, shapes, [u.name for u in model.units()],
                          model.stem_units, config.model.name)


def _start_from_weights(state: TrainState, path: str, model_name: str) -> TrainState:
    """`state` with the weights file's trunk (and head, if the class count matches) put in."""
    name, knobs, pretrained = read_weights(path)
    if name != model_name:
        raise WeightImportError(
            f"{path} holds {name} weights but the config trains {model_name}: set "
            f"--config.model.name={name} (with its config file) or use {model_name} weights."
        )
    fresh = jax.device_get({"params": state.params, "batch_stats": state.batch_stats})
    merged, kept_fresh = merge_pretrained(fresh, pretrained, path, knobs)
    if kept_fresh:
        log.info("Fine-tuning from %s; freshly initialised: %s", path, ", ".join(kept_fresh))
    else:
        log.info("Starting from the weights in %s", path)
    shardings = jax.tree.map(lambda a: a.sharding, {"params": state.params,
                                                    "batch_stats": state.batch_stats})
    merged = jax.device_put(merged, shardings)
    ema = jax.device_put(ema_init(merged), jax.tree.map(lambda a: a.sharding, state.ema))
    return state.replace(params=merged["params"], batch_stats=merged["batch_stats"], ema=ema)


def _restore_or_init(config: ml_collections.ConfigDict, setup: Setup,
                     checkpointer: Checkpointer, workdir: str) -> TrainState:
    """The newest good checkpoint's state, else a fresh one (from `train.init_weights` if set)."""
    if checkpointer.latest_step() is not None:
        target = jax.tree.map(
            lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
            setup.abstract_state,
            setup.state_sharding,
        )
        state = checkpointer.restore(target)
        log.info("Resumed from step %d of %s", int(state.step), workdir)
        return state
    state = setup.init()
    if config.train.init_weights:
        state = _start_from_weights(state, config.train.init_weights, config.model.name)
    return state


def _write_run_files(config: ml_collections.ConfigDict, workdir: str, state: TrainState,
                     class_names: tuple[str, ...]) -> None:
    """config.json, parameters.txt and class_names.json of a new run (process 0); a resumed
    run written before class names were kept gets its class_names.json."""
    if jax.process_index() > 0:
        return
    if class_names and run_class_names(workdir) is None:
        save_run_class_names(workdir, class_names)
    if int(state.step) > 0:
        return
    with open(f"{workdir}/config.json", "w") as f:
        f.write(config.to_json_best_effort(indent=2))
    with open(f"{workdir}/parameters.txt", "w") as f:
        f.write(parameter_overview.get_parameter_overview(state.params) + "\n")
    log.info("%s: %s parameters (every array in %s/parameters.txt)", config.model.name,
             f"{parameter_overview.count_parameters(state.params):,}", workdir)


def _progress_bar(config: ml_collections.ConfigDict, num_steps: int, start_step: int) -> tqdm:
    """The step counter on process 0's terminal (redrawn every 10 s when not a terminal)."""
    return tqdm(
        total=num_steps,
        initial=start_step,
        desc=f"train {config.model.name}",
        unit="step",
        disable=jax.process_index() > 0,
        mininterval=1.0 if sys.stderr.isatty() else 10.0,
        dynamic_ncols=True,
    )


class _Throughput:
    """Seconds and images per step since the last log, not counting evaluation time."""

    def __init__(self, global_batch_size: int, step: int):
        self.batch, self.time, self.step = global_batch_size, time.perf_counter(), step

    def read(self, step: int) -> dict[str, float]:
        """step_time_s and images_per_s since the last read; starts the next interval."""
        now = time.perf_counter()
        elapsed, steps = now - self.time, max(1, step - self.step)
        self.time, self.step = now, step
        return {"step_time_s": elapsed / steps,
                "images_per_s": self.batch * steps / max(elapsed, 1e-9)}

    def skip_pause(self) -> None:
        """Leaves the time since the last read (logging, evaluation) out of the next interval."""
        self.time = time.perf_counter()


@dataclasses.dataclass
class _Logger:
    """What a log step writes: the step's metrics, throughput, health; it keeps the dead watch."""

    config: ml_collections.ConfigDict
    setup: Setup
    writer: Any
    progress: tqdm
    throughput: _Throughput
    num_skipped: Callable[[], int]
    watch: DeadNetworkWatch

    def log(self, step: int, state: TrainState, batch: Any, metrics: Any) -> bool:
        """Writes step `step`'s scalars; True if the network has died (`monitor.dead_patience`
        dead logs in a row)."""
        scalars = {k: float(v) for k, v in jax.device_get(metrics).items()}
        scalars.update(self.throughput.read(step))
        scalars["epoch"] = step / self.setup.steps_per_epoch
        if self.config.data.on_bad_image == "skip":
            scalars["skipped_images"] = float(self.num_skipped())
        self.progress.set_postfix(loss=f"{scalars['loss']:.3f}", refresh=False)
        died = False
        if self.config.monitor.enabled:
            health = jax.device_get(self.setup.health(state, batch))
            scalars.update({k: float(v) for k, v in health.items()})
            died = self.watch.update(scalars["dead/prepool_zero_frac"])
        self.writer.write_scalars(step, scalars)
        self.throughput.skip_pause()  # the health pass is not train time either
        if died:
            stop = self.config.monitor.on_dead == "stop"
            log.warning(
                "The network died: the pre-pool map has been dead (zero fraction >= %g) for %d "
                "logs (step %d).%s", self.watch.threshold, self.watch.consecutive, step,
                " Saving and stopping (monitor.on_dead='stop')." if stop else "",
            )
            if stop:
                self.writer.write_scalars(step, {"died_at_step": float(step)})
        return died


def _every(step: int, interval: int | None) -> bool:
    return bool(interval) and step % interval == 0


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
    """Trains (or resumes) the run described by `config` in `workdir`; returns the final state.

    A config with `population.members` trains that population (`population_trainer`)."""
    if population.is_population(config):
        from inception_jax.population_trainer import train_population

        return train_population(config, workdir)
    train_cfg = config.train
    setup = create_setup(config)
    num_steps = setup.num_steps
    checkpointer = Checkpointer(
        f"{workdir}/checkpoints", train_cfg.keep_checkpoints, run_identity(config),
        may_differ=EXECUTION_KNOBS,
    )
    checkpointer.check_compatible()  # before anything is written to the workdir
    state = _restore_or_init(config, setup, checkpointer, workdir)
    start_step = int(state.step)
    writer = create_writer(workdir, train_cfg.console_metrics)
    _write_run_files(config, workdir, state, setup.class_names)

    preemption = Preemption()
    batches, num_skipped = training_batches(config, setup, start_step, workdir)
    progress = _progress_bar(config, num_steps, start_step)
    throughput = _Throughput(train_cfg.global_batch_size, start_step)
    logger = _Logger(config, setup, writer, progress, throughput, num_skipped,
                     DeadNetworkWatch(config.monitor.dead_patience, config.monitor.dead_threshold))
    profile = StepProfiler(train_cfg.profile_steps, f"{workdir}/profile",
                           python=train_cfg.profile_python, settle=checkpointer.wait)
    unchecked = LossCheck(workdir, checkpointer)
    step = start_step
    try:
        while step < num_steps:
            profile.before(step)
            with jax.profiler.StepTraceAnnotation("train", step_num=step):
                batch = next(batches)
                state, metrics = setup.step(state, batch)
            step += 1
            last = step == num_steps
            # Step k-1's loss is read once step k is queued, so the host never waits for the
            # step it just dispatched; before anything is logged or saved the newest is read too.
            unchecked.check()
            unchecked.push(step, metrics["loss"])
            progress.update(1)
            if last or _every(step, train_cfg.log_every_steps):
                unchecked.check()
                if logger.log(step, state, batch, metrics) and config.monitor.on_dead == "stop":
                    checkpointer.save(step, state)
                    break
            if last or _every(step, train_cfg.eval_every_steps):
                unchecked.check()
                writer.write_scalars(step, evaluate(setup, state.ema, config, workdir))
                throughput.skip_pause()  # eval time is not train time
            if last or _every(step, train_cfg.checkpoint_every_steps):
                unchecked.check()
                checkpointer.save(step, state)
            if preemption.should_stop(step):
                unchecked.check()
                log.warning("SIGTERM: saving step %d and stopping.", step)
                checkpointer.save(step, state)
                break
        unchecked.check()
    finally:
        profile.close()
        progress.close()
        preemption.close()
        checkpointer.close()
        writer.flush()
    return state
