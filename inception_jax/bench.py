"""Benchmark our train step and eval forward against timm's and Keras' same network.

    python -m inception_jax.bench --config=configs/inception_resnet_v2.py --batch=8 \\
        [--config.model.dtype=bfloat16] [--config.data.image_size=299] \\
        [--timm=eager,compile] [--nokeras] [--pipeline] [--out=bench/irv2.json]

The network, input size and model knobs come from `--config` (a config file, as for
`train.py`; override with `--config.model.*`); `--batch` is the global batch every
contender runs. For our network it times the trainer's own jitted, sharded step
(`trainer.create_setup` on synthetic device-resident data) and the eval forward: images/s
(median over the timed steps after warm-up, each synchronised), compile time, FLOPs per step
from XLA's cost analysis, peak device memory, and MFU against the device's peak (a table for
GPUs and TPUs; on CPU a peak measured here by a large matmul).

Peers, for Inception-v3/v4/IR-v2 at width 1: timm's model runs the same batch (forward,
cross-entropy, backward, RMSProp step) eagerly and optionally under `torch.compile`,
channels-last, with bf16 autocast on CUDA. Keras 3's `keras.applications` model
(v3, IR-v2) runs on the JAX backend, so on the same XLA we use: `train_on_batch` with RMSprop
and `predict_on_batch`, compiled with `jit_compile=True`, on one device. The table gives ours /
timm's best and ours / Keras. `--pipeline` also measures the input pipeline (JPEG decode +
Inception augmentation) per host and per core.
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
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
from absl import flags  # noqa: E402

from inception_jax import cli  # noqa: E402
from inception_jax.errors import UserError  # noqa: E402

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
KERAS_APPS = {"inception_v3": "InceptionV3", "inception_resnet_v2": "InceptionResNetV2"}


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


def bench_config(config: ml_collections.ConfigDict, batch: int) -> ml_collections.ConfigDict:
    """A copy of `config` whose train and eval batches are `batch` (unlocked)."""
    config = ml_collections.ConfigDict(config.to_dict())
    config.train.global_batch_size = config.train.eval_batch_size = batch
    return config


def bench_ours(config: ml_collections.ConfigDict, warmup: int, steps: int,
               peak: float) -> list[dict[str, Any]]:
    """Train step and eval forward of the configured network, as the trainer builds them."""
    from inception_jax.data.pipeline import DatasetInfo
    from inception_jax.trainer import create_setup

    batch, size = config.train.global_batch_size, config.data.image_size
    num_classes = config.model.num_classes
    info = DatasetInfo(1_281_167, 50_000, num_classes, size)
    setup = create_setup(config, info=info)
    rng = np.random.default_rng(0)
    host = {"image": rng.uniform(-1, 1, (batch, size, size, 3)).astype(np.float32),
            "label": rng.integers(0, num_classes, batch).astype(np.int32),
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


def bench_timm(model: str, batch: int, size: int, num_classes: int, dtype: str,
               modes: list[str], warmup: int, steps: int) -> list[dict[str, Any]]:
    """timm's model: train step (fwd, CE, bwd, RMSProp) and eval forward per mode."""
    if torch is None or model not in TIMM_NAMES or jax.default_backend() == "tpu":
        return []  # on a TPU host timm would run on the CPU: no comparison
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch.set_num_threads(cores or 1)
    return [r for mode in modes for r in _bench_timm_mode(model, batch, size, num_classes,
                                                          dtype, mode, warmup, steps)]


def _bench_timm_mode(model: str, batch: int, size: int, num_classes: int, dtype: str,
                     mode: str, warmup: int, steps: int) -> list[dict[str, Any]]:
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    net = timm.create_model(model, pretrained=False, num_classes=num_classes).to(device)
    net = net.to(memory_format=torch.channels_last)
    optimizer = torch.optim.RMSprop(net.parameters(), lr=0.045, alpha=0.9, eps=1.0, momentum=0.9)
    x = torch.randn(batch, 3, size, size, device=device).to(memory_format=torch.channels_last)
    y = torch.randint(0, num_classes, (batch,), device=device)
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


def keras_backend() -> str | None:
    """The backend Keras runs on in this process (None: Keras is not installed).

    Keras reads KERAS_BACKEND once, when first imported: the command sets "jax" before that;
    a process that imported Keras with another backend gets no Keras comparison.
    """
    try:
        import keras
    except ImportError:
        return None
    return keras.backend.backend()


