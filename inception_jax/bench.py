"""Benchmark our train step and eval forward against timm's same network, in one process.

    python -m inception_jax.bench --model=inception_resnet_v2 --batch=8 --image_size=299 \\
        [--dtype=bfloat16] [--timm=eager,compile] [--pipeline] [--out=bench/irv2.json]

For our network it times the trainer's own jitted, sharded step (`trainer.create_setup` on
synthetic device-resident data) and the eval forward: images/s (median over the timed steps
after warm-up, each synchronised), compile time, FLOPs per step from XLA's cost analysis,
peak device memory, and MFU against the device's peak (a table for GPUs and TPUs; on CPU a
peak measured here by a large matmul). timm's model runs the same batch (forward, cross-
entropy, backward, RMSProp step) eagerly and optionally under `torch.compile`, channels-last,
with bf16 autocast on CUDA; the table gives ours / timm's best. `--pipeline` also measures the
input pipeline (JPEG decode + Inception augmentation) per host and per core.
A console table and a JSON file come out; speeds are never asserted by tests.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

try:  # torch must load before TensorFlow in one process (TF-then-torch segfaults).
    import timm
    import torch
except ImportError:  # timm comparisons are skipped
    timm = torch = None

import datetime  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from inception_jax import cli  # noqa: E402

# Dense peak FLOP/s per chip (vendor datasheets): (bf16, fp32 as JAX computes it). JAX's
# default precision runs fp32 convolutions and matmuls on TF32 tensor cores on Ampere and
# Hopper, so the fp32 column is the TF32 peak: H100/H200 SXM 989 bf16 / 495 TF32 TFLOPs,
# H100 PCIe 756 / 378, A100 312 / 156. TPU v4 275, v5e 197, v5p 459 TFLOPs bf16 (TPUs run
# fp32 matmuls as bf16 passes: the bf16 peak is quoted for both).
PEAKS = {
    "H200": (989e12, 495e12),
    "H100 PCIe": (756e12, 378e12),
    "H100": (989e12, 495e12),
    "A100": (312e12, 156e12),
    "TPU v4": (275e12, 275e12),
    "TPU v5 lite": (197e12, 197e12),
    "TPU v5e": (197e12, 197e12),
    "TPU v5p": (459e12, 459e12),
    "TPU v5": (459e12, 459e12),
}
TIMM_NAMES = ("inception_v3", "inception_v4", "inception_resnet_v2")


def device_peak(dtype: str) -> tuple[float, str]:
    """(peak FLOP/s of all devices for `dtype`, where the number comes from).

    On CPU the (possibly several, forced) devices share the cores: the peak is the machine's.
    """
    device = jax.devices()[0]
    if device.platform != "cpu":
        n = jax.device_count()
        for key, (bf16, fp32) in PEAKS.items():
            if key.lower() in device.device_kind.lower():
                return n * (bf16 if dtype == "bfloat16" else fp32), f"table: {n} x {key}"
        return float("nan"), f"unknown device {device.device_kind!r}"
    return measured_matmul_peak(dtype), "measured: 2048x2048 matmul on this CPU"


def measured_matmul_peak(dtype: str, n: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of a large square matmul on the default device (the CPU's practical peak)."""
    a = jnp.ones((n, n), getattr(jnp, dtype))
    f = jax.jit(lambda a: a @ a)
    f(a).block_until_ready()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        f(a).block_until_ready()
        times.append(time.perf_counter() - t)
    return 2 * n**3 / min(times)


def _flops(compiled: Any) -> float:
    """FLOPs of one call over all devices (XLA reports the per-device SPMD program's)."""
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float((cost or {}).get("flops", float("nan"))) * jax.device_count()


def _memory(compiled: Any) -> tuple[int, str]:
    """Peak device memory in bytes, and how it was measured."""
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        return int(stats["peak_bytes_in_use"]), "device peak_bytes_in_use"
    m = compiled.memory_analysis()
    if m is not None:
        total = m.temp_size_in_bytes + m.argument_size_in_bytes + m.output_size_in_bytes
        return int(total), "XLA memory_analysis (temp + arguments + outputs)"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "process max RSS"


