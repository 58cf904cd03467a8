"""The training command: `python train.py` in a checkout, `python -m inception_jax.train_cli`
anywhere the package is installed (sweeps run this one).

    python -m inception_jax.train_cli --config=configs/NAME.py[:smoke] --workdir=DIR

Rerunning the same command in the same workdir resumes from the newest checkpoint.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow only feeds data here

import jax  # noqa: E402
from absl import flags, logging  # noqa: E402

from inception_jax import cli  # noqa: E402

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The command's flags (defined only by the entry points, not on import)."""
    cli.config_file_flag("Config file.")
    flags.DEFINE_string("workdir", None, "Directory for checkpoints and metrics.")
    flags.DEFINE_bool(
        "distributed", False,
        "Call jax.distributed.initialize() (auto-detects TPU pods and SLURM).",
    )
    flags.DEFINE_string("coordinator_address", None, "host:port of process 0.")
    flags.DEFINE_integer("num_processes", None, "Number of processes.")
    flags.DEFINE_integer("process_id", None, "This process's index.")
    flags.DEFINE_string(
        "cpu_collectives", None,
        "Collectives between CPU processes ('gloo'), for CPU clusters.",
    )
    flags.mark_flags_as_required(["config", "workdir"])


@cli.friendly
def main(argv: list[str]) -> None:
    """Trains (or resumes) the configured run in --workdir."""
    del argv
    cli.setup()
    if FLAGS.cpu_collectives:
        jax.config.update("jax_cpu_collectives_implementation", FLAGS.cpu_collectives)
    if FLAGS.distributed or FLAGS.coordinator_address:
        jax.distributed.initialize(
            coordinator_address=FLAGS.coordinator_address,
            num_processes=FLAGS.num_processes,
            process_id=FLAGS.process_id,
        )
    logging.info(
        "process %d/%d, devices: %s", jax.process_index(), jax.process_count(), jax.devices()
    )

    from inception_jax.checkpoint import ensure_writable
    from inception_jax.trainer import train_and_evaluate

    ensure_writable(FLAGS.workdir, "--workdir")
    train_and_evaluate(FLAGS.config, FLAGS.workdir)


def run() -> None:
    """Defines the flags and runs `main` (both entry points call this)."""
    define_flags()
    # --help lists the main module's flags: train.py's, when it is the one run.
    for flag in FLAGS.get_key_flags_for_module(__name__):
        FLAGS.register_key_flag_for_module(sys.argv[0], flag)
    cli.run(main)


if __name__ == "__main__":
    run()
