"""Population training: many variants of one network trained as one compiled program.

A config with `population.members` set, e.g.

    c.population.members = ({"model.residual_scales": (1.0,) * 3, "seed": 0},
                            {"model.residual_scales": (0.1,) * 3, "seed": 1})

trains one member per entry. Members may differ only in the population knobs
(`hparams.POPULATION_KNOBS`: residual scales, dropout, learning rate and warm-up, weight decay,
label smoothing, aux-loss weight, moving-average decay, seed); anything else changes the
program and is refused with the knob named. Every step feeds the same global batch to every
member (`data.shuffle_seed`, default `seed`, fixes the one data order); each member has its own
parameters, BatchNorm statistics, optimizer state, moving average, learning-rate schedule and
dropout key. The train state gets a leading member axis and the step is the single run's step
under `jax.vmap`, so member i computes what a single run with its knobs computes on the same
data (up to float32 rounding: its convolutions run batched over the members).

A member whose loss or weights stop being finite keeps its last finite state and stops (the
others go on); so does a member the dead-unit monitor stops (`monitor.on_dead="stop"`).
`mesh.population_axis` splits the members over devices: each member's share of the mesh
splits the batch (`data`) and its state (`fsdp`) as a single run's would.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import PartitionSpec

from inception_jax.errors import UserError
from inception_jax.hparams import POPULATION_KNOBS, HParams, stack
from inception_jax.run_names import setting_name
from inception_jax.sharding import POPULATION_AXIS

if TYPE_CHECKING:  # the train step's module imports evaluation, which imports this one
    from inception_jax.train_step import TrainState

MEMBER_FILE = "member.json"  # in a member's folder: its group's workdir and its index


@dataclasses.dataclass(frozen=True)
class MemberRun:
    """One member: its folder name (its settings), its overrides and its full config."""

    name: str
    overrides: dict[str, Any]
    config: ml_collections.ConfigDict


def is_population(config: ml_collections.ConfigDict) -> bool:
    """Whether the config trains a population (`population.members` is set)."""
    return bool(config.get("population", {}).get("members"))


def data_seed(config: ml_collections.ConfigDict) -> int:
    """The seed of the data order: `data.shuffle_seed`, else `seed`."""
    shuffle = config.data.get("shuffle_seed")
    return config.seed if shuffle is None else shuffle


def _member_names(entries: list[dict[str, Any]]) -> list[str]:
    """Each entry's "name", else its settings that differ between the members."""
    settings = [repr(sorted((k, v) for k, v in e.items() if k != "name")) for e in entries]
    keys = list(dict.fromkeys(k for e in entries for k in e if k != "name"))
    differ = [k for k in keys if len({repr(e.get(k)) for e in entries}) > 1]
    names = [e.get("name") or ",".join(setting_name(k, e[k]) for k in differ if k in e)
             for e in entries]
    names = [n or f"member={i}" for i, n in enumerate(names)]
    if len(set(names)) < len(names) or len(set(settings)) < len(settings):
        raise UserError(
            f"population.members has members with the same name or settings ({names}): give "
            "each different knobs and a different \"name\"."
        )
    return names


def members(config: ml_collections.ConfigDict) -> list[MemberRun]:
    """The population's members with their configs (UserError for a knob that may not vary).

    A member's config is the population's config with its overrides, no population, and the
    population's data order, so that training it alone reproduces the member.
    """
    entries = [dict(e) for e in config.population.members]
    for i, entry in enumerate(entries):
        for key in entry:
            if key != "name" and key not in POPULATION_KNOBS:
                raise UserError(
                    f"population.members[{i}] sets {key}, which is not a population knob: "
                    f"members may differ only in {', '.join(POPULATION_KNOBS)}. Runs that "
                    f"differ in {key} train as separate populations (python -m "
                    "inception_jax.sweep --population groups a sweep's runs so)."
                )
    base = config.copy_and_resolve_references()
    base.data.shuffle_seed = data_seed(config)
    base.population.members = ()
    runs = []
    for name, entry in zip(_member_names(entries), entries, strict=True):
        overrides = {k: tuple(v) if isinstance(v, list) else v
                     for k, v in entry.items() if k != "name"}
        member_config = base.copy_and_resolve_references()
        try:
            member_config.update_from_flattened_dict(overrides)
        except (KeyError, TypeError, ValueError) as e:
            raise UserError(f"population member {name!r}: {e}") from e
        runs.append(MemberRun(name, overrides, member_config))
    return runs


def check_mesh(num_members: int, population_axis: int) -> None:
    """The members must split evenly over `mesh.population_axis`."""
    if not isinstance(population_axis, int) or population_axis < 1:
        raise UserError(f"mesh.population_axis must be an int >= 1, got {population_axis!r}.")
    if num_members % population_axis:
        raise UserError(
            f"mesh.population_axis={population_axis} must divide the {num_members} members: "
            "each device group holds the same number of members."
        )


def identity(config: ml_collections.ConfigDict, runs: list[MemberRun]) -> dict[str, Any]:
    """What a group checkpoint records beyond a run's identity: its members, in order."""
    return {"members": [{"name": r.name, **{k: list(v) if isinstance(v, tuple) else v
                                            for k, v in r.overrides.items()}} for r in runs],
            "data_seed": data_seed(config)}


@flax.struct.dataclass
class PopulationState:
    """The group's train state: every member's `TrainState` stacked on a leading axis."""

    step: jax.Array  # the group's steps done
    members: TrainState
    active: jax.Array  # bool[M]: False once a member stopped (died, or not finite)
    failed_at: jax.Array  # int32[M]: the step whose loss or weights were not finite; 0 = never

    @property
    def ema(self) -> Any:
        """Every member's moving average (leading member axis), what evaluation reads."""
        return self.members.ema


