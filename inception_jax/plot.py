"""Plot training runs: python -m inception_jax.plot WORKDIR... --out FILE.png.

Three panels against step: train loss, eval top-1 and the pre-pool dead fraction; one line
per run, labelled with the settings that differ between the runs (read from each workdir's
config.json).
"""

from __future__ import annotations

import json
import os
from typing import Any

from absl import flags

from inception_jax import cli
from inception_jax.metrics_file import (
    METRICS_FILE,
    MetricsNotFoundError,
    metrics_path,
    read_metrics,
)
from inception_jax.nested import flatten_keys

PANELS = (("loss", "train loss"), ("eval_top1", "eval top-1"),
          ("dead/prepool_zero_frac", "pre-pool zero fraction"))


def _hashable(flat: dict[str, Any]) -> dict[str, Any]:
    """JSON lists as tuples, so that values can be compared and collected in sets."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in flat.items()}


def run_labels(workdirs: list[str]) -> list[str]:
    """Per run: "key=value, ..." of the config values that differ between the runs."""
    configs = []
    for w in workdirs:
        path = os.path.join(w, "config.json")
        configs.append(_hashable(flatten_keys(json.load(open(path))))
                       if os.path.isfile(path) else {})
    # Knobs one network has and another lacks (blocks, residual_scales) are implied by the
    # model name, so only keys every run has are compared.
    keys = sorted(set.intersection(*(set(c) for c in configs))) if configs else []
    differ = [k for k in keys if len({repr(c[k]) for c in configs}) > 1
              and not k.startswith(("train.init_weights", "data.data_dir"))]
    labels = []
    for w, c in zip(workdirs, configs, strict=True):
        parts = [f"{k.split('.')[-1] if k != 'model.name' else 'model'}={c.get(k)}"
                 for k in differ]
        labels.append(", ".join(parts) or os.path.basename(os.path.normpath(w)))
    return labels


def curves(workdir: str) -> dict[str, tuple[list[int], list[float]]]:
    """metric → (steps, values) for every panel's metric the run logged."""
    out = {}
    for key, _ in PANELS:
        rows = [(r["step"], r[key]) for r in read_metrics(workdir) if key in r]
        if rows:
            out[key] = ([s for s, _ in rows], [v for _, v in rows])
    return out


def plot_runs(workdirs: list[str], out: str) -> None:
    """Draws the panels for `workdirs` into `out`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    missing = [w for w in workdirs if not os.path.isfile(metrics_path(w))]
    if missing:
        raise MetricsNotFoundError(
            f"No {METRICS_FILE} in {', '.join(missing)}: pass training workdirs "
            "(train.py --workdir)."
        )
    fig, axes = plt.subplots(1, len(PANELS), figsize=(5 * len(PANELS), 4))
    for workdir, label in zip(workdirs, run_labels(workdirs), strict=True):
        data = curves(workdir)
        for ax, (key, _) in zip(axes, PANELS, strict=True):
            if key in data:
                ax.plot(*data[key], label=label, marker="." if len(data[key][0]) < 30 else None)
    for ax, (_, title) in zip(axes, PANELS, strict=True):
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[-1].set_ylim(-0.02, 1.02)
    handles, labels = axes[0].get_legend_handles_labels()
    ncol = min(4, len(labels)) if max(map(len, labels), default=0) < 40 else 2
    fig.legend(handles, labels, loc="lower center", ncol=ncol, fontsize=8,
               bbox_to_anchor=(0.5, 0.0))
    rows = -(-len(labels) // ncol)
    fig.tight_layout(rect=(0, 0.05 + 0.05 * rows, 1, 1))
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


@cli.friendly
def main(argv: list[str]) -> None:
    workdirs = cli.positional(argv, "python -m inception_jax.plot WORKDIR... --out FILE.png")
    plot_runs(workdirs, _OUT.value)
    print(f"wrote {_OUT.value}")


if __name__ == "__main__":  # flags exist only when run as a command
    _OUT = flags.DEFINE_string("out", "runs.png", "Output image (.png, .pdf, .svg).")
    cli.run(main)