def _time(run: Callable[[], Any], warmup: int, steps: int) -> list[float]:
    for _ in range(warmup):
        run()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
    return times


def _result(mode: str, batch: int, times: list[float], compile_s: float, flops: float,
            peak: float, memory: tuple[int, str]) -> dict[str, Any]:
    median = statistics.median(times)
    achieved = flops / median
    return {
        "mode": mode, "images_per_s": batch / median, "step_time_median_s": median,
        "step_times_s": times, "compile_s": compile_s, "flops_per_step": flops,
        "achieved_flops_per_s": achieved, "mfu": achieved / peak,
        "peak_memory_bytes": memory[0], "peak_memory_source": memory[1],
    }


def bench_ours(model: str, batch: int, size: int, dtype: str, width: float, conv_impl: str,
               remat: bool, warmup: int, steps: int, peak: float,
               scan_unroll: int = 0) -> list[dict[str, Any]]:
    """Train step and eval forward of our network, as the trainer builds them."""
    import importlib

    from inception_jax.data.pipeline import DatasetInfo
    from inception_jax.models import model_class
    from inception_jax.trainer import create_setup

    model_class(model)  # an unknown name: ValueError listing the known ones

    config = importlib.import_module(f"configs.{model}").get_config()
    config.model.update({"num_classes": 1000, "width": width, "dtype": dtype,
                         "conv_impl": conv_impl, "remat": remat, "scan_unroll": scan_unroll})
    config.data.image_size = size
    config.train.global_batch_size = config.train.eval_batch_size = batch
    info = DatasetInfo(1_281_167, 50_000, 1000, size)
    setup = create_setup(config, info=info)
    rng = np.random.default_rng(0)
    host = {"image": rng.uniform(-1, 1, (batch, size, size, 3)).astype(np.float32),
            "label": rng.integers(0, 1000, batch).astype(np.int32),
            "mask": np.ones(batch, np.float32)}
    data = {k: jax.device_put(v, setup.batch_sharding) for k, v in host.items()}
    train_batch = {k: data[k] for k in ("image", "label")}
    state = setup.init()
    results = []

    start = time.perf_counter()
    step = setup.step.lower(state, train_batch).compile()
    compile_s = time.perf_counter() - start
    holder = [state]

    def train_once():
        holder[0], metrics = step(holder[0], train_batch)
        jax.block_until_ready(metrics)

    times = _time(train_once, warmup, steps)
    results.append(_result("train", batch, times, compile_s, _flops(step), peak, _memory(step)))

    start = time.perf_counter()
    evaluate = setup.eval.lower(holder[0].ema, data).compile()
    compile_s = time.perf_counter() - start
    times = _time(lambda: jax.block_until_ready(evaluate(holder[0].ema, data)), warmup, steps)
    results.append(
        _result("eval", batch, times, compile_s, _flops(evaluate), peak, _memory(evaluate))
    )
    return results


def bench_timm(model: str, batch: int, size: int, dtype: str, modes: list[str], warmup: int,
               steps: int) -> list[dict[str, Any]]:
    """timm's model: train step (fwd, CE, bwd, RMSProp) and eval forward per mode."""
    if torch is None or model not in TIMM_NAMES or jax.default_backend() == "tpu":
        return []  # on a TPU host timm would run on the CPU: no comparison
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch.set_num_threads(cores or 1)
    return [r for mode in modes for r in _bench_timm_mode(model, batch, size, dtype, mode,
                                                          warmup, steps)]


