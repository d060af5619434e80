"""A multi-host job for real: two training processes on this machine joined by jax.distributed (gloo collectives),
one of them killed mid-run and the job resumed, against one process with two devices."""

import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from conftest import REPO
from dreamer_jax.sweep import read_progress
from test_scale import _with_devices, assert_same_metrics
from test_train_cli import lines, train

# 96 env steps of prefill, then an update every 16 env steps; a checkpoint every 192 steps.
FLAGS = ["--configs", "debug", "--task", "pinpad_three", "--time_limit", "50", "--prefill", "96", "--train_ratio", "1",
         "--log_every", "96", "--eval_every", "192", "--save_every", "192", "--devices", "2"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def start_job(*args, processes=2):
    """The processes of one multi-host job on this machine, each with one CPU device, started together."""
    port = _free_port()
    return [subprocess.Popen(
        [sys.executable, "-m", "experiments.train", *args, "--distributed", "True"], cwd=REPO, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "JAX_COORDINATOR_ADDRESS": f"localhost:{port}", "JAX_NUM_PROCESSES": str(processes),
             "JAX_PROCESS_ID": str(i)}) for i in range(processes)]


def finish(job, timeout=600):
    """[(returncode, stdout, stderr)] of every process of a job; fails the test if one outlives `timeout`."""
    out = []
    for proc in job:
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for p in job:
                p.kill()
            pytest.fail(f"a process of the job did not finish within {timeout} s")
        out.append((proc.returncode, stdout, stderr))
    return out


def run_job(*args):
    results = finish(start_job(*args))
    for code, _, stderr in results:
        assert code == 0, stderr[-3000:]
    return results


def restore_state(logdir, step):
    """The whole training state of a checkpoint, restored in this (single-device) process."""
    from dreamer_jax import checkpoint, config as cfg
    from dreamer_jax.train import Learner
    from experiments.envs import make_env

    config = cfg.load(logdir / "config.json")
    _, like = Learner.create(config, make_env(config), jax.random.PRNGKey(0))
    return checkpoint.restore(checkpoint.manager(logdir), like, step)[0]


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """A two-process job to 384 env steps: one process is killed once checkpoint 288 exists, and the same command
    run again resumes and finishes; beside it, one process with two devices (the same global batch of 2)."""
    root = tmp_path_factory.mktemp("multihost")
    logdir = root / "job"
    args = [*FLAGS, "--save_every", "96", "--steps", "384"]
    proc0, proc1 = start_job(*args, "--logdir", str(logdir))
    deadline = time.monotonic() + 600
    # Killed once checkpoint 288 is written and process 0 has reported step 288 (it writes its progress after the
    # save returns): the job is then training towards 384, where every update is a collective. A kill during the
    # save would leave process 0 in the checkpointer's barrier, which ends only at the coordination timeout.
    while not ((logdir / "checkpoints" / "288").exists() and (read_progress(logdir) or {}).get("step", 0) >= 288):
        assert time.monotonic() < deadline and proc0.poll() is None and proc1.poll() is None, "no checkpoint 288"
        time.sleep(0.2)
    proc1.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    [survivor, _] = finish([proc0, proc1], timeout=300)
    stopped_s = time.monotonic() - killed
    newest = max(int(p.name) for p in (logdir / "checkpoints").iterdir())
    resumed = run_job(*args, "--logdir", str(logdir))
    train(*args, "--logdir", str(root / "single"), env=_with_devices(2))
    return root, survivor, stopped_s, newest, resumed


def test_both_processes_take_part_and_one_writes_the_logs(job):
    root, *_, [(_, out0, err0), (_, out1, err1)] = job
    assert [line["step"] for line in lines(root / "job")] == [96, 192, 288, 384]  # one line each: one writer
    assert "100%" in err0 and "%" not in err1  # the progress bar
    assert f"metrics: {root / 'job' / 'metrics.jsonl'}" in out0 and "metrics:" not in out1
    # Both processes' devices hold the state: each wrote its share of the arrays into the one checkpoint.
    assert sorted(p.name for p in (root / "job" / "checkpoints" / "384" / "state").glob("ocdbt.process_*")) == [
        "ocdbt.process_0", "ocdbt.process_1"]
    assert not (root / "job" / ".lock").exists()


def test_metrics_match_one_process_with_the_same_global_batch(job):
    root, *_ = job
    ours = lines(root / "job")
    assert [line["updates"] for line in ours] == [0, 6, 12, 18]
    assert all(np.isfinite(v) for line in ours for v in line.values() if isinstance(v, float))  # NaN equals NaN below
    assert_same_metrics(ours, lines(root / "single"), rtol=1e-4)


def test_the_checkpoint_is_written_once_complete_and_equal_to_one_process(job):
    root, *_ = job
    folder = root / "job" / "checkpoints"
    assert sorted(int(p.name) for p in folder.iterdir()) == [288, 384]  # the newest two, none half-written
    ours, single = restore_state(root / "job", 384), restore_state(root / "single", 384)
    assert int(ours.env_steps) == 384 and int(ours.updates) == 18
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(single), strict=True):
        assert np.isfinite(np.asarray(a, np.float64)).all()
        np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=1e-3, atol=1e-4)


def test_a_killed_process_ends_the_other_promptly_and_the_next_invocation_resumes(job):
    """The job's process 1 was killed after checkpoint 288; the survivor stopped at once, and running the same
    command again resumed from the newest checkpoint and finished (the tests above read the resumed job)."""
    root, (code, _, stderr), stopped_s, newest, _ = job
    logdir = root / "job"
    assert stopped_s < 60  # neither the heartbeat timeout nor a hang
    assert newest == 288  # process 0 cannot train on alone: every update is a collective
    # Whichever notices first ends the survivor: its next collective (our error, status 3), or jax.distributed's
    # coordination service, which sees the dead process's connection close and aborts the others with its message.
    if code == 3:
        assert "Traceback" not in stderr, stderr[-3000:]
        [message] = [line for line in stderr.splitlines() if line.startswith("error: ")]
        assert "lost contact with another process" in message and "Start every process again" in message
        assert f"newest checkpoint is step {newest} in {logdir / 'checkpoints'}" in message
    else:
        assert code == -signal.SIGABRT and "This most likely indicates that another task died" in stderr, stderr[-3000:]


def test_a_job_must_split_batches_over_every_process(tmp_path):
    results = finish(start_job(*FLAGS[:-1], "1", "--steps", "300", "--logdir", str(tmp_path / "run")))
    for code, _, stderr in results:
        assert code == 2 and "pass --devices 2 (every process's devices)" in stderr and "Traceback" not in stderr


def test_a_partial_job_description_is_a_clear_error(tmp_path):
    result = train(*FLAGS, "--steps", "300", "--distributed", "True", "--logdir", str(tmp_path / "run"), check=False,
                   env={**os.environ, "JAX_COORDINATOR_ADDRESS": f"localhost:{_free_port()}"})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "JAX_NUM_PROCESSES, JAX_PROCESS_ID not set beside JAX_COORDINATOR_ADDRESS; set all three" in result.stderr
    assert not list(tmp_path.iterdir())
