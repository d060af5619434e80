"""Sweeps of training runs, conditions x seeds: conditions, run names, the plan, its seed groups, outcomes and
their status.

The library half of `python -m experiments.sweep` (which trains and evaluates the planned runs in subprocesses, or
in cluster jobs) and `python -m experiments.monitor` (which draws `render(read_status(file))`). In a notebook:
`plan(...)` lists a sweep's runs, `plan_groups(...)` the training processes that train them, `is_finished(run)`
says which are done, `dreamer_jax.status.read_status` reads a live sweep's status. Imports no JAX.

The status file (`Ledger.fields`; read back, every value is a string), times in unix seconds, empty until then:
- SWEEP_STATE running, done, stopped or crashed; SWEEP_ERROR why it stopped; SWEEP_PID; SWEEP_STARTED,
  SWEEP_UPDATED (refreshed every second while it runs), SWEEP_ENDED; the settings LOGROOT, TASK, SEEDS,
  CONDITIONS, CONFIGS, FLAGS, EVAL_ARGS, RUN_LOG, SEEDS_PER_PROCESS, LAUNCHER.
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
import json
import os
import pathlib
import re
import shlex
import time
from typing import Any, Hashable, Iterable, Mapping, Sequence

from dreamer_jax import config as cfg
from dreamer_jax.progress import Bar, clock
from dreamer_jax.status import StatusError

# The prototype's four conditions: the RSSM baseline and three VTA settings.
DEFAULT_CONDITIONS: dict[str, tuple[str, ...]] = {
    "rssm": ("--dynamics", "rssm"),
    "vta_force0_t1": ("--dynamics", "vta", "--vta_max_seg_len", "30", "--vta_boundary_force_scale", "0",
                      "--vta_boundary_temp", "1"),
    "vta_force10_t1": ("--dynamics", "vta", "--vta_max_seg_len", "30", "--vta_boundary_force_scale", "10",
                       "--vta_boundary_temp", "1"),
    "vta_force0_t2_rate": ("--dynamics", "vta", "--vta_max_seg_len", "50", "--vta_boundary_force_scale", "0",
                           "--vta_boundary_temp", "2", "--vta_boundary_rate", "0.1", "--vta_boundary_scale", "0.5"),
}
BASELINE = "rssm"  # the condition --skip-rssm leaves out
DEFAULT_LOGROOT = "runs/pinpad_sweep"
DEFAULT_TASK = "pinpad_eight"
DEFAULT_SEEDS = (0, 1, 2)
DEFAULT_CONFIGS = ("pinpad", "size12m")
STATUS_NAME = "pinpad_status.env"  # the prototype's name, in the log root unless --status-file says otherwise
LOG_NAME = "sweep.log"
RESERVED = ("--logdir", "--seed", "--task", "--num_seeds")  # set per run (or seed group) by the sweep
STATES = ("pending", "running", "done", "failed", "skipped", "stopped")  # of a run's training and its evaluation

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")


class SweepError(ValueError):
    """A sweep that cannot run as asked; the message names the problem and the fix."""


def reserved_flags(tokens: Iterable[str]) -> list[str]:
    """The flags among `tokens` that the sweep sets itself for every run."""
    return [token for token in tokens if token.split("=", 1)[0] in RESERVED]


def parse_conditions(text: str, source: str) -> dict[str, tuple[str, ...]]:
    """Conditions from text, one per line: `name --flag value ...` (quoted as in a shell); # comments and blank
    lines skipped."""
    conditions: dict[str, tuple[str, ...]] = {}
    for number, line in enumerate(text.splitlines(), 1):
        where = f"{source}, line {number}"
        try:
            tokens = shlex.split(line, comments=True)
        except ValueError as error:
            raise SweepError(f"{where}: {error}; quote values as in a shell") from None
        if not tokens:
            continue
        name, flags = tokens[0], tuple(tokens[1:])
        if not _NAME.match(name):
            raise SweepError(f"{where}: condition name {name!r} cannot be part of a run directory name; use letters, "
                             "digits, '_', '.' and '-'")
        if name in conditions:
            raise SweepError(f"{where}: condition {name!r} is defined twice; give each condition one line")
        if flags and not flags[0].startswith("--"):
            raise SweepError(f"{where}: expected training flags after the name, got {flags[0]!r}; write "
                             "`name --flag value ...`")
        if reserved_flags(flags):
            raise SweepError(f"{where}: {', '.join(reserved_flags(flags))} is set by the sweep for every run; use "
                             "the sweep's --logroot, --seeds, --task and --seeds-per-process instead")
        conditions[name] = flags
    if not conditions:
        raise SweepError(f"{source} defines no conditions; write one per line as `name --flag value ...`")
    return conditions


def load_conditions(path: str | os.PathLike) -> dict[str, tuple[str, ...]]:
    """Conditions from a file in the format of `parse_conditions`; SweepError if it cannot be read."""
    try:
        text = pathlib.Path(path).read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise SweepError(f"cannot read the conditions file {path} ({error.__class__.__name__}); pass a text file "
                         "with one `name --flag value ...` per line to --conditions") from None
    return parse_conditions(text, str(path))


def parse_seeds(tokens: Iterable[str], source: str = "--seeds") -> tuple[int, ...]:
    """Seeds from tokens separated by spaces or commas; SweepError unless they are distinct integers >= 0."""
    words = [word for token in tokens for word in re.split(r"[\s,]+", token) if word]
    bad = [word for word in words if not word.isdigit()]
    if bad or not words:
        raise SweepError(f"{source}: {', '.join(map(repr, bad)) or 'no seeds'} given; seeds are integers 0 or more, "
                         "e.g. --seeds 0 1 2 or SEEDS='0 1 2'")
    seeds = tuple(int(word) for word in words)
    if len(set(seeds)) < len(seeds):
        raise SweepError(f"{source}: a seed is given twice ({' '.join(words)}); list each seed once")
    return seeds


@dataclasses.dataclass(frozen=True)
class Run:
    """One run of a sweep: a condition with a seed, trained by `python -m experiments.train *argv` in `logdir`."""

    index: int
    condition: str
    seed: int
    name: str
    logdir: pathlib.Path
    argv: tuple[str, ...]


def run_name(task: str, condition: str, seed: int) -> str:
    """A run's directory name, as the prototype named them."""
    return f"{task}_{condition}_seed{seed}"


