"""Compile the trainer's train and eval steps for a TPU slice, on a host with no TPU.

    python -m inception_jax.aot --config=configs/inception_resnet_v2.py --topology=v5e:4x4 \\
        [--config.train.global_batch_size=1024] [--config.model.dtype=bfloat16] \\
        [--config.model.remat=True] [--config.mesh.fsdp_axis=4] [--max_batch] [--out=F.json]

libtpu (`pip install 'inception_jax[tpu]'`) compiles for a named topology without a TPU
("deviceless" ahead-of-time compilation): the mesh is built over the topology's devices and
`trainer.create_setup` makes the very step functions a run on that slice would jit. Nothing
runs; every figure is the compiler's:

- fits: the compiler accepted the program and its HBM, with what stays on the chip beside
  it (the prefetched batches; the train state during eval), is within the HBM the compiler
  allows (probed once: 15.75 GiB on a 16 GiB v5e chip). The compiler refuses a program whose
  buffers do not fit (RESOURCE_EXHAUSTED at compile time): reported as "does not fit".
- HBM per chip: the compiler's buffer assignment of the HBM memory space (parameters and
  optimizer state, the batch, temporaries, outputs not aliased to the donated state), from
  its memory-usage report. `memory_analysis()`'s fields are in the JSON too, but on TPU its
  `temp_size_in_bytes` is no HBM figure (it exceeds HBM for programs that fit).
- FLOPs per chip per step: every conv and matmul (`flops.analytic_flops`), and XLA's cost
  analysis, which counts a rolled stage's loop body once.
- the collectives one step runs (count and result bytes, loop bodies times their trip count).
- with `--max_batch`: the largest per-chip batch that fits (doubling, then bisection to
  `--batch_step`).

The JSON (`--out`) holds every figure; the table is printed.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import datetime  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import re  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
from absl import flags  # noqa: E402

from inception_jax import cli, hlo_stats, population, sharding  # noqa: E402
from inception_jax.errors import UserError  # noqa: E402
from inception_jax.flops import analytic_flops  # noqa: E402
from inception_jax.topology import GiB, Topology, parse_topology  # noqa: E402

MAX_PER_CHIP_BATCH = 4096  # where --max_batch stops doubling


def topology_devices(topology: Topology) -> list[Any]:
    """Compile-only devices of the slice (one per chip); no TPU is contacted."""
    if importlib.util.find_spec("libtpu") is None:
        raise UserError(
            "Compiling for TPU needs libtpu: pip install 'inception_jax[tpu]' "
            f"(or pip install 'jax[tpu]=={jax.__version__}')."
        )
    gen = topology.generation
    # libtpu otherwise looks for the TPU it runs on (metadata server, worker addresses), and
    # locks /tmp/libtpu_lockfile against a second process: compiling claims no TPU.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
    os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
    os.environ.setdefault(
        "TPU_ACCELERATOR_TYPE",
        f"{gen.accelerator_type}-{topology.chips * gen.cores_per_chip_in_name}",
    )
    from jax.experimental import topologies

    name = f"{gen.topology_prefix}:{'x'.join(map(str, topology.shape))}"
    try:
        desc = topologies.get_topology_desc(
            platform="tpu", topology_name=name, chip_config_name=gen.chip_config
        )
    except (RuntimeError, ValueError) as e:
        raise UserError(f"libtpu could not describe the topology {name!r}: {e}") from e
    return list(desc.devices)


def _per_chip_bytes(tree: Any) -> int:
    """Bytes one device holds of a pytree of sharded shape structs."""
    return sum(
        math.prod(x.sharding.shard_shape(x.shape)) * jnp.dtype(x.dtype).itemsize
        for x in jax.tree.leaves(tree)
    )


def abstract_inputs(setup: Any, config: ml_collections.ConfigDict) -> dict[str, Any]:
    """Shape structs of the sharded train state and of a train and an eval batch."""
    state = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
        setup.abstract_state, setup.state_sharding,
    )
    size, sharding_ = config.data.image_size, setup.batch_sharding

    def batch(n: int, mask: bool) -> dict[str, Any]:
        b = {"image": jax.ShapeDtypeStruct((n, size, size, 3), jnp.float32, sharding=sharding_),
             "label": jax.ShapeDtypeStruct((n,), jnp.int32, sharding=sharding_)}
        if mask:
            b["mask"] = jax.ShapeDtypeStruct((n,), jnp.float32, sharding=sharding_)
        return b

    return {"state": state, "train_batch": batch(config.train.global_batch_size, False),
            "eval_batch": batch(config.train.eval_batch_size, True)}


def _resource_exhausted(error: Exception) -> str | None:
    """The compiler's out-of-memory message, or None for any other error."""
    text = str(error)
    if "RESOURCE_EXHAUSTED" not in text:
        return None
    return next((line.strip() for line in text.splitlines() if "RESOURCE_EXHAUSTED" in line),
                text[:500])