MemberFn = Callable[..., Any]  # (hp, *args) -> a member's result, with `hp` its knobs


def init(member_init: MemberFn, hps: HParams) -> PopulationState:
    """Every member initialised by `member_init(hp)` with its own seed and knobs.

    One member after another (`lax.map`), not vmapped: the "rbg" keys the initialisation
    draws from give other bits under `vmap`, and a member must start where its single run
    starts."""
    states = jax.lax.map(member_init, hps)
    count = len(hps.seed)
    return PopulationState(step=jnp.zeros((), jnp.int32), members=states,
                           active=jnp.ones((count,), bool),
                           failed_at=jnp.zeros((count,), jnp.int32))


EXECUTIONS = ("vmap", "map")


def check_execution(execution: str) -> None:
    """`population.execution` must name a way to run the members."""
    if execution not in EXECUTIONS:
        raise UserError(f"population.execution must be one of {EXECUTIONS}, got {execution!r}.")


def for_each_member(member_fn: MemberFn, execution: str, hps: HParams, per_member: Any,
                    shared: Any) -> Any:
    """`member_fn(hp, member's part, shared)` of every member, stacked: batched ("vmap": each
    op once for all members; a convolution becomes a grouped one) or one after another
    ("map": a loop in the program, holding one member's activations at a time; 4x slower
    than "vmap" on CPU, BENCHMARKS.md)."""
    if execution == "vmap":
        return jax.vmap(member_fn, in_axes=(0, 0, None))(hps, per_member, shared)
    return jax.lax.map(lambda args: member_fn(*args, shared), (hps, per_member))


def step(pstate: PopulationState, batch: Any, hps: HParams, *, member_step: MemberFn,
         execution: str) -> tuple[PopulationState, dict[str, jax.Array]]:
    """One train step of every active member on the same batch: `member_step(hp, state,
    batch)` of each. A member whose loss or new weights are not finite keeps its old state and
    stops; a stopped member's state does not change. Metrics: one value per member."""
    new, metrics = for_each_member(member_step, execution, hps, pstate.members, batch)
    finite = jnp.isfinite(metrics["loss"]) & jnp.isfinite(metrics["param_norm"])
    keep = pstate.active & finite

    def select(n: jax.Array, o: jax.Array) -> jax.Array:
        return jnp.where(keep.reshape(keep.shape + (1,) * (n.ndim - 1)), n, o)

    failed_at = jnp.where(pstate.active & ~finite, pstate.step + 1, pstate.failed_at)
    return PopulationState(step=pstate.step + 1, members=jax.tree.map(select, new, pstate.members),
                           active=keep, failed_at=failed_at), metrics


def over_member_groups(fn: Callable[..., Any], mesh: Any, in_specs: Any,
                       out_specs: Any) -> Callable[..., Any]:
    """`fn` run by each device group of the mesh's `population` axis on its own members.

    Members never talk to each other, so each group runs its share alone (`shard_map`, manual
    over `population` only; `data` and `fsdp` inside a group stay XLA's to partition). Left
    to XLA's partitioner, the members' batched convolutions split over `population` fail to
    compile (grouped convolutions whose groups are split).
    """
    return jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs,
                         axis_names={POPULATION_AXIS})


def sharded_functions(mesh: Any, hps: HParams, execution: str, member_step: MemberFn,
                      member_eval: MemberFn,
                      member_health: MemberFn) -> tuple[Callable[..., Any], ...]:
    """(step, eval, health) of the population, each member group on its devices:
    step(pstate, batch), eval(ema variables, batch), health(pstate, batch)."""
    members, shared = PartitionSpec(POPULATION_AXIS), PartitionSpec()
    state = PopulationState(step=shared, members=members, active=members, failed_at=members)
    train = over_member_groups(
        functools.partial(step, member_step=member_step, execution=execution), mesh,
        (state, shared, members), (state, members))
    evaluate = over_member_groups(functools.partial(for_each_member, member_eval, execution), mesh,
                                  (members, members, shared), members)
    health = over_member_groups(functools.partial(for_each_member, member_health, execution), mesh,
                                (members, members, shared), members)
    return (lambda s, b: train(s, b, hps), lambda v, b: evaluate(hps, v, b),
            lambda s, b: health(hps, s.members, b))


def stop_members(pstate: PopulationState, stopped: list[int]) -> PopulationState:
    """The state with members `stopped` inactive (the dead-unit monitor stopped them)."""
    active = pstate.active.at[jnp.asarray(stopped, jnp.int32)].set(False)
    return pstate.replace(active=jax.device_put(active, pstate.active.sharding))


def stacked_hparams(runs: list[MemberRun], steps_per_epoch: int) -> HParams:
    """The members' knobs, stacked."""
    return stack([HParams.of(r.config, steps_per_epoch) for r in runs])


def member_dirs(workdir: str, runs: list[MemberRun]) -> list[str]:
    """Each member's folder under the group's workdir."""
    return [os.path.join(workdir, r.name) for r in runs]


def write_member_file(member_dir: str, group_workdir: str, index: int, name: str) -> None:
    """Points a member's folder at its group's checkpoints (evaluate, export, predict)."""
    os.makedirs(member_dir, exist_ok=True)
    with open(os.path.join(member_dir, MEMBER_FILE), "w") as f:
        json.dump({"group": os.path.relpath(group_workdir, member_dir), "index": index,
                   "name": name}, f, indent=2)


def read_member_file(path: str) -> tuple[str, int] | None:
    """(the group's workdir, the member's index) if `path` is a member's folder, else None."""
    file = os.path.join(path, MEMBER_FILE)
    if not os.path.isfile(file):
        return None
    with open(file) as f:
        entry = json.load(f)
    return os.path.normpath(os.path.join(path, entry["group"])), int(entry["index"])
