"""Deviceless TPU compilation: a tiny network's train step compiled for a v5e:2x2 slice on this
CPU host (libtpu, no TPU) reports its memory and collectives, and picks the TPU lowering."""

import importlib.util
import json
import subprocess
import sys

import pytest

from inception_jax import aot, aot_grid, hlo_stats, sharding
from inception_jax.errors import UserError
from tests.helpers import ROOT, TINY_MODEL, run_env, tiny_config

needs_libtpu = pytest.mark.skipif(
    importlib.util.find_spec("libtpu") is None,
    reason="libtpu is not installed (pip install 'inception_jax[tpu]'); CI installs it",
)

TOPOLOGY = "v5e:2x2"


def _config(tmp_path, fsdp_axis):
    # The tiny IR-v1 of tests/helpers.py with TPU dtype and 8 images per chip;
    # its arrays are all small, so FSDP shards every one it can (no size threshold). The
    # convolutions' default ("auto": the lowering follows the target).
    return tiny_config(str(tmp_path), **{
        "data.image_size": 75, "model.dtype": "bfloat16", "model.conv_impl": "auto",
        "mesh.fsdp_axis": fsdp_axis, "mesh.min_shard_mb": 0.0, "train.global_batch_size": 32,
        "train.eval_batch_size": 32,
    })


@pytest.fixture(scope="module")
def devices():
    return aot.topology_devices(aot.parse_topology(TOPOLOGY))


def test_topology_names_are_checked():
    t = aot.parse_topology("v5p:2x2x4")
    assert t.chips == 16 and t.generation.hbm_bytes == 95 * aot.GiB
    for bad in ("v5e:4", "v4:2x2", "v7:2x2", "v5e:4xfour"):
        with pytest.raises(aot.UserError, match="GENERATION"):
            aot.parse_topology(bad)


def test_a_tpu_slice_variant_sizes_the_run_from_the_measured_per_chip_batch():
    from flax.traverse_util import flatten_dict

    from configs import common, inception_resnet_v1, inception_resnet_v2

    c = inception_resnet_v2.get_config("v5e:4x4")
    per_chip = common.TPU_PER_CHIP_BATCH[("inception_resnet_v2", "v5e")]
    assert c.model.dtype == "bfloat16"
    assert c.train.global_batch_size == c.train.eval_batch_size == 16 * per_chip
    # Everything else is the ImageNet run's.
    full = inception_resnet_v2.get_config()
    tpu, imagenet = (flatten_dict(x.to_dict(), sep=".") for x in (c, full))
    assert tpu.keys() == imagenet.keys()
    assert {k for k in tpu if tpu[k] != imagenet[k]} == {
        "model.dtype", "train.global_batch_size", "train.eval_batch_size"}
    with pytest.raises(UserError, match=r"no measured per-chip batch for inception_resnet_v1 "
                                        r"on v6e: .*--topology=v6e:2x2 .*--max_batch"):
        inception_resnet_v1.get_config("v6e:2x2")
    with pytest.raises(UserError, match="GENERATION"):
        inception_resnet_v2.get_config("v5e:16")


# The tiny IR-v1 as a config file for the grid command (it runs each point in a process).
TINY_CONFIG_FILE = """from tests.helpers import tiny_config


def get_config(arg=None):
    return tiny_config(None, **{"data.image_size": 75, "mesh.min_shard_mb": 0.0})
"""