def _bench_timm_mode(model: str, batch: int, size: int, dtype: str, mode: str, warmup: int,
                     steps: int) -> list[dict[str, Any]]:
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    net = timm.create_model(model, pretrained=False, num_classes=1000).to(device)
    net = net.to(memory_format=torch.channels_last)
    optimizer = torch.optim.RMSprop(net.parameters(), lr=0.045, alpha=0.9, eps=1.0, momentum=0.9)
    x = torch.randn(batch, 3, size, size, device=device).to(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (batch,), device=device)
    autocast = torch.autocast("cuda", torch.bfloat16, enabled=cuda and dtype == "bfloat16")
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    def train_fn(x, y):
        with autocast:
            loss = torch.nn.functional.cross_entropy(net(x), y)
        loss.backward()
        return loss

    def eval_fn(x):
        with autocast, torch.no_grad():
            return net(x)

    fwd_bwd = torch.compile(train_fn) if mode == "compile" else train_fn
    infer = torch.compile(eval_fn) if mode == "compile" else eval_fn

    def train_once():
        optimizer.zero_grad(set_to_none=True)
        fwd_bwd(x, y)
        optimizer.step()
        sync()

    def eval_once():
        infer(x)
        sync()

    results = []
    for kind, once, train_mode in (("train", train_once, True), ("eval", eval_once, False)):
        net.train(train_mode)
        start = time.perf_counter()
        once()  # the first call compiles under torch.compile
        first_s = time.perf_counter() - start
        times = _time(once, warmup, steps)
        median = statistics.median(times)
        results.append({"mode": kind, "timm_mode": mode, "images_per_s": batch / median,
                        "step_time_median_s": median, "step_times_s": times,
                        "first_call_s": first_s})
    return results


def bench_pipeline(size: int, num_images: int = 256) -> dict[str, Any]:
    """JPEG decode + Inception training augmentation throughput of one host (tf.data)."""
    import tensorflow as tf

    from inception_jax.data.preprocess import train_preprocess

    rng = np.random.default_rng(0)
    jpegs = [tf.io.encode_jpeg(rng.integers(0, 255, (375, 500, 3), np.uint8)).numpy()
             for _ in range(16)]
    ds = tf.data.Dataset.from_tensor_slices(jpegs).repeat(num_images // 16).enumerate()

    def augment(i, jpeg):
        image = tf.io.decode_jpeg(jpeg, channels=3)
        return train_preprocess(image, size, tf.stack([tf.constant(0, tf.int64), i]), True)

    ds = ds.map(augment, num_parallel_calls=tf.data.AUTOTUNE).batch(32).prefetch(2)
    for _ in ds.take(1):
        pass
    start = time.perf_counter()
    count = sum(int(b.shape[0]) for b in ds)
    seconds = time.perf_counter() - start
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"images_per_s": count / seconds, "cores": cores,
            "images_per_s_per_core": count / seconds / cores, "image_size": size,
            "source": "500x375 JPEGs, decode + distorted crop + flip + colour distortion"}


