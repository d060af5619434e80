"""`python -m experiments.train` end to end on the debug preset: outputs, resume, signals, determinism, bad input."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from conftest import REPO, run_main
from dreamer_jax import checkpoint, config as cfg, run as run_lib
from dreamer_jax.train import Learner
from experiments import train as train_cli
from experiments.envs import make_env

TINY = ["--configs", "debug", "--steps", "128"]
RATES = set(run_lib.TIMING)
LOSSES = {"loss_rec", "loss_rew", "loss_con", "loss_dyn", "loss_rep", "loss_actor", "loss_critic", "loss_repval"}


def train(*args, check=True, **kwargs):
    result = subprocess.run([sys.executable, "-m", "experiments.train", *args], cwd=REPO, capture_output=True,
                            text=True, timeout=600, **kwargs)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def lines(logdir):
    return [json.loads(line) for line in (logdir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One tiny finished run, shared by the tests that only read it."""
    logdir = tmp_path_factory.mktemp("run") / "rssm"
    result = train(*TINY, "--logdir", str(logdir))
    return logdir, result


def test_run_writes_config_metrics_and_checkpoints(run):
    logdir, result = run
    assert f"metrics: {logdir / 'metrics.jsonl'}" in result.stdout
    saved = cfg.load(logdir / "config.json")
    assert saved == cfg.parse([*TINY, "--logdir", str(logdir)])
    log = lines(logdir)
    assert [line["step"] for line in log] == [64, 128]
    assert all(next(iter(line)) == "step" for line in log)
    last = log[-1]
    assert LOSSES | {"grad_norm", "skipped_updates", "kl_obs", "post_entropy", "prior_entropy", "policy_entropy",
                     "policy_entropy_start",
                     "return_scale", "train_return", "train_length", "eval_return"} | RATES <= set(last)
    assert last["updates"] == 32 and last["skipped_updates"] == 0
    assert all(np.isfinite(last[k]) for k in LOSSES)
    # What drives the actor is logged beside it; the reward head's prediction at reward steps only as a mean over
    # a window's reward steps (the per-update sum never reaches the log).
    assert {"actor_grad_adv", "actor_grad_ent", "reward_events", "rew_pred_other", "repval_error",
            "repval_bias"} <= set(last) and "rew_pred_event_sum" not in last
    assert ("rew_pred_event" in last) == (last["reward_events"] > 0)
    # The periodic evaluation measures agent tracking (experiments.tracking) beside the return.
    tracking = ["tracking_posterior"] + [f"tracking_imagined_{k}" for k in (1, 5, 15, 45)]
    assert all(0 <= last[k] <= 1 and (last[k] * 8 * (5 if k == "tracking_posterior" else 1)).is_integer()
               for k in tracking), {k: last.get(k) for k in tracking}
    assert not any(k in log[0] for k in tracking)  # only at evaluations
    assert sorted(p.name for p in (logdir / "checkpoints").iterdir()) == ["128"]
    assert not (logdir / ".lock").exists()


def test_log_window_averages_event_metrics_over_events():
    """A log line's rew_pred_event is the window's summed prediction over its reward steps, not a mean of the
    updates' ratios; a window without reward steps has none (never a 0/0)."""
    window = run_lib._Window(0, 0)
    window.add({"rew_pred_event_sum": np.array([6.0, 0.0]), "reward_events": np.array([2.0, 0.0]),
                "loss_rew": np.array([1.0, 3.0])})
    window.add({"rew_pred_event_sum": np.array([3.0]), "reward_events": np.array([1.0]), "loss_rew": np.array([2.0])})
    line = window.summary(0, 0)
    assert line["rew_pred_event"] == 3.0 and line["reward_events"] == 1.0 and line["loss_rew"] == 2.0
    assert "rew_pred_event_sum" not in line
    empty = run_lib._Window(0, 0)
    empty.add({"rew_pred_event_sum": np.zeros(2), "reward_events": np.zeros(2)})
    assert "rew_pred_event" not in empty.summary(0, 0)


def test_checkpoint_restores_bit_identical(run, tmp_path):
    logdir, _ = run
    config = cfg.load(logdir / "config.json")
    learner, fresh = Learner.create(config, make_env(config), jax.random.PRNGKey(9))
    state, saved_config = checkpoint.restore(checkpoint.manager(logdir), fresh)
    assert saved_config == config and int(state.env_steps) == 128 and int(state.updates) == 32
    mgr = checkpoint.manager(tmp_path)
    checkpoint.save(mgr, 128, state, config)
    again, _ = checkpoint.restore(checkpoint.manager(tmp_path), fresh)
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(again)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_resume_continues_the_step_count(run, tmp_path, capsys):
    logdir, _ = run
    resumed = tmp_path / "resumed"
    subprocess.run(["cp", "-r", str(logdir), str(resumed)], check=True)
    assert train_cli.main(["--logdir", str(resumed), "--steps", "192"]) == 0  # in this process: shares programs
    assert "to 192 env steps, resuming at env step 128;" in capsys.readouterr().out
    log = lines(resumed)
    assert [line["step"] for line in log] == [64, 128, 192]
    assert log[-1]["updates"] == 64
    assert sorted(p.name for p in (resumed / "checkpoints").iterdir()) == ["128", "192"]


