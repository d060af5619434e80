"""`python -m experiments.monitor` and the bars it draws from a status file (no training: status files made here)."""

import io
import subprocess
import sys
import time

import pytest

from conftest import REPO
from dreamer_jax import sweep, sweep_view
from dreamer_jax.ledger import Current, Ledger, Outcome
from dreamer_jax.progress import Panel
from dreamer_jax.status import read_status, write_status

NOW = 1_800_000_000.0


def ledger(tmp_path):
    """A sweep of two conditions x two seeds, at the second run's step 128 of 256, the first run done."""
    runs = sweep.plan(tmp_path, "pinpad_eight", {"rssm": (), "vta": ()}, [0, 1], ["debug"])
    book = Ledger(runs, {"LOGROOT": str(tmp_path)}, started=NOW - 60)
    book.outcomes[0] = Outcome("done", "", "failed", "RunError: no episodes", book.started, book.started + 30)
    book.outcomes[1].train, book.outcomes[1].started = "running", book.started + 30
    book.current = Current(2, "train", NOW - 30, step=128, total=256, first_step=0, rate=4.3)
    return book


def monitor(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "experiments.monitor", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=60, **kwargs)


def test_render_draws_the_current_run_and_the_whole_sweep(tmp_path):
    run_line, sweep_line = sweep_view.render(ledger(tmp_path).fields(), now=NOW)
    assert run_line == ("(2/4) pinpad_eight_vta_seed0  50% |############------------| 128/256 [00:30<00:30, 4.3/s] "
                        "env steps")
    assert sweep_line == "sweep  25% |######------------------| 1/4 [01:00<03:00, 60.0/h] 1 done, 0 failed, 0 skipped"


def test_render_names_evaluation_and_the_end(tmp_path):
    book = ledger(tmp_path)
    book.current = Current(2, "eval", NOW - 5)
    assert sweep_view.render(book.fields(), now=NOW)[0] == "(2/4) pinpad_eight_vta_seed0: evaluating boundaries 00:05"
    book.current, book.state = None, "done"
    assert [line[-6:] for line in sweep_view.render(book.fields(), now=NOW)] == ["; done"]


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_panel_redraws_its_lines_in_place_with_messages_above(monkeypatch):
    monkeypatch.setenv("COLUMNS", "12")
    screen = Terminal()
    panel = Panel(screen)
    panel.show(["run 1", "sweep 0/2"])
    panel.message("run 1 done")
    panel.show(["sweep 1/2 and a long tail"])
    panel.close()
    assert screen.getvalue() == ("\r\033[Jrun 1\nsweep 0/2" + "\r\033[1A\033[Jrun 1 done\nrun 1\nsweep 0/2"
                                 + "\r\033[1A\033[Jsweep 1/2 a" + "\n")


def test_panel_prints_now_and_then_elsewhere():
    log = io.StringIO()
    panel = Panel(log, every=3600)
    panel.show(["a", "b"])
    panel.show(["c"])
    panel.message("event")
    panel.show(["d"], force=True)
    panel.close()
    assert log.getvalue() == "a\nb\nevent\nd\n"


def test_the_status_file_holds_each_runs_outcome(tmp_path):
    path = tmp_path / "status.env"
    write_status(path, ledger(tmp_path).fields())
    fields = read_status(path)
    assert fields["SWEEP_STATE"] == "running" and fields["RUNS_TOTAL"] == "4" and fields["CURRENT_RUN"] == \
        "pinpad_eight_vta_seed0"
    assert (fields["RUN_1_TRAIN"], fields["RUN_1_EVAL"], fields["RUN_1_EVAL_NOTE"]) == (
        "done", "failed", "RunError: no episodes")
    assert fields["RUN_4"] == "pinpad_eight_vta_seed1" and fields["RUN_4_TRAIN"] == "pending"
    assert fields["RUN_4_LOGDIR"] == str(tmp_path / "pinpad_eight_vta_seed1")


def test_monitor_draws_a_finished_sweep_and_exits(tmp_path):
    book = ledger(tmp_path)
    book.current, book.state, book.ended = None, "done", NOW
    write_status(tmp_path / "status.env", book.fields())
    result = monitor("--status-file", str(tmp_path / "status.env"))
    assert result.returncode == 0, result.stderr
    assert "sweep  25% |" in result.stdout and "; done" in result.stdout
    assert "pinpad_eight_rssm_seed0: train done, eval failed (RunError: no episodes)" in result.stdout


def test_monitor_follows_a_running_sweep_until_it_is_done(tmp_path):
    path, book = tmp_path / "status.env", ledger(tmp_path)
    write_status(path, book.fields())
    proc = subprocess.Popen([sys.executable, "-m", "experiments.monitor", "--status-file", str(path), "--interval",
                             "0.1"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(2)
    assert proc.poll() is None
    book.current, book.state = None, "done"
    write_status(path, book.fields())
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "(2/4) pinpad_eight_vta_seed0  50%" in out and out.rstrip().endswith("table: pending")


@pytest.mark.parametrize("change, message", [
    ({"SWEEP_UPDATED": time.time() - 600}, "has not updated"),
    ({"SWEEP_STATE": "stopped", "SWEEP_ERROR": "stopped by signal 2"}, "the sweep stopped: stopped by signal 2"),
])
def test_monitor_says_when_the_sweep_has_stopped(tmp_path, change, message):
    write_status(tmp_path / "status.env", {**ledger(tmp_path).fields(), **change})
    result = monitor("--status-file", str(tmp_path / "status.env"))
    assert result.returncode == 1 and message in result.stderr


def test_monitor_says_when_the_file_is_missing_or_not_a_status_file(tmp_path):
    result = monitor("--status-file", str(tmp_path / "missing.env"))
    assert result.returncode == 1 and f"no status file at {tmp_path / 'missing.env'}" in result.stderr
    (tmp_path / "notes.txt").write_text("some notes\n")
    result = monitor("--status-file", str(tmp_path / "notes.txt"))
    assert result.returncode == 1 and "cannot read" in result.stderr and "Traceback" not in result.stderr