def _memory(compiled: Any, dump_dir: str) -> dict[str, Any]:
    m = compiled.memory_analysis()
    assigned = hlo_stats.assigned_bytes(dump_dir)
    return {
        "hbm_assigned_bytes": assigned.get("default"),
        "assigned_bytes_by_memory_space": assigned,
        "arguments_bytes": m.argument_size_in_bytes,
        "outputs_bytes": m.output_size_in_bytes,
        "aliased_bytes": m.alias_size_in_bytes,
        "temporaries_bytes": m.temp_size_in_bytes,
        "generated_code_bytes": m.generated_code_size_in_bytes,
        "peak_memory_bytes": getattr(m, "peak_memory_in_bytes", None),
    }


def compile_one(jitted: Any, *args: Any) -> dict[str, Any]:
    """Lowers and compiles `jitted(*args)`: memory, FLOPs, collectives, or "does not fit"."""
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="inception_jax_aot_") as dump_dir:
        try:
            compiled = jitted.lower(*args).compile(
                compiler_options={"xla_dump_to": dump_dir}
            )
        except jax.errors.JaxRuntimeError as e:
            message = _resource_exhausted(e)
            if message is None:
                raise
            return {"fits": False, "compile_s": time.perf_counter() - start,
                    "error": message, "hbm_limit_bytes": _limit_from_message(message)}
        seconds = time.perf_counter() - start
        memory = _memory(compiled, dump_dir)
    cost = compiled.cost_analysis()
    cost = (cost[0] if isinstance(cost, (list, tuple)) else cost) or {}
    return {
        "fits": True, "compile_s": seconds, "memory": memory,
        "flops_per_chip": float(cost.get("flops", float("nan"))),
        "bytes_accessed_per_chip": float(cost.get("bytes accessed", float("nan"))),
        "collectives": hlo_stats.collectives(compiled.as_text()),
    }


def _limit_from_message(message: str) -> int | None:
    """The HBM the compiler allows, from "... exceeds available HBM (15.75G)"."""
    found = re.search(r"available HBM \(([\d.]+)G\)", message)
    return int(float(found.group(1)) * GiB) if found else None


