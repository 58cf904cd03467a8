"""Deviceless TPU compilation: a tiny network's train step compiled for a v5e:2x2 slice on this
CPU host (libtpu, no TPU) reports its memory and collectives, and picks the TPU lowering."""

import importlib.util

import pytest

from inception_jax import aot, hlo_stats, sharding
from tests.helpers import tiny_config

needs_libtpu = pytest.mark.skipif(
    importlib.util.find_spec("libtpu") is None,
    reason="libtpu is not installed (pip install 'inception_jax[tpu]'); CI installs it",
)

TOPOLOGY = "v5e:2x2"


def _config(tmp_path, fsdp_axis):
    # The tiny IR-v2 (width 0.125, one block a stage) with TPU dtype and 8 images per chip;
    # its arrays are all small, so FSDP shards every one it can (no size threshold).
    return tiny_config(str(tmp_path), **{
        "data.image_size": 75, "model.dtype": "bfloat16", "mesh.fsdp_axis": fsdp_axis,
        "mesh.min_shard_mb": 0.0, "train.global_batch_size": 32, "train.eval_batch_size": 32,
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


@needs_libtpu
@pytest.mark.slow
def test_train_step_memory_and_collectives_follow_the_mesh(devices, tmp_path):
    assert len(devices) == 4 and devices[0].platform == "tpu"
    results = {}
    for fsdp in (1, 2):
        config = _config(tmp_path, fsdp)
        mesh = sharding.create_mesh(fsdp, devices=devices)
        results[fsdp] = aot.compile_steps(config, mesh, False)
    limit = 16 * aot.GiB
    for result in results.values():
        train = result["train"]
        assert result["platform"] == "tpu"  # the model's "auto" choices follow the target
        assert train["fits"] and train["compile_s"] > 0
        memory = train["memory"]
        # The compiler's HBM assignment holds at least the state and the batch (donated
        # state: outputs alias arguments), and a tiny network is far below the chip's HBM.
        assert memory["hbm_assigned_bytes"] >= memory["arguments_bytes"] > 0
        assert memory["hbm_assigned_bytes"] < limit / 100
        assert memory["aliased_bytes"] > 0.9 * result["state_bytes_per_chip"]
        assert aot.verdict(train, limit, result["prefetch_bytes_per_chip"])["fits"]
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


@needs_libtpu
def test_lowering_follows_the_target_not_the_host(devices, tmp_path):
    # conv_impl="auto" rewrites 1x1 convs as matmuls when compiling for CPU only: the TPU
    # program keeps XLA's convolutions (this host's backend is CPU).
    import jax

    from inception_jax.data.pipeline import DatasetInfo
    from inception_jax.trainer import create_setup

    assert jax.default_backend() == "cpu"
    config = _config(tmp_path, 1)
    mesh = sharding.create_mesh(1, devices=devices)
    setup = create_setup(config, mesh=mesh, info=DatasetInfo(128, 32, 10, 75))
    inputs = aot.abstract_inputs(setup, config)
    text = setup.eval.lower(inputs["state"].ema, inputs["eval_batch"]).as_text()
    convs = text.count("stablehlo.convolution")
    dots = text.count("stablehlo.dot_general")
    assert setup.model.platform == "tpu"
    assert dots == 1 and convs > 20  # the classifier is the only matmul


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
