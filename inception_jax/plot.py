"""Plot training runs: python -m inception_jax.plot WORKDIR... --out FILE.png.

Three panels against step: train loss, eval top-1 and the pre-pool dead fraction; one line
per run, labelled with the settings that differ between the runs (read from each workdir's
config.json). Runs that differ only in their seed share a colour (one per swept value) and
differ in line style; a cross marks the step where a run died.

`death_map` draws a sweep's runs as a grid (one setting per axis, e.g. residual scale by
learning rate) with each cell's outcome: died at step N, or its final eval top-1.
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


LINE_STYLES = ("-", "--", ":", "-.")


def _seed_and_key(workdirs: list[str]) -> tuple[list[Any], list[str]]:
    """Per run: its seed, and its label without the seed (what its colour stands for)."""
    seeds = []
    for w in workdirs:
        path = os.path.join(w, "config.json")
        seeds.append(json.load(open(path)).get("seed") if os.path.isfile(path) else None)
    keys = [", ".join(p for p in label.split(", ") if not p.startswith("seed="))
            for label in run_labels(workdirs)]
    return seeds, keys


def died_at(workdir: str) -> int | None:
    """The step at which the run died (the monitor stopped it), or None."""
    rows = [r for r in read_metrics(workdir) if "died_at_step" in r]
    return int(rows[-1]["died_at_step"]) if rows else None


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
    seeds, keys = _seed_and_key(workdirs)
    palette = plt.get_cmap("tab10" if len(set(keys)) <= 10 else "tab20").colors
    colour = {k: palette[i % len(palette)] for i, k in enumerate(dict.fromkeys(keys))}
    style = {s: LINE_STYLES[i % len(LINE_STYLES)] for i, s in enumerate(dict.fromkeys(seeds))}
    fig, axes = plt.subplots(1, len(PANELS), figsize=(5 * len(PANELS), 4))
    for i, (workdir, label) in enumerate(zip(workdirs, run_labels(workdirs), strict=True)):
        data, death = curves(workdir), died_at(workdir)
        for ax, (key, _) in zip(axes, PANELS, strict=True):
            if key not in data:
                continue
            steps, values = data[key]
            ax.plot(steps, values, color=colour[keys[i]], linestyle=style[seeds[i]],
                    label=label + (f" (died at {death})" if death else ""),
                    marker="." if len(steps) < 30 else None)
            if death is not None and death in steps:
                ax.plot([death], [values[steps.index(death)]], "x", color=colour[keys[i]],
                        markersize=9, markeredgewidth=2)
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
    _save(fig, out)


def _save(fig: Any, out: str) -> None:
    import matplotlib.pyplot as plt

    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def _setting(config: dict[str, Any], key: str) -> Any:
    """A dotted key of a config.json; a per-stage tuple by its one value."""
    value = flatten_keys(config).get(key)
    if isinstance(value, list) and len(set(value)) == 1:
        return value[0]
    return tuple(value) if isinstance(value, list) else value


def outcomes(workdirs: list[str], x_key: str, y_key: str) -> list[dict[str, Any]]:
    """Per run: its x and y settings, seed, death step (None: survived) and last eval top-1."""
    rows = []
    for w in workdirs:
        config = json.load(open(os.path.join(w, "config.json")))
        evals = [r for r in read_metrics(w) if "eval_top1" in r]
        rows.append({"x": _setting(config, x_key), "y": _setting(config, y_key),
                     "seed": config.get("seed"), "died_at": died_at(w),
                     "eval_top1": evals[-1]["eval_top1"] if evals else None,
                     "eval_step": evals[-1]["step"] if evals else None, "run": w})
    return rows


def _cell_text(row: dict[str, Any]) -> str:
    if row["died_at"] is not None:
        return f"died {row['died_at']}"
    return "-" if row["eval_top1"] is None else f"{100 * row['eval_top1']:.0f}%"


def death_table(rows: list[dict[str, Any]], x_name: str, y_name: str) -> str:
    """The map as a Markdown table: a row per y value, a column per x value, each cell the
    outcome of every seed (died at step N, or the final eval top-1)."""
    xs = sorted({r["x"] for r in rows})
    ys = sorted({r["y"] for r in rows}, reverse=True)
    lines = [f"| {y_name} \\ {x_name} | " + " | ".join(str(x) for x in xs) + " |",
             "|---|" + "---|" * len(xs)]
    for y in ys:
        cells = [" / ".join(_cell_text(r) for r in sorted(
            (r for r in rows if r["x"] == x and r["y"] == y), key=lambda r: r["seed"]))
            for x in xs]
        lines.append(f"| {y} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def death_map(workdirs: list[str], x_key: str, y_key: str, out: str) -> str:
    """Draws the runs as a grid of `x_key` by `y_key` into `out`: colour is the mean final
    eval top-1 of the cell's seeds, a dead seed is written as "died N". Returns the table."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = outcomes(workdirs, x_key, y_key)
    xs, ys = sorted({r["x"] for r in rows}), sorted({r["y"] for r in rows})
    grid = np.full((len(ys), len(xs)), np.nan)
    fig, ax = plt.subplots(figsize=(1.9 * len(xs) + 2, 0.9 * len(ys) + 1.6))
    for i, y in enumerate(ys):
        for j, x in enumerate(xs):
            cell = sorted((r for r in rows if r["x"] == x and r["y"] == y),
                          key=lambda r: r["seed"])
            # A dead run counts as chance: its last eval is before it died.
            tops = [0.0 if r["died_at"] is not None else r["eval_top1"] or 0.0 for r in cell]
            grid[i, j] = np.mean(tops) if tops else np.nan
            ax.text(j, i, "\n".join(_cell_text(r) for r in cell), ha="center", va="center",
                    fontsize=8, color="white" if grid[i, j] < 0.5 else "black")
    image = ax.imshow(grid, cmap="viridis", vmin=0.0, vmax=1.0, origin="lower", aspect="auto")
    ax.set_xticks(range(len(xs)), [str(x) for x in xs])
    ax.set_yticks(range(len(ys)), [str(y) for y in ys])
    x_name, y_name = x_key.split(".")[-1], y_key.split(".")[-1]
    ax.set_xlabel(x_name)
    ax.set_ylabel(y_name)
    ax.set_title("final eval top-1 (mean of seeds; a dead seed counts 0); text: each seed")
    fig.colorbar(image, ax=ax, label="eval top-1")
    fig.tight_layout()
    _save(fig, out)
    return death_table(rows, x_name, y_name)


@cli.friendly
def main(argv: list[str]) -> None:
    workdirs = cli.positional(argv, "python -m inception_jax.plot WORKDIR... --out FILE.png")
    plot_runs(workdirs, _OUT.value)
    print(f"wrote {_OUT.value}")


if __name__ == "__main__":  # flags exist only when run as a command
    _OUT = flags.DEFINE_string("out", "runs.png", "Output image (.png, .pdf, .svg).")
    cli.run(main)
