"""Learning curves (dreamer_jax/curves.py, `python -m experiments.plot`) on hand-written metrics logs: grouping
seeds into conditions, the mean and its bootstrap interval, the time axis, and clear errors."""

import json
import subprocess
import sys

import matplotlib.image
import numpy as np
import pytest

from conftest import REPO, run_main
from dreamer_jax import curves
from experiments import plot


def _write(logdir, lines):
    logdir.mkdir(parents=True)
    (logdir / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))


def _run(seed, steps=(100, 200, 300), rate=50.0):
    return [{"step": s, "updates": s // 10, "env_steps_per_s": rate, "eval_return": float(seed + s / 100),
             "loss_rec": 10.0 - s / 100} for s in steps]


@pytest.fixture
def root(tmp_path):
    for seed in range(3):
        _write(tmp_path / f"pinpad_three_rssm_seed{seed}", _run(seed))
    for seed in range(2):
        _write(tmp_path / "nested" / f"pinpad_three_vta_seed{seed}", _run(10 * seed, steps=(100, 200)))
    return tmp_path


def test_runs_group_by_name_without_the_seed(root):
    groups = curves.find_runs(root)
    assert list(groups) == ["pinpad_three_rssm", "pinpad_three_vta"]
    assert [p.name for p in groups["pinpad_three_rssm"]] == [f"pinpad_three_rssm_seed{s}" for s in range(3)]


def test_mean_and_interval_over_seeds(root):
    runs = [curves.read_metrics(d) for d in curves.find_runs(root)["pinpad_three_rssm"]]
    xs, mean, low, high, n = curves.aggregate(runs, "eval_return")
    np.testing.assert_array_equal(xs, [100, 200, 300])
    values = np.array([[seed + s / 100 for s in (100, 200, 300)] for seed in range(3)])
    assert n == 3
    np.testing.assert_allclose(mean, values.mean(0))
    # Seeds 1 apart: the mean of 3 draws is the lowest or the highest seed's with probability 1/27 each, more than the
    # 2.5% in either tail, so the bootstrap's interval is exactly their span, at every step alike.
    np.testing.assert_allclose(low, values.min(0))
    np.testing.assert_allclose(high, values.max(0))
    # One value: the interval collapses onto it.
    assert curves.interval(np.array([4.0])) == (4.0, 4.0, 4.0)


def test_the_interval_over_seeds_stays_within_what_they_did():
    """Two seeds of five that learned: a resample of the three that did not alone comes (3/5)^5 = 7.8% of the time,
    more than the 2.5% tail, so the interval starts at exactly 0, not below it as a Student-t interval would; one of
    the best seed alone, (1/5)^5, is far rarer, so it ends short of 150. The same resamples give the same interval."""
    finals = np.array([0.0, 0.0, 150.0, 0.0, 130.0])
    mean, low, high = curves.interval(finals)
    assert (mean, low) == (56.0, 0.0) and mean < high < 150.0
    assert curves.interval(finals) == (mean, low, high)


def test_runs_of_different_lengths_share_the_steps_all_reached(root):
    runs = [_run(0), _run(1, steps=(100, 200))]
    xs, mean, *_ = curves.aggregate(runs, "eval_return")
    np.testing.assert_array_equal(xs, [100, 200])
    np.testing.assert_allclose(mean, [1.5, 2.5])


def test_time_is_training_seconds_summed_over_windows(tmp_path):
    lines = _run(0, rate=50.0)
    lines[2]["env_steps_per_s"] = 25.0
    _write(tmp_path / "run", lines)
    times = [line["time"] for line in curves.read_metrics(tmp_path / "run")]
    np.testing.assert_allclose(times, [2.0, 4.0, 8.0])


def _plot(*args):
    return subprocess.run([sys.executable, "-m", "experiments.plot", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def test_cli_draws_a_root_and_a_run(root, capsys):
    done = _plot("--logroot", root, "--metrics", "eval_return", "loss_rec", "--x", "updates")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"curves: {root / 'curves.png'}"
    assert matplotlib.image.imread(root / "curves.png").shape[1] > 500
    run = root / "pinpad_three_rssm_seed0"
    code, out, err = run_main(plot.main, ["--logdir", run, "--out", root / "one.png"], capsys)
    assert code == 0 and out.strip() == f"curves: {root / 'one.png'}" and (root / "one.png").exists(), err


@pytest.mark.parametrize("args, message", [
    (["--logroot", "{root}/empty"], "is not a directory"),
    (["--logroot", "{root}/nested/pinpad_three_vta_seed0/x"], "is not a directory"),
    (["--logroot", "{root}", "--metrics", "eval_retrun"], "unknown metric eval_retrun: no run logged it"),
    (["--logdir", "{root}/nested"], "has no metrics.jsonl"),
    (["--logroot", "{root}", "--openloop"], "--openloop needs one run"),
    (["--logdir", "{root}/pinpad_three_rssm_seed0", "--openloop"], "has no config.json"),
])
def test_bad_input_is_one_clear_error(root, capsys, args, message):
    code, _, err = run_main(plot.main, [a.replace("{root}", str(root)) for a in args], capsys)
    assert code == 2 and message in err, err
    assert not (root / "curves.png").exists()


def test_a_root_without_runs_is_refused(tmp_path, capsys):
    code, _, err = run_main(plot.main, ["--logroot", tmp_path], capsys)
    assert code == 2 and "no runs under" in err


@pytest.mark.parametrize("runs, shaded", [(2, 0), (3, 1)])
def test_every_run_is_drawn_and_the_interval_shaded_from_three_runs(tmp_path, monkeypatch, runs, shaded):
    """Over two runs the bootstrap's interval is the span between them: the runs are shown as themselves, each thin
    beside the mean; from three the interval is shaded too."""
    import matplotlib.axes

    calls = {"plot": 0, "fill_between": 0}
    for name in calls:
        original = getattr(matplotlib.axes.Axes, name)
        monkeypatch.setattr(matplotlib.axes.Axes, name, lambda self, *a, _o=original, _n=name, **k: (
            calls.__setitem__(_n, calls[_n] + 1), _o(self, *a, **k))[1])
    lines = [[{"step": s, "eval_return": float(s * seed)} for s in (1, 2, 3)] for seed in range(runs)]
    curves.plot({"rssm": lines}, ["eval_return"], "step", tmp_path / "c.png")
    assert calls == {"plot": runs + 1, "fill_between": shaded}
