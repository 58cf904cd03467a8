"""Sweeps expand to the right runs; plots read the metrics of real runs."""

import json
import subprocess
import sys

import pytest

from inception_jax.plot import _seed_and_key, curves, death_map, died_at, plot_runs, run_labels
from inception_jax.sweep import command, expand, load_sweep
from tests.helpers import ROOT, TINY, TINY_MODEL, run_env


def test_residual_scaling_sweep_expands_to_named_runs():
    runs = expand(load_sweep(str(ROOT / "configs/sweeps/residual_scaling.py:cpu")))
    assert [r.name for r in runs] == [f"residual_scales={s}" for s in (1.0, 0.3, 0.2, 0.1)]
    assert runs[0].overrides["model.residual_scales"] == (1.0, 1.0, 1.0)
    assert runs[0].overrides["model.width"] == 0.6
    args = command(runs[1], "/tmp/sweep")
    # Training runs through the installed package's entry point, not a checkout's train.py.
    assert args[:3] == [sys.executable, "-m", "inception_jax.train_cli"]
    assert "--config.model.residual_scales=(0.3,0.3,0.3)" in args
    assert "--workdir=/tmp/sweep/residual_scales=0.3" in args
    full = expand(load_sweep(str(ROOT / "configs/sweeps/residual_scaling.py")))
    assert len(full) == 4 * 2 * 2 and len({r.name for r in full}) == 16


def test_death_sweep_crosses_fixed_and_learned_scales_with_two_seeds():
    runs = expand(load_sweep(str(ROOT / "configs/sweeps/residual_scaling.py:death")))
    names = [r.name for r in runs]
    assert names == [f"{v},seed={seed}" for v in ("fixed=1.0", "fixed=0.3", "fixed=0.2",
                                                   "fixed=0.1", "scalar=0", "channel=0.1")
                     for seed in (0, 1)]
    for run in runs:  # the regime: five 8x8 blocks of 1,075 filters at lr 0.25, death rule
        assert run.overrides["model.blocks"] == (1, 2, 5) and run.overrides["model.width"] == 0.6
        assert run.overrides["schedule.base_lr"] == 0.25
        assert run.overrides["monitor.dead_threshold"] == 0.99
        assert run.overrides["monitor.on_dead"] == "stop"
    learned = {r.overrides.get("model.residual_mode", "fixed") for r in runs}
    assert learned == {"fixed", "scalar", "channel"}
    rezero = next(r for r in runs if r.name == "scalar=0,seed=0")
    assert rezero.overrides["model.residual_scales"] == (0.0, 0.0, 0.0)
    shallow = expand(load_sweep(str(ROOT / "configs/sweeps/residual_scaling.py:death_shallow")))
    assert len(shallow) == 14 and shallow[0].overrides["model.blocks"] == (1, 2, 1)
    assert shallow[0].overrides["schedule.base_lr"] == 0.45


