"""Population training: every member equals the single run with its knobs; the members split
over devices as they run on one; a killed group resumes bit for bit; one member's failure or
death stops it alone; a sweep's runs group into populations; other knobs are refused."""

import json
import math
import re
import subprocess
import types

import jax
import numpy as np
import pytest

from inception_jax import population, sharding
from inception_jax.checkpoint import read_checkpoint
from inception_jax.errors import UserError
from inception_jax.evaluation import member_from_checkpoint
from inception_jax.monitor import DeadNetworkWatch
from inception_jax.plot import plot_runs
from inception_jax.population_trainer import _log, _Member
from inception_jax.sweep import Run, expand, group, load_sweep
from inception_jax.trainer import _Throughput, create_setup
from tests.helpers import flags, run_env, tiny_config
from tools import kill_points

# The tiny IR-v1 with one residual block (8x8 stage) and the aux head, so that every
# population knob changes something: the residual scale, dropout, the aux-loss weight.
RESIDUAL = {"model.blocks": (0, 0, 1), "model.aux_head": True, "data.name": "synthetic",
            "model.dropout_rate": 0.2}
# Each member changes other knobs; member 2 changes every one the others leave alone.
MEMBERS = (
    {"seed": 0, "model.residual_scales": (1.0, 1.0, 1.0)},
    {"seed": 1, "model.residual_scales": (0.2, 0.2, 0.2), "schedule.base_lr": 0.1,
     "optim.weight_decay": 0.0, "train.ema_decay": 0.9},
    {"seed": 2, "model.residual_scales": (0.5, 0.5, 0.5), "model.dropout_rate": 0.5,
     "train.label_smoothing": 0.0, "schedule.warmup_epochs": 0.5, "train.aux_loss_weight": 1.0},
)
# Two steps: member and single run then agree to 4e-6 (measured). From the third step on, the
# gradient of the first conv (a BatchNorm right after it cancels most of it) amplifies float32
# rounding: 3e-4 in its momentum at step 3, as a single run differs from itself between one and
# two devices (8e-5 after one step).
STEPS = 2


def one_device_mesh(population_axis=None):
    return sharding.create_mesh(1, devices=jax.devices()[:1], population_axis=population_axis)


def batches(setup, count, seed=0):
    """`count` random global batches of the tiny config (16 images of 75x75, 10 classes)."""
    rng = np.random.default_rng(seed)
    b, s = 16, 75
    out = []
    for _ in range(count):
        batch = {"image": rng.uniform(-1, 1, (b, s, s, 3)).astype(np.float32),
                 "label": rng.integers(0, 10, (b,)).astype(np.int32),
                 "mask": np.ones((b,), np.float32)}
        out.append(jax.device_put(batch, setup.batch_sharding))
    return out


def train(setup, data):
    state = setup.init()
    for batch in data:
        state, metrics = setup.step(state, batch)
    return state, metrics


def comparable(state):
    return (state.step, state.params, state.batch_stats, state.ema, state.opt_state[-1])


def max_difference(a, b):
    """max |a - b| / (1 + |b|) over every array of two trees of the same structure."""
    diffs = jax.tree.map(
        lambda x, y: float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))
                                  / (1.0 + np.abs(np.asarray(y, np.float64))), initial=0.0)),
        a, b)
    return max(jax.tree.leaves(diffs))


