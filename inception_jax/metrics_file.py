"""A run's metrics file, `WORKDIR/metrics.jsonl`: one JSON object per write, {"step": ...,
name: value, ...}. Apart from the writers (`metrics.py`, whose TensorBoard writer imports
TensorFlow) so that `plot` and `sweep` read runs without TensorFlow's import."""

from __future__ import annotations

import json
import os

from inception_jax.errors import UserError

METRICS_FILE = "metrics.jsonl"


class MetricsNotFoundError(UserError, FileNotFoundError):
    """A directory named as a training workdir has no `metrics.jsonl`."""


def metrics_path(workdir: str) -> str:
    """Where the run in `workdir` writes its metrics."""
    return os.path.join(workdir, METRICS_FILE)


def read_metrics(workdir: str) -> list[dict[str, float]]:
    """The rows of `workdir/metrics.jsonl`."""
    with open(metrics_path(workdir)) as f:
        return [json.loads(line) for line in f if line.strip()]