def test_same_seed_same_metrics(run, tmp_path):
    logdir, _ = run
    assert train_cli.main([*TINY, "--logdir", str(tmp_path / "again")]) == 0
    strip = lambda log: [{k: v for k, v in line.items() if k not in RATES} for line in log]  # noqa: E731
    assert strip(lines(tmp_path / "again")) == strip(lines(logdir))


@pytest.mark.parametrize(
    "args, message",
    [
        (["--batch_lenght", "8"], "--batch_lenght"),
        (["--batch_length", "1"], "batch_length"),
        (["--deter", "60"], "deter"),
        (["--task", "pinpad_nine"], "pinpad_nine"),
        (["--configs", "tiny"], "unknown preset 'tiny'"),
        (["--envs", "0"], "envs"),
        ([], "--logdir"),
    ],
)
def test_bad_input_is_a_clear_error_before_any_work(tmp_path, capsys, args, message):
    logdir = tmp_path / "bad"
    extra = [] if not args else ["--logdir", str(logdir)]
    code, _, err = run_main(train_cli.main, ["--configs", "debug", *extra, *args], capsys)
    assert code == 2 and message in err
    assert not logdir.exists()


def test_conflicting_flags_do_not_touch_an_existing_run(run, capsys):
    logdir, _ = run
    before = {p: p.read_bytes() for p in [logdir / "config.json", logdir / "metrics.jsonl"]}
    code, _, err = run_main(train_cli.main, ["--logdir", logdir, "--batch_size", "3"], capsys)
    assert code == 2 and "--batch_size 3 (saved: 2)" in err
    assert {p: p.read_bytes() for p in before} == before


def _wait_for_metrics(logdir, proc, timeout=300, step=0):
    """Until the run has logged a line at `step` or later."""
    start = time.monotonic()
    while not (logdir / "metrics.jsonl").exists() or lines(logdir)[-1:] == [] or lines(logdir)[-1]["step"] < step:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() - start < timeout
        time.sleep(0.2)


def test_sigterm_saves_and_the_next_start_resumes(tmp_path):
    logdir = tmp_path / "term"
    args = ["--configs", "debug", "--steps", "100000", "--log_every", "16", "--save_every", "0", "--eval_every", "0"]
    proc = subprocess.Popen([sys.executable, "-m", "experiments.train", *args, "--logdir", str(logdir)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_metrics(logdir, proc, step=96)  # two training chunks of 16 env steps after the prefill of 64
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    assert "stopped by signal" in out
    # It said what it would do as it started, and how long it would take once the update was compiled and timed.
    assert out.startswith("train: rssm on pinpad_eight, seed 0, to 100000 env steps, after a prefill of 64 random "
                          f"steps; 0.5 updates of 2x8 per env step (train ratio 8); no periodic evaluation\n  metrics: "
                          f"{logdir / 'metrics.jsonl'} (a line every 16 env steps)")
    assert "env steps/s over the first updates: about " in err and "to 100000 env steps on this machine" in err
    saved = [int(p.name) for p in (logdir / "checkpoints").iterdir()]
    assert len(saved) == 1 and 0 < saved[0] < 100000
    assert not (logdir / ".lock").exists()
    assert train_cli.main(["--logdir", str(logdir), "--steps", str(saved[0] + 32)]) == 0
    assert lines(logdir)[-1]["step"] == saved[0] + 32


def test_after_sigkill_resume_starts_from_the_last_checkpoint(tmp_path):
    logdir = tmp_path / "kill"
    args = ["--configs", "debug", "--steps", "100000", "--log_every", "16", "--save_every", "64", "--eval_every", "0"]
    proc = subprocess.Popen([sys.executable, "-m", "experiments.train", *args, "--logdir", str(logdir)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    start = time.monotonic()
    while not any(int(line["step"]) > 64 for line in (lines(logdir) if (logdir / "metrics.jsonl").exists() else [])):
        assert proc.poll() is None and time.monotonic() - start < 300
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    last_saved = max(int(p.name) for p in (logdir / "checkpoints").iterdir() if p.name.isdigit())
    assert train_cli.main(["--logdir", str(logdir), "--steps", str(last_saved + 16)]) == 0
    steps = [line["step"] for line in lines(logdir)]
    assert steps == sorted(set(steps)) and steps[-1] == last_saved + 16  # lines after the checkpoint were redone