def test_every_member_equals_the_single_run_with_its_knobs(tmp_path):
    config = tiny_config(str(tmp_path), **RESIDUAL)
    config.population.members = MEMBERS
    setup = create_setup(config, mesh=one_device_mesh(1))
    data = batches(setup, STEPS)
    group_state, group_metrics = train(setup, data)
    group_eval = jax.device_get(setup.eval(group_state.ema, data[0]))
    assert np.all(jax.device_get(group_state.active))

    for i, run in enumerate(setup.members):
        single = create_setup(run.config, mesh=one_device_mesh())
        state, metrics = train(single, data)
        member = jax.tree.map(lambda a, i=i: a[i], group_state.members)
        assert int(member.step) == STEPS
        # float32 rounding only: the members' convolutions run batched (grouped), and the
        # loss weights and rates are traced values rather than constants folded at compile.
        # (A member without weight decay has the decay step in its optimizer and a single run
        # not: RMSProp's state, the last of the chain, is what both have.)
        assert max_difference(comparable(member), comparable(state)) < 1e-5, run.name
        assert abs(float(group_metrics["loss"][i]) - float(metrics["loss"])) < 1e-5
        single_eval = jax.device_get(single.eval(state.ema, data[0]))
        assert float(group_eval["top1"][i]) == float(single_eval["top1"]), run.name
    # The knobs took effect: the members are different networks.
    assert max_difference(jax.tree.map(lambda a: a[0], group_state.members.params),
                          jax.tree.map(lambda a: a[2], group_state.members.params)) > 1e-2


@pytest.mark.slow
def test_members_split_over_devices_train_as_on_one_device(tmp_path):
    config = tiny_config(str(tmp_path), **RESIDUAL)
    config.population.members = tuple({"seed": s, "model.residual_scales": (r,) * 3}
                                      for s, r in [(0, 1.0), (1, 0.3), (2, 0.1), (3, 0.5)])

    def one_step(mesh):
        setup = create_setup(config, mesh=mesh)
        state, _ = train(setup, batches(setup, 1))
        return setup, jax.device_get(state.members)

    _, alone = one_step(one_device_mesh(1))
    # 4 members x 1: each device trains one member, as one device trains all four.
    setup, split = one_step(sharding.create_mesh(1, jax.devices()[:4], population_axis=4))
    assert split.params["head"]["kernel"].shape[0] == 4
    assert max_difference(split, alone) < 1e-6
    # 4 members x 2 data: each member's batch is also split over two devices. That sums its
    # gradients in another order: a single run of member 3's knobs differs by 8e-5 in its first
    # kernel between one and two devices (this network, one step); the group by no more.
    setup, split = one_step(sharding.create_mesh(1, population_axis=4))
    assert dict(setup.batch_sharding.mesh.shape) == {"population": 4, "data": 2, "fsdp": 1}
    assert setup.state_sharding.members.params["head"]["kernel"].spec[0] == "population"
    assert max_difference(split, alone) < 1.5e-4


@pytest.mark.slow
def test_members_one_after_another_train_as_batched_members(tmp_path):
    config = tiny_config(str(tmp_path), **RESIDUAL)
    config.population.members = MEMBERS[:2]
    states = {}
    for execution in ("vmap", "map"):
        config.population.execution = execution
        setup = create_setup(config, mesh=one_device_mesh(1))
        states[execution], _ = train(setup, batches(setup, 1))
    assert max_difference(states["map"].members, states["vmap"].members) < 1e-5


def test_a_member_that_diverges_stops_alone_keeping_its_last_finite_state(tmp_path):
    config = tiny_config(str(tmp_path), **RESIDUAL)
    config.population.members = (
        {"name": "ok", "seed": 0},
        {"name": "diverges", "seed": 0, "schedule.base_lr": 1e39},  # inf in float32
    )
    setup = create_setup(config, mesh=one_device_mesh(1))
    data = batches(setup, 2)
    state = setup.init()
    initial = jax.device_get(state.members)
    for batch in data:
        state, metrics = setup.step(state, batch)
    assert list(jax.device_get(state.active)) == [True, False]
    assert list(jax.device_get(state.failed_at)) == [0, 1]
    kept = jax.tree.map(lambda a: a[1], jax.device_get(state.members))
    assert max_difference(kept, jax.tree.map(lambda a: a[1], initial)) == 0.0
    assert math.isfinite(float(metrics["loss"][0]))
    assert int(jax.device_get(state.members.step)[0]) == 2


