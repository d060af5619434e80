"""The learning benchmark (benchmarks/learning.py) end to end on its tiny setting: every result it promises, and
clear errors for bad input."""

import json
import subprocess
import sys

import matplotlib.image
import numpy as np
import pytest

from benchmarks import learning
from conftest import REPO, run_main


def _bench(*args):
    return subprocess.run([sys.executable, "-m", "benchmarks.learning", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=1200)


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    root = tmp_path_factory.mktemp("learning")
    # VTA's max_seg_len 6: the models of test_eval_boundaries' runs, so they share their programs through the compile
    # cache.
    done = _bench("--setting", "tiny", "--logroot", root / "runs", "--out", root / "out", "--set", "vta_max_seg_len=6")
    assert done.returncode == 0, done.stderr[-3000:]
    return root, done.stdout, json.loads((root / "out" / "learning.json").read_text())


def test_results_hold_baselines_runs_and_curves(result):
    root, stdout, data = result
    assert data["task"] == "pinpad_three" and data["setting"] == "tiny" and data["episode_length"] == 50
    assert data["scripted_return"] > data["random_return"] >= 0
    assert data["target_return"] == 10 * data["random_return"]
    assert [(r["dynamics"], r["seed"]) for r in data["runs"]] == [("rssm", 0), ("vta", 0)]
    for run in data["runs"]:
        assert [step for step, _ in run["curve"]] == [64, 128] and run["final_step"] == 128
        reached = [step for step, value in run["curve"] if value >= data["target_return"]]
        assert run["first_target_step"] == (reached[0] if reached else None)
        assert set(run["tracking"]) == {"posterior", "imagined"} and list(run["tracking"]["imagined"]) == [
            "1", "5", "15", "45"]
        assert all(0 <= v <= 1 for v in [run["tracking"]["posterior"], *run["tracking"]["imagined"].values()])
        assert all(np.isfinite(value) for _, value in run["curve"]) and np.isfinite(run["final_eval_return"])
        assert run["logdir"] == str(root / "runs" / f"pinpad_three_{run['dynamics']}_seed0")
    assert set(data["summary"]) == {"rssm", "vta"} and data["summary"]["rssm"]["seeds"] == 1
    assert data["settings"]["vta"]["dynamics"] == "vta" and data["settings"]["rssm"]["steps"] == 128
    assert data["wall_s"] > 0 and data["machine"]["backend"] == "cpu" and data["versions"]["jax"]
    assert all(data["summary"][d]["train_s"] > 0 for d in ("rssm", "vta"))
    assert "rssm: final eval return" in stdout and "vta: final eval return" in stdout


def test_figures_and_open_loop_predictions(result):
    root, _, data = result
    for name in ("learning_curves.png", "learning_diagnostics.png", "learning_tracking.png", "openloop_rssm.png",
                 "openloop_vta.png"):
        assert matplotlib.image.imread(root / "out" / name).ndim == 3, name
    for dynamics in ("rssm", "vta"):
        openloop = data["openloop"][dynamics]
        assert openloop["context"] == 5 and len(openloop["mse_per_step"]) == 45 and openloop["step"] == 128
        assert all(0 <= e < 1 for e in openloop["mse_per_step"])
        # The run's own file and the summary agree; what the prediction sees and when is tested on the model
        # itself (test_world_model.py: test_open_loop_sees_only_the_context_and_imagines_from_the_recorded_actions).
        saved = json.loads((root / "out" / f"openloop_{dynamics}.json").read_text())
        assert saved["mse_per_step"] == openloop["mse_per_step"] and saved["dynamics"] == dynamics
        assert set(saved["tracking"]["imagined"]) == {"1", "5", "15", "45"}
    assert data["openloop"]["rssm"]["imagined_reads"] == 0


@pytest.mark.parametrize("args, message", [
    (["--seeds", "0"], "--seeds 0 must be at least 1"),
    (["--set", "logdir=/tmp/x"], "--logdir is set by the benchmark itself"),
    (["--set", "batch_size=0"], "invalid --batch_size=0"),
    (["--set", "vta_value_mix=0.5"], "--vta_value_mix is set by the benchmark itself"),
])
def test_bad_input_is_one_clear_error(tmp_path, capsys, args, message):
    code, _, err = run_main(learning.main, ["--setting", "tiny", "--logroot", tmp_path / "runs", "--out",
                                            tmp_path / "out", *args], capsys)
    assert code == 2 and message in err, err
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("firsts, median", [
    ([3000, 1000, 2000], 2000.0), ([1000, None, 2000], 2000.0), ([1000, None, None], None), ([1000, 3000], 2000.0),
    ([1000, None], None), ([None], None)])
def test_median_first_step_counts_a_seed_that_never_reached_the_target_as_latest(firsts, median):

    assert learning.median_first(firsts) == median


def test_variants_and_tasks_name_their_runs_and_results(tmp_path):
    hier = learning.setting_config("tiny", "vta_hier", 2, tmp_path, [], "pinpad_four")
    assert (hier.dynamics, hier.vta_value_mix, hier.task, hier.num_seeds) == ("vta", 0.9, "pinpad_four", 2)
    assert hier.logdir == str(tmp_path / "pinpad_four_vta_hier_seed{seed}")
    flat = learning.setting_config("tiny", "vta", 1, tmp_path, [])
    assert (flat.vta_value_mix, flat.task) == (1.0, learning.TASK)
    assert learning.results_stem("learning", "pinpad_four") == "learning_pinpad_four"
    assert learning.results_stem("openloop_vta_hier", learning.TASK) == "openloop_vta_hier"