def run(model: str, batch: int, size: int, dtype: str = "float32", width: float = 1.0,
        conv_impl: str = "auto", remat: bool = False, warmup: int = 2, steps: int = 5,
        timm_modes: tuple[str, ...] = ("eager",), pipeline: bool = False,
        scan_unroll: int = 0) -> dict[str, Any]:
    """Every measurement of one setting, as the JSON the CLI writes."""
    peak, peak_source = device_peak(dtype)
    device = jax.devices()[0]
    ours = bench_ours(model, batch, size, dtype, width, conv_impl, remat, warmup, steps, peak,
                      scan_unroll)
    theirs = bench_timm(model, batch, size, dtype, list(timm_modes), warmup, steps)
    for r in ours:
        best = max((t for t in theirs if t["mode"] == r["mode"]),
                   key=lambda t: t["images_per_s"], default=None)
        if best is not None and width == 1.0:  # timm has no width knob
            r["timm_best_mode"] = best["timm_mode"]
            r["timm_images_per_s"] = best["images_per_s"]
            r["ratio_vs_timm"] = r["images_per_s"] / best["images_per_s"]
    return {
        "model": model, "batch": batch, "image_size": size, "dtype": dtype, "width": width,
        "conv_impl": conv_impl, "scan_unroll": scan_unroll, "remat": remat,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "backend": jax.default_backend(),
        "device_kind": device.device_kind, "device_count": jax.device_count(),
        "peak_flops_per_s": peak, "peak_source": peak_source,
        "ours": ours, "timm": theirs,
        "pipeline": bench_pipeline(size) if pipeline else None,
        "versions": {"jax": jax.__version__, "torch": getattr(torch, "__version__", None),
                     "timm": getattr(timm, "__version__", None)},
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def table(result: dict[str, Any]) -> str:
    """The console table of one `run` result."""
    head = (f"{result['model']} batch {result['batch']} at {result['image_size']}² "
            f"{result['dtype']} on {result['device_count']}× {result['device_kind']} "
            f"(peak {result['peak_flops_per_s'] / 1e12:.2f} TFLOP/s in all, "
            f"{result['peak_source']})")
    lines = [head, f"{'':8}{'img/s':>10}{'step s':>9}{'compile s':>11}{'GFLOP/step':>12}"
             f"{'MFU':>8}{'peak MiB':>10}{'timm img/s':>12}{'ours/timm':>11}"]
    for r in result["ours"]:
        timm_ips = r.get("timm_images_per_s")
        lines.append(
            f"{r['mode']:8}{r['images_per_s']:10.2f}{r['step_time_median_s']:9.3f}"
            f"{r['compile_s']:11.1f}{r['flops_per_step'] / 1e9:12.1f}{100 * r['mfu']:7.1f}%"
            f"{r['peak_memory_bytes'] / 2**20:10.0f}"
            + (f"{timm_ips:12.2f}{r['ratio_vs_timm']:11.2f}" if timm_ips else f"{'n/a':>12}")
        )
    for t in result["timm"]:
        lines.append(f"  timm {t['timm_mode']:8} {t['mode']:5} {t['images_per_s']:8.2f} img/s "
                     f"(first call {t['first_call_s']:.1f} s)")
    if result.get("pipeline"):
        p = result["pipeline"]
        lines.append(f"  input pipeline: {p['images_per_s']:.0f} img/s on {p['cores']} cores "
                     f"({p['images_per_s_per_core']:.0f} per core) at {p['image_size']}²")
    return "\n".join(lines)


@cli.friendly
def main(argv: list[str]) -> None:
    del argv
    cli.setup()
    # Compile times must be compilations, not loads from the persistent cache.
    jax.config.update("jax_enable_compilation_cache", False)
    for mode in _TIMM.value:
        if mode not in ("eager", "compile"):
            raise ValueError(f"--timm takes eager and/or compile, got {mode!r}.")
    result = run(_MODEL.value, _BATCH.value, _SIZE.value, _DTYPE.value, _WIDTH.value,
                 _CONV.value, _REMAT.value, _WARMUP.value, _STEPS.value, tuple(_TIMM.value),
                 _PIPELINE.value, _UNROLL.value)
    out = _OUT.value or os.path.join(
        "bench_results",
        f"{_MODEL.value}_b{_BATCH.value}_s{_SIZE.value}_{_DTYPE.value}_{_CONV.value}"
        f"_u{_UNROLL.value}.json",
    )
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump(result, f, indent=2)
    print(table(result))
    print(f"-> {out}")


if __name__ == "__main__":  # flags exist only when run as a command
    _MODEL = flags.DEFINE_string("model", "inception_resnet_v2", "Our model name.")
    _BATCH = flags.DEFINE_integer("batch", 8, "Global batch size.")
    _SIZE = flags.DEFINE_integer("image_size", 299, "Input size.")
    _DTYPE = flags.DEFINE_enum("dtype", "float32", ("float32", "bfloat16"), "Compute dtype.")
    _WIDTH = flags.DEFINE_float("width", 1.0, "Width multiplier (ours only; timm is full width).")
    _CONV = flags.DEFINE_enum("conv_impl", "auto", ("auto", "xla", "rewrite"), "Our conv lowering.")
    _UNROLL = flags.DEFINE_integer("scan_unroll", 0, "Blocks per stage loop iteration (0 = auto).")
    _REMAT = flags.DEFINE_bool("remat", False, "Rematerialise each block in the backward pass.")
    _WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed steps after compilation.")
    _STEPS = flags.DEFINE_integer("steps", 5, "Timed steps.")
    _TIMM = flags.DEFINE_list("timm", ["eager"], "timm modes: eager, compile; empty: no timm.")
    _PIPELINE = flags.DEFINE_bool("pipeline", False, "Also time the input pipeline.")
    _OUT = flags.DEFINE_string("out", None, "JSON output (default bench_results/<setting>.json).")
    app.run(main)
