"""Fine-tuning controls: `train.freeze` holds groups of parameters fixed."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import traverse_util

from inception_jax.data.device import synthetic_batches
from inception_jax.errors import UserError
from inception_jax.freeze import resolve
from inception_jax.models import create
from inception_jax.trainer import create_setup
from tests.helpers import tiny_config

UNITS = ("stem", "reduction_a")  # the tiny IR-v1 has no residual blocks


def flat(tree):
    return traverse_util.flatten_dict(jax.device_get(tree), sep="/")


def test_frozen_groups_stay_bit_identical_and_have_no_optimizer_state(tmp_path):
    config = tiny_config(str(tmp_path), **{"data.name": "synthetic",
                                            "train.freeze": UNITS,
                                            "optim.weight_decay": 0.01})
    setup = create_setup(config)
    state = setup.init()
    start_params, start_stats = flat(state.params), flat(state.batch_stats)
    batches = synthetic_batches(16, config.data.image_size, 10, 0, setup.batch_sharding)
    for _ in range(3):
        state, metrics = setup.step(state, next(batches))
    assert np.isfinite(float(metrics["loss"]))
    params, stats = flat(state.params), flat(state.batch_stats)
    frozen = [p for p in params if p.split("/")[0] in UNITS]
    trained = [p for p in params if p not in frozen]
    assert frozen and trained
    for p in frozen:
        np.testing.assert_array_equal(params[p], start_params[p], err_msg=p)
    for p in stats:  # inference mode in frozen units: running statistics used and kept
        if p.split("/")[0] in UNITS:
            np.testing.assert_array_equal(stats[p], start_stats[p], err_msg=p)
    moved = [p for p in trained if not np.array_equal(params[p], start_params[p])]
    assert moved == trained
    assert any(not np.array_equal(stats[p], start_stats[p]) for p in stats
               if p.split("/")[0] not in UNITS)
    # The optimizer holds state for the trained parameters only.
    opt_paths = [jax.tree_util.keystr(k) for k, _ in
                 jax.tree_util.tree_flatten_with_path(state.opt_state)[0]]
    assert not [p for p in opt_paths if any(f"'{u}'" in p for u in UNITS)]
    per_param = [p for p in opt_paths if "'head'" in p]
    assert len(per_param) == 2 * 2  # kernel and bias, each with a mean square and a momentum
    ema, ema_stats = flat(state.ema["params"]), flat(state.ema["batch_stats"])
    for p in frozen:  # the moving average of a frozen parameter is the parameter, exactly
        np.testing.assert_array_equal(ema[p], start_params[p], err_msg=p)
    for p in stats:
        if p.split("/")[0] in UNITS:
            np.testing.assert_array_equal(ema_stats[p], start_stats[p], err_msg=p)


def variables_of(name, **knobs):
    model = create(name, **knobs)
    shapes = jax.eval_shape(model.init, jax.random.key(0), np.zeros((1, 75, 75, 3), np.float32))
    return model, shapes


def test_groups_resolve_to_units_stem_head_and_regexes():
    model, shapes = variables_of("inception_v4", width=0.125, blocks=(1, 1, 1), aux_head=True)
    units = [u.name for u in model.units()]
    frozen = resolve(("stem",), shapes, units, model.stem_units, "inception_v4")
    assert {p.split("/")[0] for p in frozen.params} == set(model.stem_units)
    assert set(frozen.units) == set(model.stem_units)
    frozen = resolve(("re:^inception_b/", "aux"), shapes, units, model.stem_units,
                     "inception_v4")
    assert {p.split("/")[0] for p in frozen.params} == {"inception_b", "aux"}
    assert set(frozen.units) == {"inception_b", "aux"}
    partial = resolve(("re:/bn/",), shapes, units, model.stem_units, "inception_v4")
    assert partial.params and partial.batch_stats and partial.units == ()


@pytest.mark.parametrize("entries, message", [
    (("block35",), r"'block35' is not a group of inception_v4: use one of stem, mixed_3a"),
    (("re:^nothing/",), r"'re:\^nothing/' matches no parameter of inception_v4 \(groups: "),
    (("re:(",), r"'re:\(' is not a valid regex"),
    (("re:.",), r"freezes every parameter of inception_v4: nothing would train"),
])
def test_bad_freeze_entries_are_refused_in_one_line(entries, message):
    model, shapes = variables_of("inception_v4", width=0.125, blocks=(1, 1, 1))
    with pytest.raises(UserError, match=message) as err:
        resolve(entries, shapes, [u.name for u in model.units()], model.stem_units,
                "inception_v4")
    assert "\n" not in str(err.value)
