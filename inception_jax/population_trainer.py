"""The training loop of a population: one compiled step for every member, one output folder
per member.

`train_population(config, workdir)` trains the members of `config.population.members` (see
`inception_jax.population`) in `workdir`: one checkpoint for the group in
`workdir/checkpoints`, and per member a folder `workdir/<its settings>` with `metrics.jsonl`,
TensorBoard events, its own `config.json` and its evaluations, read by `plot` as separate runs
are. The dead-unit monitor judges each member alone; a member that dies (with
`monitor.on_dead="stop"`) or whose loss stops being finite is reported by name and stops, the
others go on. Resuming after a kill continues exactly where the group stopped.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Any

import jax
import ml_collections
import numpy as np
from clu import parameter_overview
from tqdm import tqdm

from inception_jax import population
from inception_jax.checkpoint import Checkpointer
from inception_jax.data.class_names import save_run_class_names
from inception_jax.metrics import create_writer
from inception_jax.monitor import DeadNetworkWatch
from inception_jax.population import MemberRun, PopulationState
from inception_jax.preemption import Preemption
from inception_jax.trainer import (
    EXECUTION_KNOBS,
    Setup,
    _every,
    _progress_bar,
    _restore_or_init,
    _Throughput,
    create_setup,
    evaluate,
    run_identity,
    training_batches,
)

log = logging.getLogger(__name__)


def group_identity(config: ml_collections.ConfigDict, runs: list[MemberRun]) -> dict[str, Any]:
    """What the group's checkpoint must match to be resumed: the run's identity and its
    members in order."""
    return {**run_identity(config), "population": population.identity(config, runs)}


@dataclasses.dataclass
class _Member:
    """A member's outputs on the host: its folder, writer, dead watch and whether it runs."""

    run: MemberRun
    directory: str
    writer: Any
    watch: DeadNetworkWatch
    running: bool = True


def _write_member_files(workdir: str, members: list[_Member], state: PopulationState,
                        class_names: tuple[str, ...]) -> None:
    """Each member's member.json and class_names.json, and at step 0 its config.json and
    parameters.txt (its own knobs, its own initial weights)."""
    if jax.process_index() > 0:
        return
    for index, m in enumerate(members):
        population.write_member_file(m.directory, workdir, index, m.run.name)
        if class_names:
            save_run_class_names(m.directory, class_names)
        if int(state.step) > 0:
            continue
        with open(os.path.join(m.directory, "config.json"), "w") as f:
            f.write(m.run.config.to_json_best_effort(indent=2))
        params = jax.device_get(jax.tree.map(lambda a, i=index: a[i], state.members.params))
        with open(os.path.join(m.directory, "parameters.txt"), "w") as f:
            f.write(parameter_overview.get_parameter_overview(params) + "\n")
    if class_names:
        save_run_class_names(workdir, class_names)
    with open(os.path.join(workdir, "population.json"), "w") as f:
        json.dump({"members": [m.run.name for m in members]}, f, indent=2)


def _log(step: int, config: ml_collections.ConfigDict, setup: Setup, members: list[_Member],
         state: PopulationState, batch: Any, metrics: Any, throughput: _Throughput,
         progress: tqdm) -> list[int]:
    """Writes each running member's scalars; reports members that failed or died. Returns the
    members to stop now (died with `monitor.on_dead="stop"`)."""
    values = {k: np.asarray(v) for k, v in jax.device_get(metrics).items()}
    shared = {**throughput.read(step), "epoch": step / setup.steps_per_epoch}
    if config.monitor.enabled:
        values.update({k: np.asarray(v)
                       for k, v in jax.device_get(setup.health(state, batch)).items()})
    active, failed_at = jax.device_get((state.active, state.failed_at))
    stop = []
    for i, m in enumerate(members):
        if not m.running:
            continue
        if failed_at[i]:
            log.warning("Population member %s: its loss or weights were not finite at step %d. "
                        "It keeps its state of step %d and stops; the others go on.",
                        m.run.name, failed_at[i], failed_at[i] - 1)
            m.writer.write_scalars(step, {"failed_at_step": float(failed_at[i])})
            m.running = False
            continue
        scalars = {**{k: float(v[i]) for k, v in values.items()}, **shared}
        died = config.monitor.enabled and m.watch.update(scalars["dead/prepool_zero_frac"])
        if died and config.monitor.on_dead == "stop":
            scalars["died_at_step"] = float(step)
            stop.append(i)
            m.running = False
        m.writer.write_scalars(step, scalars)
        if died:
            log.warning("Population member %s died: its pre-pool map has been dead (zero "
                        "fraction >= %g) for %d logs (step %d).%s", m.run.name,
                        m.watch.threshold, m.watch.consecutive, step,
                        " It stops; the others go on (monitor.on_dead='stop')."
                        if not m.running else "")
    running = [i for i, m in enumerate(members) if m.running and active[i]]
    losses = [float(values["loss"][i]) for i in running]
    progress.set_postfix(running=f"{len(running)}/{len(members)}",
                         loss=f"{min(losses):.3f}-{max(losses):.3f}" if losses else "-",
                         refresh=False)
    throughput.skip_pause()
    return stop