def test_only_population_knobs_may_differ_and_the_refusal_names_the_knob(tmp_path):
    config = tiny_config(str(tmp_path))
    config.population.members = ({"seed": 0}, {"seed": 1, "model.width": 0.5})
    with pytest.raises(UserError, match=r"members\[1\] sets model.width, which is not a "
                                        r"population knob.*--population"):
        create_setup(config)
    config.population.members = ({"seed": 0}, {"seed": 1, "model.residual_scales": (-1.0,) * 3})
    with pytest.raises(UserError, match="residual_scales must be 3 positive numbers"):
        create_setup(config)
    config.population.members = ({"seed": 0}, {"seed": 0})
    with pytest.raises(UserError, match="the same name or settings"):
        create_setup(config)
    config.population.members = tuple({"seed": s} for s in range(3))
    config.mesh.population_axis = 2
    with pytest.raises(UserError, match="population_axis=2 must divide the 3 members"):
        create_setup(config)


def test_member_names_are_the_settings_that_differ():
    names = population._member_names([{"seed": 0, "schedule.base_lr": 0.1},
                                      {"seed": 1, "schedule.base_lr": 0.1},
                                      {"name": "mine", "seed": 2}])
    assert names == ["seed=0,base_lr=0.1", "seed=1,base_lr=0.1", "mine"]


def test_a_sweep_groups_its_runs_into_populations_by_the_knobs_that_shape_the_program():
    runs = expand(load_sweep("configs/sweeps/residual_scaling.py:death"))
    groups = group(runs)
    assert [(g.name, len(g.runs)) for g in groups] == [
        ("residual_mode=fixed", 8), ("residual_mode=scalar", 2), ("residual_mode=channel", 2)]
    assert sum(len(g.runs) for g in groups) == len(runs) == 12
    members = groups[0].members()
    assert members[0] == {"name": "fixed=1.0,seed=0", "model.residual_scales": (1.0,) * 3,
                          "schedule.base_lr": 0.25, "seed": 0}
    assert "model.residual_mode" in groups[0].overrides
    one = group([Run("a", "c.py", {"seed": 0}), Run("b", "c.py", {"seed": 1})])
    assert [(g.name, g.overrides) for g in one] == [("population", {})]


def test_a_member_config_reproduces_the_member_alone(tmp_path):
    config = tiny_config(str(tmp_path), seed=5)
    config.population.members = ({"seed": 0}, {"seed": 1, "train.ema_decay": 0.5})
    runs = population.members(config)
    assert [r.config.seed for r in runs] == [0, 1]
    assert [population.data_seed(r.config) for r in runs] == [5, 5]  # the group's data order
    assert runs[1].config.train.ema_decay == 0.5 and not runs[1].config.population.members
    assert json.loads(runs[1].config.to_json())["data"]["shuffle_seed"] == 5


# ---- the group as a command: outputs per member, kill and resume, evaluation of a member ----

GROUP = {**RESIDUAL, "data.name": "inception_shapes", "train.num_steps": 6,
         "train.eval_every_steps": 3, "train.checkpoint_every_steps": 2,
         "population.members": (
             {"name": "scale=1.0", "model.residual_scales": (1.0,) * 3},
             {"name": "scale=0.2", "model.residual_scales": (0.2,) * 3, "seed": 1},
             {"name": "diverges", "schedule.base_lr": 1e39},  # inf in float32: fails at step 1
         )}
NAMES = ("scale=1.0", "scale=0.2", "diverges")


