"""The status ledger of a sweep: what became of each run, the step at work, and the status file's fields.

The status file (`Ledger.fields`; read back, every value is a string), times in unix seconds, empty until then:
- SWEEP_STATE running, done, stopped or crashed; SWEEP_ERROR why it stopped; SWEEP_PID; SWEEP_STARTED,
  SWEEP_UPDATED (refreshed every second while it runs), SWEEP_ENDED; the settings LOGROOT, TASK, SEEDS,
  CONDITIONS, CONFIGS, FLAGS, EVAL_ARGS, EVAL_BASELINE, RUN_LOG, SEEDS_PER_PROCESS, LAUNCHER.
- RUNS_TOTAL; RUNS_ENDED (runs the sweep is through with); RUNS_<STATE> and EVALS_<STATE> for each of STATES:
  how many runs' training, and evaluation, are in it (RUNS_DONE, RUNS_FAILED, RUNS_RUNNING, EVALS_SKIPPED, ...).
- CURRENT (1-based run index, 0 for none), CURRENT_RUN, CURRENT_PHASE (train, eval, table or empty),
  CURRENT_STEP, CURRENT_TOTAL, CURRENT_FIRST_STEP (env steps), CURRENT_RATE (env steps/s), CURRENT_STARTED: the
  step at work, or when several are (a seed group, cluster jobs), the training run furthest along (`leading`).
- TABLE (pending, running, done, failed, skipped, stopped) and TABLE_NOTE.
- Per run i: RUN_i (its name), RUN_i_CONDITION, RUN_i_SEED, RUN_i_LOGDIR, RUN_i_GROUP (the number of the
  training process; runs with the same number train together), RUN_i_JOB (its cluster job's id, empty when
  local), RUN_i_TRAIN and RUN_i_EVAL (one of STATES; the runs of a group share their training's; a job's runs
  stay pending while it is queued, and their step at work stays running until the job ends, its evaluations
  included), RUN_i_TRAIN_NOTE and RUN_i_EVAL_NOTE (the error's last line, or why it was skipped), RUN_i_STEP and
  RUN_i_TOTAL (env steps its training reached, from its progress.json, and trains to; 0 until known),
  RUN_i_STARTED, RUN_i_ENDED.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Iterable

from dreamer_jax.sweep import Group, Run

STATES = ("pending", "running", "done", "failed", "skipped", "stopped")  # of a run's training and its evaluation


@dataclasses.dataclass
class Outcome:
    """What became of one run in this sweep: its training and its evaluation (each one of STATES) with a note
    (the error's last line, or why it was skipped), when the sweep began and ended it, the env steps its training
    reached and trains to, and the cluster job that runs it."""

    train: str = "pending"
    train_note: str = ""
    eval: str = "pending"
    eval_note: str = ""
    started: float | None = None
    ended: float | None = None
    step: int = 0
    total: int = 0
    job: str = ""


@dataclasses.dataclass
class Current:
    """What the sweep does now: `phase` train or eval of run `index`, or table (index 0); env steps for train."""

    index: int
    phase: str
    started: float | None
    step: int = 0
    total: int = 0
    first_step: int = 0
    rate: float = 0.0


def leading(currents: Iterable[Current]) -> Current | None:
    """The step that the sweep's bar follows among those at work: the training run furthest along (step over
    total), else the first; None when nothing is at work."""
    return max(currents, key=lambda c: (c.phase == "train", c.step / c.total if c.total else 0.0), default=None)


@dataclasses.dataclass
class Ledger:
    """A sweep's state, as its status file records it: settings, every run's outcome, the current step, the table;
    `groups` are the training processes (by default one per run)."""

    runs: list[Run]
    settings: dict[str, str]
    outcomes: list[Outcome] = dataclasses.field(default_factory=list)
    state: str = "running"
    error: str = ""
    started: float = dataclasses.field(default_factory=time.time)
    ended: float | None = None
    current: Current | None = None
    table: str = "pending"
    table_note: str = ""
    groups: list[Group] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        self.outcomes = self.outcomes or [Outcome() for _ in self.runs]
        self.groups = self.groups or [Group(run.index, (run,), run.argv) for run in self.runs]

    def fields(self) -> dict[str, Any]:
        """The status file's keys and values, as listed at the top of this module."""
        now = time.time()
        out: dict[str, Any] = {
            "SWEEP_STATE": self.state, "SWEEP_ERROR": self.error, "SWEEP_PID": os.getpid(),
            "SWEEP_STARTED": _stamp(self.started), "SWEEP_UPDATED": _stamp(now), "SWEEP_ENDED": _stamp(self.ended),
            **self.settings,
            "RUNS_TOTAL": len(self.runs), "RUNS_ENDED": sum(o.ended is not None for o in self.outcomes),
            **{f"RUNS_{s.upper()}": sum(o.train == s for o in self.outcomes) for s in STATES},
            **{f"EVALS_{s.upper()}": sum(o.eval == s for o in self.outcomes) for s in STATES},
        }
        c = self.current or Current(0, "", None)
        out.update(CURRENT=c.index, CURRENT_RUN=self.runs[c.index - 1].name if c.index else "", CURRENT_PHASE=c.phase,
                   CURRENT_STEP=c.step, CURRENT_TOTAL=c.total, CURRENT_FIRST_STEP=c.first_step,
                   CURRENT_RATE=f"{c.rate:.2f}", CURRENT_STARTED=_stamp(c.started), TABLE=self.table,
                   TABLE_NOTE=self.table_note)
        group = {run.index: g.index for g in self.groups for run in g.runs}
        for run, o in zip(self.runs, self.outcomes):
            key = f"RUN_{run.index}"
            out.update({key: run.name, f"{key}_CONDITION": run.condition, f"{key}_SEED": run.seed,
                        f"{key}_LOGDIR": run.logdir, f"{key}_GROUP": group[run.index], f"{key}_JOB": o.job,
                        f"{key}_TRAIN": o.train, f"{key}_TRAIN_NOTE": o.train_note, f"{key}_EVAL": o.eval,
                        f"{key}_EVAL_NOTE": o.eval_note, f"{key}_STEP": o.step, f"{key}_TOTAL": o.total,
                        f"{key}_STARTED": _stamp(o.started), f"{key}_ENDED": _stamp(o.ended)})
        return out


def _stamp(seconds: float | None) -> str:
    """A unix time for the status file (empty when not yet)."""
    return "" if seconds is None else f"{seconds:.1f}"