def bench_keras(model: str, batch: int, size: int, num_classes: int, dtype: str, warmup: int,
                steps: int) -> list[dict[str, Any]]:
    """Keras' application model on the JAX backend: `train_on_batch` (RMSprop, the paper's
    settings) and `predict_on_batch`, each compiled by XLA (`jit_compile=True`)."""
    if model not in KERAS_APPS or keras_backend() != "jax":
        return []
    import keras

    previous_policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16" if dtype == "bfloat16" else "float32")
    # Keras draws each weight shape with its own jitted random op; JAX's original threefry
    # compiles those about twice as fast as the partitionable default. The weights are
    # arbitrary here.
    with jax.threefry_partitionable(False):
        net = getattr(keras.applications, KERAS_APPS[model])(
            weights=None, classifier_activation=None, input_shape=(size, size, 3),
            classes=num_classes,
        )
    net.compile(
        optimizer=keras.optimizers.RMSprop(0.045, rho=0.9, momentum=0.9, epsilon=1.0),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=True,
    )
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (batch, size, size, 3)).astype(np.float32)
    y = rng.integers(0, num_classes, batch).astype(np.int32)
    results = []
    # Both return host values (a float, a numpy array): every call is synchronised.
    for kind, once in (("train", lambda: net.train_on_batch(x, y)),
                       ("eval", lambda: net.predict_on_batch(x))):
        start = time.perf_counter()
        once()  # traces and compiles
        first_s = time.perf_counter() - start
        times = _time(once, warmup, steps)
        median = statistics.median(times)
        results.append({"mode": kind, "images_per_s": batch / median,
                        "step_time_median_s": median, "step_times_s": times,
                        "first_call_s": first_s, "compile_s": max(0.0, first_s - median)})
    keras.config.set_dtype_policy(previous_policy)
    return results


def bench_pipeline(size: int, num_images: int = 256) -> dict[str, Any]:
    """JPEG decode + Inception training augmentation throughput of one host (tf.data), through
    the training pipeline's own path (`pipeline.decode_and_augment`: only the crop is
    decoded)."""
    import tensorflow as tf

    from inception_jax.data.pipeline import decode_and_augment

    rng = np.random.default_rng(0)
    jpegs = [tf.io.encode_jpeg(rng.integers(0, 255, (375, 500, 3), np.uint8)).numpy()
             for _ in range(16)]
    ds = tf.data.Dataset.from_tensor_slices(jpegs).repeat(num_images // 16).enumerate()

    def augment(i, jpeg):
        image, _ = decode_and_augment(jpeg, size, tf.stack([tf.constant(0, tf.int64), i]),
                                      "fast")
        return image

    ds = ds.map(augment, num_parallel_calls=tf.data.AUTOTUNE).batch(32).prefetch(2)
    for _ in ds.take(1):
        pass
    start = time.perf_counter()
    count = sum(int(b.shape[0]) for b in ds)
    seconds = time.perf_counter() - start
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"images_per_s": count / seconds, "cores": cores,
            "images_per_s_per_core": count / seconds / cores, "image_size": size,
            "source": "500x375 JPEGs, decode of the distorted crop + resize + flip + colour "
                      "distortion (slim's fast mode)"}


def _compare(ours: list[dict[str, Any]], theirs: list[dict[str, Any]], peer: str) -> None:
    """Adds `<peer>_images_per_s` and `ratio_vs_<peer>` (ours / their best) to our results."""
    for r in ours:
        best = max((t for t in theirs if t["mode"] == r["mode"]),
                   key=lambda t: t["images_per_s"], default=None)
        if best is not None:
            if "timm_mode" in best:
                r["timm_best_mode"] = best["timm_mode"]
            r[f"{peer}_images_per_s"] = best["images_per_s"]
            r[f"ratio_vs_{peer}"] = r["images_per_s"] / best["images_per_s"]
            if "compile_s" in best:
                r[f"{peer}_compile_s"] = best["compile_s"]


def _is_peers_network(model: ml_collections.ConfigDict) -> bool:
    """Whether timm/Keras build the same network: they have no width or depth knob."""
    return model.width == 1.0 and model.get("blocks") is None