def plan(logroot: str | os.PathLike, task: str, conditions: Mapping[str, Iterable[str]], seeds: Iterable[int],
         configs: Iterable[str], flags: Iterable[str] = ()) -> list[Run]:
    """The runs, seed by seed and each condition in order within a seed, numbered from 1.

    A run's flags are its task, seed and log directory, then `--configs`, its condition's flags, then `flags`.
    """
    runs = []
    for seed in seeds:
        for condition, overrides in conditions.items():
            name = run_name(task, condition, seed)
            logdir = pathlib.Path(logroot) / name
            argv = ("--logdir", str(logdir), "--task", task, "--seed", str(seed), "--configs", *configs, *overrides,
                    *flags)
            runs.append(Run(len(runs) + 1, condition, seed, name, logdir, argv))
    return runs


@dataclasses.dataclass(frozen=True)
class Group:
    """Runs of one condition with consecutive seeds, trained side by side by one `python -m experiments.train *argv`
    process (`--num_seeds`); a group of one run is that run's own command."""

    index: int
    runs: tuple[Run, ...]
    argv: tuple[str, ...]


def group_argv(runs: Sequence[Run]) -> tuple[str, ...]:
    """The training command of one condition's runs with seeds s, s + 1, ...: the first run's, with its log directory
    a pattern ({seed} for the seed) and --num_seeds."""
    first = runs[0]
    if len(runs) == 1:
        return first.argv
    pattern = first.logdir.with_name(first.name.removesuffix(str(first.seed)) + "{seed}")  # as run_name names them
    argv = list(first.argv)
    argv[argv.index("--logdir") + 1] = str(pattern)
    return (*argv, "--num_seeds", str(len(runs)))


def plan_groups(runs: Sequence[Run], per_process: int, states: Sequence[Hashable]) -> list[Group]:
    """The training processes of planned runs, numbered from 1 in the order of their first run.

    Each condition's runs go in blocks of at most `per_process` consecutive seeds (s, s + 1, ...) that stand in the
    same state (`states`, one per run, e.g. `resume_state`): seeds trained together resume from the same checkpoint,
    so a run in another state than its neighbours trains on its own.
    """
    state = {run.index: s for run, s in zip(runs, states)}
    blocks: list[list[Run]] = []
    for run in sorted(runs, key=lambda r: (r.condition, r.seed)):
        last = blocks[-1][-1] if blocks else None
        if last is not None and last.condition == run.condition and last.seed + 1 == run.seed and \
                state[last.index] == state[run.index] and len(blocks[-1]) < per_process:
            blocks[-1].append(run)
        else:
            blocks.append([run])
    blocks.sort(key=lambda block: block[0].index)
    return [Group(number, tuple(block), group_argv(block)) for number, block in enumerate(blocks, 1)]


def latest_checkpoint(logdir: str | os.PathLike) -> int | None:
    """The step of the run's newest checkpoint (integer names under checkpoints/), None if there is none."""
    folder = pathlib.Path(logdir) / "checkpoints"
    steps = [int(p.name) for p in folder.iterdir() if p.name.isdigit()] if folder.is_dir() else []
    return max(steps, default=None)


def target_steps(run: Run) -> int | None:
    """The env steps the run's command trains to: its saved configuration with the sweep's flags on top (as the
    training CLI reads them); None when they do not make a valid configuration."""
    saved = run.logdir / "config.json"
    try:
        return cfg.parse(run.argv, base=cfg.load(saved) if saved.exists() else None).steps
    except cfg.ConfigError:
        return None


