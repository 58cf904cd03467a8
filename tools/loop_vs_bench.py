"""The training loop's throughput against the bench's, interleaved in one process.

Run:  JAX_PLATFORMS=cpu python -m tools.loop_vs_bench [--rounds=6] [--steps=300]

Each round times the trainer's own jitted step the way `python -m inception_jax.bench` does
(`bench.bench_ours`: median of synchronised steps), then runs `trainer.train_and_evaluate` on
`data.name=synthetic` (no input pipeline) and takes its steady-state images/s from
`metrics.jsonl` (all windows after step 60). Alternating the two a minute apart cancels the
drift of a shared machine's speed, which back-to-back commands cannot. The monitor is off in
even rounds and on in odd ones. Prints one line per round and the median ratio.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
from pathlib import Path

from inception_jax import cli


def steady_images_per_s(workdir: Path, after_step: int = 60) -> float:
    """Images over time of the logged windows after `after_step`."""
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "images_per_s" in r and r["step"] > after_step]
    images = sum(r["images_per_s"] * r["step_time_s"] for r in rows)
    return images / sum(r["step_time_s"] for r in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=300, help="trainer steps per round")
    parser.add_argument("--bench_steps", type=int, default=150)
    args = parser.parse_args()
    cli.setup()
    from configs import inception_resnet_v2
    from inception_jax import bench
    from inception_jax.trainer import train_and_evaluate

    ratios = []
    root = Path(tempfile.mkdtemp(prefix="loop_vs_bench_"))
    for r in range(args.rounds):
        config = bench.bench_config(inception_resnet_v2.get_config("smoke"), 32)
        timed = bench.bench_ours(config, warmup=5, steps=args.bench_steps, peak=1.0)[0]
        config = inception_resnet_v2.get_config("smoke")
        config.data.name = "synthetic"
        config.train.num_steps = args.steps
        config.train.log_every_steps = 20
        config.train.eval_every_steps = 0
        config.train.checkpoint_every_steps = 10 * args.steps
        config.monitor.enabled = r % 2 == 1
        workdir = root / f"round{r}"
        train_and_evaluate(config, str(workdir))
        loop = steady_images_per_s(workdir)
        ratios.append(loop / timed["images_per_s"])
        print(f"round {r}: bench {timed['images_per_s']:.1f} img/s, trainer {loop:.1f} img/s "
              f"(monitor {'on' if config.monitor.enabled else 'off'}), ratio {ratios[-1]:.3f}",
              flush=True)
    shutil.rmtree(root, ignore_errors=True)
    print(f"median trainer/bench ratio over {len(ratios)} rounds: {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