def run(config: ml_collections.ConfigDict, batch: int, warmup: int = 2, steps: int = 5,
        timm_modes: tuple[str, ...] = ("eager",), keras: bool = True,
        pipeline: bool = False) -> dict[str, Any]:
    """Every measurement of one setting, as the JSON the CLI writes."""
    config = bench_config(config, batch)
    m, size = config.model, config.data.image_size
    peak, peak_source = device_peak(m.dtype)
    device = jax.devices()[0]
    ours = bench_ours(config, warmup, steps, peak)
    peers = {"timm": [], "keras": []}
    if _is_peers_network(m):
        peers["timm"] = bench_timm(m.name, batch, size, m.num_classes, m.dtype,
                                   list(timm_modes), warmup, steps)
        if keras:
            peers["keras"] = bench_keras(m.name, batch, size, m.num_classes, m.dtype, warmup,
                                         steps)
    for peer, theirs in peers.items():
        _compare(ours, theirs, peer)
    return {
        "model": m.name, "batch": batch, "image_size": size, "dtype": m.dtype,
        "width": m.width, "conv_impl": m.conv_impl, "scan_unroll": m.scan_unroll,
        "remat": m.remat, "aux_head": m.get("aux_head"),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "backend": jax.default_backend(),
        "device_kind": device.device_kind, "device_count": jax.device_count(),
        "peak_flops_per_s": peak, "peak_source": peak_source,
        "ours": ours, **peers, "keras_backend": keras_backend() if keras else None,
        "pipeline": bench_pipeline(size) if pipeline else None,
        "versions": {"jax": jax.__version__, "torch": getattr(torch, "__version__", None),
                     "timm": getattr(timm, "__version__", None), "keras": _keras_version()},
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def _keras_version() -> str | None:
    from importlib import metadata

    try:
        return metadata.version("keras")
    except metadata.PackageNotFoundError:
        return None


def table(result: dict[str, Any]) -> str:
    """The console table of one `run` result."""
    head = (f"{result['model']} batch {result['batch']} at {result['image_size']}² "
            f"{result['dtype']} on {result['device_count']}× {result['device_kind']} "
            f"(peak {result['peak_flops_per_s'] / 1e12:.2f} TFLOP/s in all, "
            f"{result['peak_source']})")
    lines = [head, f"{'':8}{'img/s':>10}{'step s':>9}{'compile s':>11}{'GFLOP/step':>12}"
             f"{'MFU':>8}{'peak MiB':>10}{'timm img/s':>12}{'ours/timm':>11}"
             f"{'keras img/s':>13}{'ours/keras':>12}"]

    def peer(r: dict[str, Any], name: str) -> str:
        ips = r.get(f"{name}_images_per_s")
        width = 12 if name == "timm" else 13
        if not ips:
            return f"{'n/a':>{width}}{'':>{width - 1}}"
        return f"{ips:{width}.2f}{r[f'ratio_vs_{name}']:{width - 1}.2f}"

    for r in result["ours"]:
        lines.append(
            f"{r['mode']:8}{r['images_per_s']:10.2f}{r['step_time_median_s']:9.3f}"
            f"{r['compile_s']:11.1f}{r['flops_per_step'] / 1e9:12.1f}{100 * r['mfu']:7.1f}%"
            f"{r['peak_memory_bytes'] / 2**20:10.0f}" + peer(r, "timm") + peer(r, "keras")
        )
    for t in result["timm"]:
        lines.append(f"  timm {t['timm_mode']:8} {t['mode']:5} {t['images_per_s']:8.2f} img/s "
                     f"(first call {t['first_call_s']:.1f} s)")
    for k in result["keras"]:
        lines.append(f"  keras (jax) {k['mode']:5} {k['images_per_s']:8.2f} img/s "
                     f"(first call {k['first_call_s']:.1f} s, compile ~{k['compile_s']:.1f} s)")
    if result.get("pipeline"):
        p = result["pipeline"]
        lines.append(f"  input pipeline: {p['images_per_s']:.0f} img/s on {p['cores']} cores "
                     f"({p['images_per_s_per_core']:.0f} per core) at {p['image_size']}²")
    return "\n".join(lines)


@cli.friendly
def main(argv: list[str]) -> None:
    del argv
    cli.setup()
    # Compile times must be compilations, not loads from the persistent cache (unless asked).
    jax.config.update("jax_enable_compilation_cache", _COMPILE_CACHE.value)
    for mode in _TIMM.value:
        if mode not in ("eager", "compile"):
            raise UserError(f"--timm takes eager and/or compile, got {mode!r}.")
    config = _CONFIG.value
    result = run(config, _BATCH.value, _WARMUP.value, _STEPS.value, tuple(_TIMM.value),
                 _KERAS.value, _PIPELINE.value)
    m = config.model
    out = _OUT.value or os.path.join(
        "bench_results",
        f"{m.name}_b{_BATCH.value}_s{config.data.image_size}_{m.dtype}_{m.conv_impl}"
        f"_u{m.scan_unroll}.json",
    )
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump(result, f, indent=2)
    print(table(result))
    print(f"-> {out}")


if __name__ == "__main__":  # flags exist only when run as a command
    # The Keras peer runs on JAX: Keras reads its backend once, at its first import.
    os.environ["KERAS_BACKEND"] = "jax"
    _CONFIG = cli.config_file_flag("Config file of the network (as train.py's).")
    _BATCH = flags.DEFINE_integer("batch", 8, "Global batch size of every contender.")
    _WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed steps after compilation.")
    _STEPS = flags.DEFINE_integer("steps", 5, "Timed steps.")
    _TIMM = flags.DEFINE_list("timm", ["eager"], "timm modes: eager, compile; empty: no timm.")
    _KERAS = flags.DEFINE_bool("keras", True, "Compare with Keras on the JAX backend.")
    _PIPELINE = flags.DEFINE_bool("pipeline", False, "Also time the input pipeline.")
    _COMPILE_CACHE = flags.DEFINE_bool(
        "compile_cache", False, "Load compilations from JAX's persistent cache (compile_s then "
        "times the load): for repeated smoke runs, not for compile-time figures.")
    _OUT = flags.DEFINE_string("out", None, "JSON output (default bench_results/<setting>.json).")
    flags.mark_flags_as_required(["config"])
    cli.run(main)