def run_group(data_dir, workdir, wait=True):
    args = flags(data_dir, workdir, **GROUP)
    if not wait:
        return subprocess.Popen(args, env=run_env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    done = subprocess.run(args, env=run_env(), text=True, capture_output=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stderr


@pytest.mark.slow
def test_a_group_killed_and_rerun_ends_bit_identical_with_one_folder_per_member(tmp_path):
    data_dir = str(tmp_path / "tfds")
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    output = run_group(data_dir, reference)
    assert re.search(r"Population member diverges: its loss or weights were not finite at "
                     r"step 1", output), output[-3000:]

    kill_points.kill_when(run_group(data_dir, killed, wait=False),
                          lambda: 2 in kill_points.checkpoint_steps(killed))
    assert 6 not in kill_points.checkpoint_steps(killed)
    run_group(data_dir, killed)
    assert kill_points.checkpoint_steps(killed)[-1] == 6
    assert kill_points.differing_arrays(reference, killed, 6) == []
    for name in NAMES:
        assert kill_points.metric_rows(killed / name)[-1] == \
            kill_points.metric_rows(reference / name)[-1]

    # Each member's folder: its own knobs and metrics; the failed member stops at step 1.
    for name, scales in (("scale=1.0", [1.0] * 3), ("scale=0.2", [0.2] * 3)):
        config = json.loads((reference / name / "config.json").read_text())
        assert config["model"]["residual_scales"] == scales
        assert config["population"]["members"] == []
        assert [r["step"] for r in kill_points.metric_rows(reference / name)
                if "eval_top1" in r] == [3, 6]
    rows = kill_points.metric_rows(reference / "diverges")
    assert rows == [{"step": 2, "failed_at_step": 1.0}]

    # One member of the group's checkpoint, as evaluate/export/predict read it.
    _, group_state = read_checkpoint(str(reference))
    member = member_from_checkpoint(str(reference / "scale=0.2"))
    assert member.model.residual_scales == (0.2, 0.2, 0.2)
    expected = jax.tree.map(lambda a: a[1], group_state["members"]["ema"])
    assert max_difference(member.variables, expected) == 0.0
    with pytest.raises(UserError, match=r"holds a population of 3 members: pass one member's"):
        member_from_checkpoint(str(reference))
    plot_runs([str(reference / n) for n in NAMES], str(tmp_path / "plot.png"))
    assert (tmp_path / "plot.png").stat().st_size > 10_000

    # A damaged newest group checkpoint: set aside, the rerun resumes from the one before.
    newest = killed / "checkpoints" / "6"
    damaged = max((p for p in (newest / "state").rglob("*") if p.is_file()),
                  key=lambda p: p.stat().st_size)
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    output = run_group(data_dir, killed)
    assert re.search(r"is damaged .*crc32c.* resuming from step 4\.", output), output[-3000:]
    assert kill_points.differing_arrays(reference, killed, 6) == []


def test_the_monitor_stops_a_dead_member_and_the_others_go_on():
    config = tiny_config("", **{"monitor.enabled": True, "monitor.dead_patience": 2,
                                "monitor.on_dead": "stop"})
    runs = [population.MemberRun(n, {}, config) for n in ("dead", "alive")]
    written = {n: [] for n in ("dead", "alive")}

    class Writer:
        def __init__(self, name):
            self.name = name

        def write_scalars(self, step, scalars):
            written[self.name].append((step, dict(scalars)))

    members = [_Member(r, "", Writer(r.name), DeadNetworkWatch(2, 1.0)) for r in runs]
    state = types.SimpleNamespace(active=np.array([True, True]), failed_at=np.array([0, 0]))
    setup = types.SimpleNamespace(
        steps_per_epoch=8,
        health=lambda s, b: {"dead/prepool_zero_frac": np.array([1.0, 0.4])})
    metrics = {"loss": np.array([2.3, 1.1])}
    progress = types.SimpleNamespace(set_postfix=lambda **k: None)
    stops = [_log(step, config, setup, members, state, None, metrics, _Throughput(16, 0),
                  progress) for step in (2, 4, 6)]
    assert stops == [[], [0], []]  # dead at 2 and 4 (patience 2): stopped at 4
    assert [s for s, _ in written["dead"]] == [2, 4]
    assert written["dead"][-1][1]["died_at_step"] == 4.0
    assert [s for s, _ in written["alive"]] == [2, 4, 6]
    assert all("died_at_step" not in r for _, r in written["alive"])
