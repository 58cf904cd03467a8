"""Metric writers: TensorBoard + console (clu) and a JSONL file in the workdir."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from clu import metric_writers


class JsonlWriter(metric_writers.MetricWriter):
    """Appends one JSON object per `write_scalars` call: {"step": ..., name: value, ...}."""

    def __init__(self, path: str):
        self.path = path
        os.makedirs(os.path.dirname(path), exist_ok=True)

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        row = {"step": int(step), **{k: float(np.asarray(v)) for k, v in scalars.items()}}
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")

    def write_summaries(self, step, values, metadata=None):  # noqa: D102 - not used
        pass

    def write_images(self, step, images):  # noqa: D102
        pass

    def write_videos(self, step, videos):  # noqa: D102
        pass

    def write_audios(self, step, audios, *, sample_rate):  # noqa: D102
        pass

    def write_texts(self, step, texts):  # noqa: D102
        pass

    def write_histograms(self, step, arrays, num_buckets=None):  # noqa: D102
        pass

    def write_hparams(self, hparams):  # noqa: D102
        pass

    def flush(self) -> None:  # noqa: D102
        pass

    def close(self) -> None:  # noqa: D102
        pass


def create_writer(workdir: str) -> metric_writers.MetricWriter:
    """TensorBoard + console + `workdir/metrics.jsonl` on process 0; nothing on the others."""
    if jax.process_index() > 0:
        return metric_writers.MultiWriter([])
    tensorboard = metric_writers.create_default_writer(workdir, asynchronous=False)
    return metric_writers.MultiWriter(
        [tensorboard, JsonlWriter(os.path.join(workdir, "metrics.jsonl"))]
    )


def read_metrics(workdir: str) -> list[dict[str, float]]:
    """The rows of `workdir/metrics.jsonl`."""
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]