def test_variants_cross_the_axes():
    runs = expand(load_sweep(str(ROOT / "configs/sweeps/residual_vs_plain.py:cpu")))
    assert [r.name for r in runs] == ["inception_resnet_v1,seed=0", "inception_resnet_v1,seed=1",
                                      "inception_v3,seed=0", "inception_v3,seed=1"]
    assert runs[0].overrides["model.blocks"] == (5, 10, 5)
    assert "model.blocks" not in runs[2].overrides and runs[2].config.endswith("v3.py:smoke")
    with pytest.raises(ValueError, match="unknown sweep variant"):
        load_sweep(str(ROOT / "configs/sweeps/residual_vs_plain.py:gpu"))
    with pytest.raises(ValueError, match="nothing to vary"):
        expand({"config": "x"})


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    """One command runs a two-run sweep (the smallest crop area of the training augmentation,
    0.08 and 0.5, on the tiny network; 4 steps, evaluations at 2 and 4) in training
    subprocesses: the sweep test checks the command, the plot test reads the runs' metrics. A
    data knob, not residual scales (the tiny network has no residual block) nor seeds (compiled
    into the steps): both runs train with one compiled program, the second from the cache."""
    tmp = tmp_path_factory.mktemp("sweep")
    fixed = {**TINY, "data.data_dir": str(tmp / "tfds"), "train.num_steps": 4,
             "train.eval_every_steps": 2, "monitor.enabled": True}
    sweep = tmp / "tiny_sweep.py"
    sweep.write_text(
        "def get_sweep(arg=None):\n"
        f"    return {{'config': 'configs/{TINY_MODEL}.py:smoke', 'fixed': {fixed!r},\n"
        "            'axes': {'data.min_crop_area': [0.08, 0.5]}}\n"
    )
    out = subprocess.run(
        [sys.executable, "-m", "inception_jax.sweep", f"--sweep={sweep}",
         f"--workdir={tmp / 'sweep'}"],
        env=run_env(), capture_output=True, text=True, cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return tmp / "sweep"


@pytest.mark.slow
def test_one_command_runs_a_sweep_and_plots_it(sweep_dir):
    summary = json.loads((sweep_dir / "sweep.json").read_text())
    assert [r["exit_code"] for r in summary["runs"]] == [0, 0]
    assert [r["run"] for r in summary["runs"]] == ["min_crop_area=0.08", "min_crop_area=0.5"]
    assert (sweep_dir / "min_crop_area=0.5" / "metrics.jsonl").exists()
    assert (sweep_dir / "sweep.png").stat().st_size > 10_000


@pytest.mark.slow
def test_plot_reads_the_metrics_of_real_runs(sweep_dir, tmp_path):
    runs = [str(sweep_dir / f"min_crop_area={a}") for a in (0.08, 0.5)]
    data = curves(runs[0])
    assert data["loss"][0] == [2, 4] and data["eval_top1"][0] == [2, 4]
    assert data["dead/prepool_zero_frac"][0] == [2, 4]
    assert all(0.0 <= v <= 1.0 for v in data["dead/prepool_zero_frac"][1])
    assert run_labels(runs) == ["min_crop_area=0.08", "min_crop_area=0.5"]
    out = tmp_path / "plot.png"
    plot_runs(runs, str(out))
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    with pytest.raises(FileNotFoundError, match="No metrics.jsonl"):
        plot_runs([str(tmp_path)], str(out))


def test_run_labels_name_what_differs_and_show_lists_as_tuples(tmp_path):
    # config.json as the trainer writes it: JSON lists where the config held tuples.
    runs = []
    for scale in (1.0, 0.1):
        run = tmp_path / f"residual_scales={scale}"
        run.mkdir()
        (run / "config.json").write_text(json.dumps({
            "seed": 0, "model": {"name": "inception_resnet_v2", "residual_scales": [scale] * 3},
            "data": {"data_dir": str(run)}}))
        runs.append(str(run))
    assert run_labels(runs) == ["residual_scales=(1.0, 1.0, 1.0)",
                                "residual_scales=(0.1, 0.1, 0.1)"]


def fake_run(root, name, scale, rate, seed, died=None, top1=None):
    """A run folder with the config.json and metrics.jsonl a finished run leaves."""
    run = root / name
    run.mkdir(parents=True)
    config = {"seed": seed, "model": {"residual_scales": [scale] * 3},
              "schedule": {"base_lr": rate}}
    (run / "config.json").write_text(json.dumps(config))
    rows = [{"step": 10, "loss": 2.0, "dead/prepool_zero_frac": 0.5},
            {"step": 100, "eval_top1": 0.1, "eval_top5": 0.5}]
    if died:
        rows.append({"step": died, "loss": 2.3, "died_at_step": float(died)})
    if top1 is not None:
        rows.append({"step": 400, "eval_top1": top1, "eval_top5": 0.9})
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(run)


def test_the_death_map_shows_each_cell_died_or_its_final_eval(tmp_path):
    runs = [fake_run(tmp_path, "a", 1.0, 0.25, 0, died=260),
            fake_run(tmp_path, "b", 1.0, 0.25, 1, died=270),
            fake_run(tmp_path, "c", 0.1, 0.25, 0, top1=0.8),
            fake_run(tmp_path, "d", 0.1, 0.25, 1, top1=0.9),
            fake_run(tmp_path, "e", 1.0, 0.125, 0, top1=0.5),
            fake_run(tmp_path, "f", 1.0, 0.125, 1, died=300),
            fake_run(tmp_path, "g", 0.1, 0.125, 0, top1=0.7),
            fake_run(tmp_path, "h", 0.1, 0.125, 1, top1=0.75)]
    table = death_map(runs, "schedule.base_lr", "model.residual_scales",
                      str(tmp_path / "map.png"))
    assert table.splitlines() == [
        "| residual_scales \\ base_lr | 0.125 | 0.25 |",
        "|---|---|---|",
        "| 1.0 | 50% / died 300 | died 260 / died 270 |",
        "| 0.1 | 70% / 75% | 80% / 90% |",
    ]
    assert (tmp_path / "map.png").stat().st_size > 10_000
    # The curves: one colour per setting, one line style per seed, deaths named.
    seeds, keys = _seed_and_key(runs[:4])
    assert seeds == [0, 1, 0, 1]
    assert keys[0] == keys[1] != keys[2] == keys[3]
    plot_runs(runs, str(tmp_path / "curves.png"))
    assert died_at(runs[0]) == 260 and died_at(runs[2]) is None