def _write_evaluation(step: int, members: list[_Member], result: dict[str, Any]) -> None:
    """Each running member's eval_top1/top5; one console line with the best member."""
    for i, m in enumerate(members):
        if m.running:
            m.writer.write_scalars(step, {"eval_top1": float(result["eval_top1"][i]),
                                          "eval_top5": float(result["eval_top5"][i])})
    ranked = sorted(range(len(members)), key=lambda i: -result["eval_top1"][i])
    best = ranked[0]
    tqdm.write(f"[{step}] eval_top1: best {result['eval_top1'][best]:.4g} "
               f"({members[best].run.name}), worst {result['eval_top1'][ranked[-1]]:.4g}")


def train_population(config: ml_collections.ConfigDict, workdir: str) -> PopulationState:
    """Trains (or resumes) the population of `config` in `workdir`; returns the final state."""
    train_cfg = config.train
    setup = create_setup(config)
    checkpointer = Checkpointer(
        f"{workdir}/checkpoints", train_cfg.keep_checkpoints,
        group_identity(config, setup.members), may_differ=EXECUTION_KNOBS,
    )
    checkpointer.check_compatible()
    state = _restore_or_init(config, setup, checkpointer, workdir)
    start_step = int(state.step)
    running = jax.device_get(state.active)
    members = [
        _Member(run, directory, create_writer(directory, ()),
                DeadNetworkWatch(config.monitor.dead_patience, config.monitor.dead_threshold),
                running=bool(running[i]))
        for i, (run, directory) in enumerate(
            zip(setup.members, population.member_dirs(workdir, setup.members), strict=True))
    ]
    _write_member_files(workdir, members, state, setup.class_names)
    log.info("Population of %d members (%d still training) in %s: %s", len(members),
             int(np.sum(running)), workdir, ", ".join(m.run.name for m in members))

    preemption = Preemption()
    batches, _ = training_batches(config, setup, start_step, workdir)
    progress = _progress_bar(config, setup.num_steps, start_step)
    throughput = _Throughput(train_cfg.global_batch_size, start_step)
    step = start_step
    try:
        while step < setup.num_steps and any(m.running for m in members):
            batch = next(batches)
            state, metrics = setup.step(state, batch)
            step += 1
            last = step == setup.num_steps
            progress.update(1)
            if last or _every(step, train_cfg.log_every_steps):
                stop = _log(step, config, setup, members, state, batch, metrics,
                            throughput, progress)
                if stop:
                    state = population.stop_members(state, stop)
                if not any(m.running for m in members):
                    log.warning("Every member of the population has stopped (step %d).", step)
                    checkpointer.save(step, state)
                    break
            if last or _every(step, train_cfg.eval_every_steps):
                result = evaluate(setup, state.ema, config, workdir)
                _write_evaluation(step, members, result)
                throughput.skip_pause()
            if last or _every(step, train_cfg.checkpoint_every_steps):
                checkpointer.save(step, state)
            if preemption.should_stop(step):
                log.warning("SIGTERM: saving step %d and stopping.", step)
                checkpointer.save(step, state)
                break
    finally:
        progress.close()
        preemption.close()
        checkpointer.close()
        for m in members:
            m.writer.flush()
    return state