def compiler_hbm_limit(mesh: jax.sharding.Mesh, hbm_bytes: int) -> int | None:
    """HBM per chip the compiler allows a program: a program twice the datasheet HBM is
    compiled, and the refusal names the limit (None if the message says no number)."""
    spec = jax.sharding.PartitionSpec(sharding.BATCH_AXES)
    shard = jax.sharding.NamedSharding(mesh, spec)
    big = jax.ShapeDtypeStruct((mesh.size, 2 * hbm_bytes // 4), jnp.float32, sharding=shard)
    try:
        jax.jit(lambda x: x * 2, in_shardings=shard, out_shardings=shard).lower(big).compile()
    except jax.errors.JaxRuntimeError as e:
        return _limit_from_message(_resource_exhausted(e) or "")
    return None


def verdict(result: dict[str, Any], limit: int, resident_bytes: int = 0) -> dict[str, Any]:
    """Headroom of one compiled step against `limit`; `resident_bytes`: buffers that live on
    the chip beside the program (the train state while the eval step runs, prefetched
    batches)."""
    if not result["fits"]:
        return {"fits": False}
    hbm = result["memory"]["hbm_assigned_bytes"]
    if hbm is None:  # no report: arguments + outputs not aliased + temporaries, an upper bound
        m = result["memory"]
        hbm = (m["arguments_bytes"] + m["outputs_bytes"] - m["aliased_bytes"]
               + m["temporaries_bytes"])
    need = hbm + resident_bytes
    return {"fits": need <= limit, "needed_bytes": need, "headroom_bytes": limit - need}


def compile_steps(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
                  with_eval: bool = True) -> dict[str, Any]:
    """Compiles the trainer's train step (and eval step) for `mesh` with `config`."""
    from inception_jax.data.pipeline import DatasetInfo
    from inception_jax.trainer import create_setup

    info = DatasetInfo(1_281_167, 50_000, config.model.num_classes, config.data.image_size)
    setup = create_setup(config, mesh=mesh, info=info)
    inputs = abstract_inputs(setup, config)
    state, batch = inputs["state"], inputs["train_batch"]
    train = compile_one(setup.step, state, batch)
    # XLA's cost analysis counts a rolled stage's loop body once; the analytic count (every
    # conv and matmul, scans times their length) is the model's FLOPs.
    train["analytic_flops_per_chip"] = analytic_flops(setup.step, state, batch) / mesh.size
    prefetch = config.train.prefetch_batches * _per_chip_bytes(batch)
    result = {"platform": setup.model.platform, "state_bytes_per_chip": _per_chip_bytes(state),
              "prefetch_bytes_per_chip": prefetch, "train": train}
    if with_eval:
        result["eval"] = compile_one(setup.eval, state.ema, inputs["eval_batch"])
        result["eval"]["analytic_flops_per_chip"] = (
            analytic_flops(setup.eval, state.ema, inputs["eval_batch"]) / mesh.size)
        # The train state stays on the chip while the eval step runs beside it.
        result["eval_resident_bytes_per_chip"] = result["state_bytes_per_chip"] - \
            _per_chip_bytes(state.ema)
    return result


def _with_batch(config: ml_collections.ConfigDict, per_chip: int,
                chips: int) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict(config.to_dict())
    config.train.global_batch_size = per_chip * chips
    return config


def max_batch(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh, start: int,
              step: int, limit: int) -> dict[str, Any]:
    """Largest per-chip batch (a multiple of `step`) whose train step fits in `limit`:
    doubling (or halving) from `start` until it brackets, then bisection."""
    tried: dict[int, bool] = {}

    def fits(per_chip: int) -> bool:
        result = compile_steps(_with_batch(config, per_chip, mesh.size), mesh, False)
        ok = verdict(result["train"], limit, result["prefetch_bytes_per_chip"])["fits"]
        tried[per_chip] = ok
        print(f"  per-chip batch {per_chip}: {'fits' if ok else 'does not fit'} "
              f"({result['train']['compile_s']:.0f} s)", flush=True)
        return ok

    good, bad = 0, None
    b = max(step, start // step * step)
    if fits(b):
        good = b
        while bad is None and 2 * b <= MAX_PER_CHIP_BATCH:
            b *= 2
            good, bad = (b, None) if fits(b) else (good, b)
    else:
        bad = b
        while good == 0 and bad > step:
            b = max(step, bad // 2 // step * step)
            good, bad = (b, bad) if fits(b) else (0, b)
    while bad is not None and bad - good > step:
        mid = (good + bad) // 2 // step * step
        good, bad = (mid, bad) if fits(mid) else (good, mid)
    return {"max_per_chip_batch": good, "step": step,
            "tried": {str(k): v for k, v in sorted(tried.items())}}


def run(config: ml_collections.ConfigDict, topology_name: str, with_eval: bool = True,
        search_max_batch: bool = False, batch_step: int = 8) -> dict[str, Any]:
    """Every figure of one config on one topology, as the JSON the CLI writes."""
    topology = parse_topology(topology_name)
    devices = topology_devices(topology)
    members = len(config.population.members) if population.is_population(config) else 0
    groups = config.mesh.population_axis if members else None
    mesh = sharding.create_mesh(config.mesh.fsdp_axis, devices=devices, population_axis=groups)
    chips = mesh.size
    if config.train.global_batch_size % chips or config.train.eval_batch_size % chips:
        raise UserError(
            f"train.global_batch_size={config.train.global_batch_size} and "
            f"train.eval_batch_size={config.train.eval_batch_size} must be multiples of the "
            f"{chips} chips of {topology_name}."
        )
    hbm = topology.generation.hbm_bytes
    limit = compiler_hbm_limit(mesh, hbm)
    result = compile_steps(config, mesh, with_eval)
    usable = limit or hbm
    result["train"].update(verdict(result["train"], usable, result["prefetch_bytes_per_chip"]))
    if with_eval:
        result["eval"].update(verdict(result["eval"], usable,
                                      result["eval_resident_bytes_per_chip"]))
    report = {
        "model": config.model.name, "topology": topology_name, "chips": chips,
        "device_kind": devices[0].device_kind,
        "hbm_bytes_per_chip": hbm, "compiler_hbm_limit_bytes": limit,
        # A population's batch is split over each member group's chips.
        "per_chip_batch": config.train.global_batch_size // sharding.batch_devices(mesh),
        "population_members": members, "population_axis": groups or 0,
        "per_chip_eval_batch": config.train.eval_batch_size // chips,
        "global_batch": config.train.global_batch_size,
        "image_size": config.data.image_size, "dtype": config.model.dtype,
        "remat": config.model.remat, "scan_unroll": config.model.scan_unroll,
        "conv_impl": config.model.conv_impl, "fsdp_axis": config.mesh.fsdp_axis,
        "grad_accum_steps": config.train.get("grad_accum_steps", 1),
        **result,
        "fits": result["train"].get("fits", False)
        and (not with_eval or result["eval"].get("fits", False)),
        "versions": {"jax": jax.__version__, "libtpu": _libtpu_version()},
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "note": "compiler estimates for the named TPU slice; no TPU ran this program",
    }
    if search_max_batch:
        report["max_batch"] = max_batch(config, mesh, report["per_chip_batch"], batch_step,
                                         usable)
    return report


def _libtpu_version() -> str | None:
    from importlib import metadata

    try:
        return metadata.version("libtpu")
    except metadata.PackageNotFoundError:
        return None


def _gib(n: float | None) -> str:
    return "n/a" if n is None else f"{n / GiB:.2f}"


def table(report: dict[str, Any]) -> str:
    """The console table of one `run` report."""
    limit = report["compiler_hbm_limit_bytes"]
    lines = [
        f"{report['model']} on {report['topology']} ({report['chips']} x "
        f"{report['device_kind']}, HBM {_gib(report['hbm_bytes_per_chip'])} GiB per chip, "
        f"{_gib(limit)} GiB allowed by the compiler); {report['dtype']}, remat "
        f"{report['remat']}, scan_unroll {report['scan_unroll']}, conv_impl "
        f"{report['conv_impl']}, fsdp {report['fsdp_axis']}, target platform "
        f"{report['platform']}"
        + (f"; a population of {report['population_members']} members over "
           f"{report['population_axis']} chip groups" if report.get("population_members")
           else ""),
        f"{'step':6}{'batch/chip':>11}{'fits':>6}{'HBM GiB':>9}{'headroom':>10}{'args':>8}"
        f"{'temps*':>8}{'compile s':>11}{'TFLOP/chip':>12}  collectives per step (count, bytes)",
    ]
    for step, batch in (("train", report["per_chip_batch"]),
                        ("eval", report["per_chip_eval_batch"])):
        r = report.get(step)
        if r is None:
            continue
        if not r["fits"] and "memory" not in r:
            lines.append(f"{step:6}{batch:>11}{'no':>6}  compiler: {r['error'][:120]}")
            continue
        m = r["memory"]
        coll = ", ".join(f"{k} {v['count']}x {v['bytes'] / 2**20:.0f} MiB"
                         for k, v in r["collectives"].items() if v["count"]) or "none"
        lines.append(
            f"{step:6}{batch:>11}{'yes' if r['fits'] else 'NO':>6}{_gib(r['needed_bytes']):>9}"
            f"{_gib(r['headroom_bytes']):>10}{_gib(m['arguments_bytes']):>8}"
            f"{_gib(m['temporaries_bytes']):>8}{r['compile_s']:>11.1f}"
            f"{r['analytic_flops_per_chip'] / 1e12:>12.3f}  {coll}"
        )
    lines.append("HBM: the compiler's HBM buffer assignment plus buffers resident beside the "
                 "step (prefetched batches; the train state during eval). *temps: "
                 "memory_analysis temp_size, not an HBM figure on TPU. TFLOP/chip: every conv "
                 "and matmul (XLA's cost analysis counts a rolled loop body once).")
    if "max_batch" in report:
        mb = report["max_batch"]
        lines.append(f"largest per-chip batch that fits: {mb['max_per_chip_batch']} "
                     f"(multiples of {mb['step']})")
    lines.append("Compiler estimates: no TPU ran this.")
    return "\n".join(lines)


@cli.friendly
def main(argv: list[str]) -> None:
    del argv
    os.environ.setdefault("JAX_PLATFORMS", "cpu")  # compile-only: never claim a local TPU
    cli.setup()
    # Compile times must be compilations, not loads from the persistent cache.
    jax.config.update("jax_enable_compilation_cache", False)
    config = _CONFIG.value
    if _POPULATION.value:
        config.population.members = tuple({"seed": s} for s in range(_POPULATION.value))
    if _TOPOLOGY.value is None:
        raise UserError("Pass --topology=GENERATION:SHAPE, e.g. --topology=v5e:4x4.")
    report = run(config, _TOPOLOGY.value, _EVAL.value, _MAX_BATCH.value, _BATCH_STEP.value)
    if _OUT.value:
        os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
        with open(_OUT.value, "w") as f:
            json.dump(report, f, indent=2)
    print(table(report))
    if _OUT.value:
        print(f"-> {_OUT.value}")


if __name__ == "__main__":  # flags exist only when run as a command
    _CONFIG = cli.config_file_flag("Config file.")
    _TOPOLOGY = flags.DEFINE_string("topology", None, "TPU slice, e.g. v5e:4x4, v4:2x2x4.")
    _EVAL = flags.DEFINE_bool("eval", True, "Also compile the eval step.")
    _MAX_BATCH = flags.DEFINE_bool("max_batch", False,
                                   "Search the largest per-chip batch that fits.")
    _BATCH_STEP = flags.DEFINE_integer("batch_step", 8, "Granularity of --max_batch.")
    _OUT = flags.DEFINE_string("out", None, "JSON output file.")
    _POPULATION = flags.DEFINE_integer(
        "population", 0, "Compile a population of this many members (seeds 0, 1, ...; "
        "--config.mesh.population_axis splits them over chip groups) instead of one run.")
    flags.mark_flags_as_required(["config"])
    cli.run(main)
