"""Metric writers: TensorBoard (clu), the JSONL file `metrics_file.py` names and reads, and a
short console line."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from clu import metric_writers
from tqdm.auto import tqdm

from inception_jax.metrics_file import metrics_path


class _ScalarWriter(metric_writers.MetricWriter):
    """A writer of scalars only: every other kind of summary is dropped."""

    def write_summaries(self, step, values, metadata=None):
        pass

    def write_images(self, step, images):
        pass

    def write_videos(self, step, videos):
        pass

    def write_audios(self, step, audios, *, sample_rate):
        pass

    def write_texts(self, step, texts):
        pass

    def write_histograms(self, step, arrays, num_buckets=None):
        pass

    def write_hparams(self, hparams):
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class JsonlWriter(_ScalarWriter):
    """Appends one JSON object per `write_scalars` call: {"step": ..., name: value, ...}."""

    def __init__(self, path: str):
        self.path = path
        os.makedirs(os.path.dirname(path), exist_ok=True)

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        row = {"step": int(step), **{k: float(np.asarray(v)) for k, v in scalars.items()}}
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")


class ConsoleWriter(_ScalarWriter):
    """Prints the chosen scalars of each write as one line above the progress bar.

    Every scalar still goes to TensorBoard and metrics.jsonl; the console gets the few a
    person watches (`train.console_metrics`), so a line fits a terminal.
    """

    def __init__(self, keys: Sequence[str]):
        self.keys = tuple(keys)

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        shown = [f"{k}={_short(float(np.asarray(scalars[k])))}" for k in self.keys if k in scalars]
        if shown:
            tqdm.write(f"[{int(step)}] " + " ".join(shown))


def _short(value: float) -> str:
    return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.3e}"


def create_writer(workdir: str, console_metrics: Sequence[str]) -> metric_writers.MetricWriter:
    """TensorBoard + `workdir/metrics.jsonl` + a console line on process 0; nothing elsewhere."""
    if jax.process_index() > 0:
        return metric_writers.MultiWriter([])
    return metric_writers.MultiWriter([
        metric_writers.SummaryWriter(workdir),
        JsonlWriter(metrics_path(workdir)),
        ConsoleWriter(console_metrics),
    ])