def is_finished(run: Run) -> bool:
    """Whether the run has a saved configuration and a checkpoint at or past the steps it trains to."""
    step, target = latest_checkpoint(run.logdir), target_steps(run)
    return (run.logdir / "config.json").exists() and None not in (step, target) and step >= target


def eval_is_current(logdir: str | os.PathLike) -> bool:
    """Whether the run's boundary_eval.json was written after its newest checkpoint."""
    logdir = pathlib.Path(logdir)
    step, result = latest_checkpoint(logdir), logdir / "boundary_eval.json"
    return step is not None and result.exists() and \
        result.stat().st_mtime >= (logdir / "checkpoints" / str(step)).stat().st_mtime


def resume_state(run: Run) -> tuple[int | None, bool]:
    """Where a run stands for training: its newest checkpoint's step and whether it is finished."""
    return latest_checkpoint(run.logdir), is_finished(run)


def eval_skip_reason(logdir: str | os.PathLike) -> str:
    """Why the run's boundaries need no evaluation now (no checkpoint, or evaluated since the newest); empty if
    they do."""
    step = latest_checkpoint(logdir)
    if step is None:
        return f"no checkpoint in {pathlib.Path(logdir) / 'checkpoints'}"
    return f"boundary_eval.json is newer than checkpoint {step}" if eval_is_current(logdir) else ""


def read_progress(logdir: str | os.PathLike, since: float = 0.0) -> dict[str, Any] | None:
    """The progress.json a training run writes after each chunk, if one was written at or after `since`."""
    try:
        progress = json.loads((pathlib.Path(logdir) / "progress.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return progress if progress.get("time", 0.0) >= since else None


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


def _value(fields: Mapping[str, Any], key: str, kind=str) -> Any:
    """`fields[key]` as `kind`; StatusError when it is missing or malformed."""
    try:
        return kind(fields[key])
    except (KeyError, ValueError):
        raise StatusError(f"no valid {key} in the status ({fields.get(key)!r}); is this a sweep status file "
                          "written by experiments.sweep?") from None


def render(fields: Mapping[str, Any], now: float | None = None) -> list[str]:
    """The sweep's bars drawn from its status: the current run (env steps, rate, ETA; how many runs are at work when
    several are), then the whole sweep (i/N)."""
    now = time.time() if now is None else now
    total, index, phase = _value(fields, "RUNS_TOTAL", int), _value(fields, "CURRENT", int), fields.get("CURRENT_PHASE")
    lines = []
    if phase:
        elapsed = now - _value(fields, "CURRENT_STARTED", float)
        desc = f"({index}/{total}) {fields.get('CURRENT_RUN', '')}"
        if phase == "train" and _value(fields, "CURRENT_TOTAL", int):
            bar = Bar(_value(fields, "CURRENT_TOTAL", int), desc, elapsed=elapsed,
                      first_done=_value(fields, "CURRENT_FIRST_STEP", int))
            working = _value(fields, "RUNS_RUNNING", int) + _value(fields, "EVALS_RUNNING", int)
            lines.append(bar.line(_value(fields, "CURRENT_STEP", int), "env steps"
                                  + (f" (+{working - 1} running)" if working > 1 else "")))
        else:
            doing = {"train": "starting training", "eval": "evaluating boundaries"}.get(phase, "building the table")
            lines.append(f"{desc if index else 'sweep'}: {doing} {clock(elapsed)}")
    counts = {s: _value(fields, f"RUNS_{s.upper()}", int) for s in ("done", "failed", "skipped")}
    ended = _value(fields, "RUNS_ENDED", int)
    # Runs trained before take no training time: the rate counts the others.
    sweep = Bar(total, "sweep", elapsed=now - _value(fields, "SWEEP_STARTED", float),
                first_done=min(counts["skipped"], ended), per="h")
    state = _value(fields, "SWEEP_STATE")
    note = ", ".join(f"{n} {s}" for s, n in counts.items()) + ("" if state == "running" else f"; {state}")
    return lines + [sweep.line(ended, note)]


def summary(fields: Mapping[str, Any]) -> list[str]:
    """One line per run (training and evaluation outcome with their notes), then the table's outcome."""
    lines = [f"{fields.get(key, key)}: {_outcome(fields, f'{key}_TRAIN', 'train')}, "
             f"{_outcome(fields, f'{key}_EVAL', 'eval')}"
             for key in (f"RUN_{i}" for i in range(1, _value(fields, "RUNS_TOTAL", int) + 1))]
    return lines + [_outcome(fields, "TABLE", "table:")]


def _outcome(fields: Mapping[str, Any], key: str, label: str) -> str:
    """`label`, the state under `key` and, in brackets, its note (under `key`_NOTE) if it has one."""
    note = fields.get(f"{key}_NOTE")
    return f"{label} {fields.get(key, '?')}" + (f" ({note})" if note else "")