@needs_libtpu
@pytest.mark.slow
def test_grid_compiles_train_steps_whose_memory_and_collectives_follow_the_mesh(tmp_path):
    """`aot_grid` end to end: the tiny network's train step for v5e:2x2 at one bf16 image per
    chip, with FSDP over 1 and 2 chips, each compiled by `python -m inception_jax.aot`. (One
    image, not 8: libtpu compiles it about a third faster; what is asserted does not depend on
    the batch.)"""
    configs, out = tmp_path / "configs", tmp_path / "out"
    configs.mkdir()
    (configs / f"{TINY_MODEL}.py").write_text(TINY_CONFIG_FILE)
    proc = subprocess.run(
        [sys.executable, "-m", "inception_jax.aot_grid", f"--config_dir={configs}",
         f"--models={TINY_MODEL}", f"--topologies={TOPOLOGY}", "--per_chip_batches=1",
         "--fsdp_axes=1,2", f"--out={out}"],
        env=run_env(), capture_output=True, text=True, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    combined = json.loads((out / "grid.json").read_text())
    assert combined["failures"] == [] and "no TPU ran" in combined["note"]
    results = {r["fsdp_axis"]: r for r in combined["runs"]}
    assert sorted(results) == [1, 2]
    for result in results.values():
        train = result["train"]
        assert result["platform"] == "tpu"  # the model's "auto" choices follow the target
        assert result["chips"] == 4 and result["per_chip_batch"] == 1
        assert result["dtype"] == "bfloat16" and "eval" not in result
        assert train["fits"] and train["compile_s"] > 0 and train["headroom_bytes"] > 0
        memory = train["memory"]
        # The compiler's HBM assignment holds at least the state and the batch (donated
        # state: outputs alias arguments), and a tiny network is far below the chip's HBM.
        assert memory["hbm_assigned_bytes"] >= memory["arguments_bytes"] > 0
        assert memory["hbm_assigned_bytes"] < 16 * aot.GiB / 100
        assert memory["aliased_bytes"] > 0.9 * result["state_bytes_per_chip"]
        assert train["flops_per_chip"] > 0 and train["analytic_flops_per_chip"] > 0
    # FSDP halves what each chip holds of the parameters' shardable arrays...
    assert results[2]["state_bytes_per_chip"] < 0.75 * results[1]["state_bytes_per_chip"]
    # ...and gathers them for the forward pass and scatters their gradients; pure data
    # parallelism only all-reduces (BatchNorm statistics, gradients).
    c1, c2 = results[1]["train"]["collectives"], results[2]["train"]["collectives"]
    assert c1["all-reduce"]["count"] > 0
    assert c1["all-gather"]["count"] == 0 and c1["reduce-scatter"]["count"] == 0
    assert c2["all-gather"]["count"] > 0
    assert c2["reduce-scatter"]["count"] + c2["all-reduce"]["count"] > 0
    text = (out / "grid.txt").read_text()
    assert text.strip() in proc.stdout and "Compiler estimates" in text
    rows = {row.split()[8]: row.split() for row in text.splitlines()[2:4]}  # by fsdp column
    assert rows["1"][9] == "yes" and int(rows["1"][14]) == c1["all-reduce"]["count"]
    assert int(rows["2"][15]) == c2["all-gather"]["count"]


def test_grid_points_scale_the_batch_by_each_topologys_chips():
    settings = aot_grid.resolve(models=["inception_v4"], topologies=["v5e:2x2", "v5p:2x2x2"],
                                per_chip_batches=["8"], remats=["false", "True"])
    points = aot_grid.expand(settings, "/c")
    assert [p["name"] for p in points] == [
        "inception_v4_v5e-2x2_b8_bfloat16_auto_u0_fsdp1",
        "inception_v4_v5e-2x2_b8_bfloat16_remat_auto_u0_fsdp1",
        "inception_v4_v5p-2x2x2_b8_bfloat16_auto_u0_fsdp1",
        "inception_v4_v5p-2x2x2_b8_bfloat16_remat_auto_u0_fsdp1",
    ]
    assert "--config.train.global_batch_size=32" in points[0]["flags"]  # 4 chips
    assert "--config.train.global_batch_size=64" in points[2]["flags"]  # 8 chips
    assert "--config.model.remat=True" in points[1]["flags"]
    assert "--config=/c/inception_v4.py" in points[0]["flags"] and "--noeval" in points[0]["flags"]
    assert aot_grid.command(points[0], "/o")[-1] == f"--out=/o/{points[0]['name']}.json"


@pytest.mark.parametrize("given,message", [
    ({"topologies": ["v5e:4"]}, "GENERATION"),
    ({"dtypes": ["float16"]}, "Unknown dtype 'float16' in --dtypes"),
    ({"remats": ["maybe"]}, "--remats"),
    ({"per_chip_batches": ["0"]}, "must be >= 1"),
    ({"models": ["resnet50"]}, "Unknown model 'resnet50'"),
])
def test_grid_refuses_bad_axes(given, message):
    with pytest.raises(UserError, match=message):
        aot_grid.resolve(**given)


def test_grid_table_shows_what_fits_what_the_compiler_refused_and_failures():
    base = {"model": "inception_v4", "topology": "v5e:2x2", "chips": 4, "per_chip_batch": 8,
            "dtype": "bfloat16", "remat": False, "conv_impl": "auto", "scan_unroll": 0,
            "fsdp_axis": 1}
    none = {"count": 0, "bytes": 0}
    fits = {**base, "name": "a", "train": {
        "fits": True, "needed_bytes": 3 * aot.GiB, "headroom_bytes": 12 * aot.GiB,
        "compile_s": 61.0, "analytic_flops_per_chip": 2.5e12,
        "collectives": {"all-reduce": {"count": 310, "bytes": 9}, "all-gather": none,
                        "reduce-scatter": none}}}
    refused = {**base, "name": "b", "per_chip_batch": 512, "train": {
        "fits": False, "compile_s": 40.0, "analytic_flops_per_chip": 1.6e14,
        "error": "RESOURCE_EXHAUSTED: HLO temporaries exceed available HBM (15.75G)"}}
    failure = {"name": "c", "timed_out": False, "returncode": 1, "log": "/o/c.log"}
    text = aot_grid.table([fits, refused], [failure])
    rows = [row.split() for row in text.splitlines()[2:4]]
    assert rows[0] == ["inception_v4", "v5e:2x2", "4", "8", "bfloat16", "False", "auto", "0",
                       "1", "yes", "3.00", "12.00", "61.0", "2.500", "310", "0", "0"]
    assert rows[1][3] == "512" and rows[1][9:13] == ["no", "n/a", "n/a", "40.0"]
    assert "does not fit: b (train step): RESOURCE_EXHAUSTED" in text
    assert "FAILED c: exit status 1; see /o/c.log" in text


@needs_libtpu
def test_lowering_follows_the_target_not_the_host(devices, tmp_path):
    # The "auto" knobs resolve from the mesh's devices: for TPU, XLA's convolutions; for CPU,
    # 1x1 convs as matmuls. Both unroll a stage's blocks; GPU keeps a loop over them. This
    # host's backend is CPU, so a choice made from it would be the CPU's.
    import jax
    import jax.numpy as jnp

    from inception_jax.data.pipeline import DatasetInfo
    from inception_jax.models import create
    from inception_jax.trainer import create_setup

    assert jax.default_backend() == "cpu"
    config = _config(tmp_path, 1)
    # Three 8x8 blocks: a stage that could be a loop.
    config.model.blocks = (0, 0, 3)

    def counts(text):
        return {op: text.count(f"stablehlo.{op}") for op in ("convolution", "dot_general", "while")}

    def lowered_eval(devices):
        setup = create_setup(config, mesh=sharding.create_mesh(1, devices=devices),
                             info=DatasetInfo(128, 32, 10, 75))
        inputs = aot.abstract_inputs(setup, config)
        text = setup.eval.lower(inputs["state"].ema, inputs["eval_batch"]).as_text()
        return setup.model.platform, counts(text)

    platform, tpu = lowered_eval(devices)
    assert platform == "tpu"
    assert tpu["dot_general"] == 1 and tpu["convolution"] > 20  # the classifier is the only matmul
    assert tpu["while"] == 0  # the stage unrolled
    platform, cpu = lowered_eval(jax.devices()[:1])
    assert platform == "cpu"
    assert cpu["while"] == 0  # unrolled
    # 1x1 convs as matmuls: each becomes one dot_general (IR-v1 here: 8 of 22 lowered convs).
    assert cpu["dot_general"] - 1 == tpu["convolution"] - cpu["convolution"] >= 8

    gpu = create("inception_resnet_v2", width=0.125, blocks=(0, 0, 3), num_classes=10,
                 platform="gpu")
    x = jax.ShapeDtypeStruct((8, 75, 75, 3), jnp.float32)
    variables = jax.eval_shape(gpu.init, jax.random.key(0), x)
    text = jax.jit(lambda v, x: gpu.apply(v, x, train=False)).lower(variables, x).as_text()
    assert counts(text)["while"] == 1  # one block an iteration


def test_hlo_collectives_count_loop_iterations():
    hlo = """HloModule m

%cond (p: (s32[], f32[8])) -> pred[] {
  %c = s32[]{:T(128)} constant(10)
  %p = (s32[], f32[8]) parameter(0)
  %i = s32[] get-tuple-element(%p), index=0
  ROOT %lt = pred[] compare(%i, %c), direction=LT
}

%body (p: (s32[], f32[8])) -> (s32[], f32[8]) {
  %p = (s32[], f32[8]) parameter(0)
  %x = f32[8]{0} get-tuple-element(%p), index=1
  %ag = f32[32]{0:T(128)} all-gather(%x), dimensions={0}
  ROOT %t = (s32[], f32[8]) tuple(%i, %x)
}

ENTRY %main (a: f32[8]) -> f32[8] {
  %a = f32[8]{0} parameter(0)
  %ar = bf16[1024,2]{1,0} all-reduce(%a), to_apply=%add
  %s = (f32[8], f32[64], u32[]) collective-permute-start(%a)
  %d = f32[64]{0} collective-permute-done(%s)
  %w = (s32[], f32[8]) while(%t0), condition=%cond, body=%body
  ROOT %r = f32[8] copy(%a)
}
"""
    c = hlo_stats.collectives(hlo)
    assert c["all-reduce"] == {"count": 1, "bytes": 1024 * 2 * 2}
    assert c["all-gather"] == {"count": 10, "bytes": 10 * 32 * 4}
    assert c["collective-permute"] == {"count": 1, "bytes": 64 * 4}
    assert c["reduce-scatter"]["count"] == 0


def test_max_batch_doubles_then_bisects(monkeypatch):
    """The search on a fake compiler: the step needs 10 bytes an image against a limit of 1000
    (fits up to 100 a chip), and the compiler refuses above 200 a chip outright."""
    import types

    import ml_collections

    def fake_compile_steps(config, mesh, with_eval):
        per_chip = config.train.global_batch_size // mesh.size
        train = ({"fits": False, "compile_s": 0.0} if per_chip > 200 else
                 {"fits": True, "compile_s": 0.0, "memory": {"hbm_assigned_bytes": 10 * per_chip}})
        return {"train": train, "prefetch_bytes_per_chip": 0}

    monkeypatch.setattr(aot, "compile_steps", fake_compile_steps)
    mesh = types.SimpleNamespace(size=4)
    config = ml_collections.ConfigDict({"train": {"global_batch_size": 4 * 64}})
    up = aot.max_batch(config, mesh, start=64, step=8, limit=1000)
    assert up["max_per_chip_batch"] == 96
    assert up["tried"] == {"64": True, "96": True, "104": False, "112": False, "128": False}
    down = aot.max_batch(config, mesh, start=256, step=8, limit=1000)
    assert down["max_per_chip_batch"] == 96 and down["tried"]["256"] is False
    assert aot.max_batch(config, mesh, start=8, step=8, limit=10)["max_per_chip_batch"] == 0


@needs_libtpu
@pytest.mark.slow
def test_a_population_compiles_for_a_slice_with_its_members_split_over_chip_groups(
        devices, tmp_path):
    from inception_jax.data.pipeline import DatasetInfo
    from inception_jax.trainer import create_setup

    def population_config(groups):
        config = _config(tmp_path, 1)
        config.model.blocks = (0, 0, 1)
        config.population.members = tuple({"seed": s, "model.residual_scales": (r,) * 3}
                                          for s, r in enumerate((1.0, 0.5, 0.2, 0.1)))
        config.mesh.population_axis = groups
        return config

    two = aot.run(population_config(2), TOPOLOGY, with_eval=False)
    assert two["fits"] and (two["population_members"], two["population_axis"]) == (4, 2)
    # Two groups of two chips: each group splits the batch over two chips, not four (twice
    # the images per chip), and each chip holds two members' state, not four.
    assert two["per_chip_batch"] == 16
    assert "a population of 4 members over 2 chip groups" in aot.table(two)
    one_group = population_config(1)
    setup = create_setup(one_group, mesh=sharding.create_mesh(1, devices=devices,
                                                              population_axis=1),
                         info=DatasetInfo(128, 32, 10, 75))
    state = aot.abstract_inputs(setup, one_group)["state"]
    assert two["state_bytes_per_chip"] < 0.6 * aot._per_chip_bytes(state)
