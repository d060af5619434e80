"""Train conditions x seeds, evaluate each run's boundaries, and gather the conditions x seeds table.

    python -m experiments.sweep --logroot runs/pinpad_sweep --seeds 0 1 2 --configs pinpad size12m
    python -m experiments.sweep --seeds 0 1 2 --seeds-per-process 3     # a condition's seeds in one process
    python -m experiments.sweep --launcher slurm --slurm-time 720 --slurm-gpus-per-node 1   # one job each
    python -m experiments.monitor --status-file runs/pinpad_sweep/pinpad_status.env   # from another terminal

Each run trains with `python -m experiments.train` in LOGROOT/{task}_{condition}_seed{n}; with --seeds-per-process
K, up to K consecutive seeds of a condition train side by side in one process (`--num_seeds`), unless they stand
at different checkpoints. Then `python -m experiments.eval_boundaries --logdir RUN` judges each run's boundaries;
at the end `python -m experiments.eval_boundaries --logroot LOGROOT` writes the table and `python -m experiments.plot
--logroot LOGROOT` the learning curves of every condition (LOGROOT/curves.png). A failed step is recorded
and the sweep goes on; running the same sweep again skips finished runs and resumes unfinished ones.

Launchers. `local` (the default) runs the training processes one after another, in subprocesses. `slurm` submits
every training process, followed by the evaluations of its runs, as one job through submitit, all jobs at once,
then follows them until all have ended: their runs' progress.json on the shared filesystem and the jobs' states
feed the status file (CURRENT follows the training run furthest along; RUN_i_JOB is its job's id); the table is
built here at the end. `submitit-local` does the same with submitit's local executor (jobs are processes on this
machine, all at once), to try the cluster path without SLURM. Stopping (SIGINT, SIGTERM): locally the signal goes
to the running step, whose training saves a checkpoint; with jobs, the unfinished ones are cancelled (SLURM sends
their training SIGTERM, which saves a checkpoint) and the sweep ends without waiting for them. Either way the
sweep records `stopped` and exits 128+N. A job warned of its time limit or preempted (SLURM's SIGUSR2) has its
training save a checkpoint and stop, and is requeued by submitit to resume from it. A job that fails (an error,
cancelled by hand) is recorded as failed with its error's last line; running the sweep again resumes its runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
import pathlib
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Mapping

import pinpad
from dreamer_jax import config as cfg, sweep
from dreamer_jax.progress import Panel
from dreamer_jax.run import stop_requests
from dreamer_jax.status import StatusError, pid_alive, read_status, write_status

POLL_S = 1.0  # how often the status file and the bars are refreshed while a step runs
JOB_POLL_S = 0.1  # how soon a job passes a stop on (submitit's local executor kills it a second after signalling)
LOG_EVERY_S = 30.0  # how often the bars are copied into the run log
TRAIN, EVAL, PLOT = "experiments.train", "experiments.eval_boundaries", "experiments.plot"
LAUNCHERS = ("local", "slurm", "submitit-local")
JOBS_DIR = ".submitit"  # under the log root: the jobs' pickles and logs
# The --slurm-* flags with a value: flag, submitit AutoExecutor parameter, smallest value (None: text), metavar, help.
SLURM_FLAGS = (
    ("--slurm-partition", "slurm_partition", None, "NAME", "partition of the jobs"),
    ("--slurm-time", "timeout_min", 1, "MINUTES", "time limit of each job (required with --launcher slurm)"),
    ("--slurm-gpus-per-node", "gpus_per_node", 0, "N", "GPUs of each job"),
    ("--slurm-cpus-per-task", "cpus_per_task", 1, "N", "CPU cores of each job"),
    ("--slurm-mem-gb", "mem_gb", 1, "GB", "memory of each job"),
    ("--slurm-signal-delay", "signal_delay_s", 1, "SECONDS", "how long before its time limit a job is warned to "
     "save and requeue (submitit's default 90; leave time for a training chunk and a save)"),
)


@dataclasses.dataclass(frozen=True)
class Options:
    """The sweep asked for, after checking."""

    logroot: pathlib.Path
    task: str
    seeds: tuple[int, ...]
    conditions: dict[str, tuple[str, ...]]
    configs: tuple[str, ...]
    flags: tuple[str, ...]
    run_log: pathlib.Path
    status_file: pathlib.Path
    eval_args: tuple[str, ...]
    dry_run: bool
    seeds_per_process: int
    launcher: str
    slurm: dict[str, Any]  # submitit AutoExecutor parameters of the jobs


def _parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    """The sweep's own flags; defaults come from the prototype's environment variables where they are set."""
    parser = argparse.ArgumentParser(
        prog="python -m experiments.sweep", allow_abbrev=False,
        usage="%(prog)s [-h] [--logroot DIR] [--task NAME] [--seeds N [N ...]] [--conditions FILE]\n"
              "       [--skip-rssm] [--configs PRESET [PRESET ...]] [--seeds-per-process K] [--run-log FILE]\n"
              f"       [--status-file FILE] [--eval-args FLAGS] [--dry-run] [--launcher {{{','.join(LAUNCHERS)}}}]\n"
              "       [--slurm-* VALUE ...] [--TRAINING_FLAG VALUE ...]",
        description="Train every condition with every seed, evaluate each run's boundaries and gather the "
        "conditions x seeds table. Any other --flag is passed to every training run (python -m experiments.train "
        "--help lists them). A failed run is recorded and the sweep goes on; running the same sweep again skips "
        "finished runs and resumes unfinished ones from their checkpoints.",
        epilog="default conditions: " + "; ".join(f"{name}: {' '.join(flags)}" for name, flags in
                                                  sweep.DEFAULT_CONDITIONS.items())
        + ". Launchers: local runs the training processes one after another; slurm submits each, with its runs' "
        "evaluations, as one job through submitit (pip install 'dreamer_jax[cluster]'), all at once, follows them "
        f"and builds the table at the end (jobs' logs in LOGROOT/{JOBS_DIR}); a stop signal cancels the unfinished "
        "jobs. Exit status: 0 all done, 1 a run, evaluation, job or the table failed or was stopped, 2 bad input, "
        "128+N stopped by signal N.",
        formatter_class=lambda prog: argparse.HelpFormatter(prog, max_help_position=32, width=116))
    add = parser.add_argument
    add("--logroot", metavar="DIR", default=env.get("LOGROOT", sweep.DEFAULT_LOGROOT),
        help="directory of the run directories {task}_{condition}_seed{n} (env LOGROOT; default %(default)s)")
    add("--task", metavar="NAME", default=env.get("TASK", sweep.DEFAULT_TASK),
        help="pinpad task (env TASK; default %(default)s)")
    add("--seeds", nargs="+", metavar="N", help="seeds, space or comma separated (env SEEDS; default "
        f"{' '.join(map(str, sweep.DEFAULT_SEEDS))})")
    add("--conditions", metavar="FILE", help="conditions file, one `name --flag value ...` per line, # comments "
        "(default: the prototype's four, below)")
    add("--skip-rssm", action="store_true", default=_truthy(env.get("SKIP_RSSM", "")),
        help=f"leave out the RSSM baseline, the condition named {sweep.BASELINE} (env SKIP_RSSM=1)")
    add("--configs", nargs="+", metavar="PRESET", default=list(sweep.DEFAULT_CONFIGS),
        help=f"training presets of every run (default {' '.join(sweep.DEFAULT_CONFIGS)})")
    add("--seeds-per-process", metavar="K", default="1",
        help="train up to K consecutive seeds of a condition side by side in one process (--num_seeds, one "
        "vmapped program); runs at different checkpoints train alone (default 1: a process per run)")
    add("--run-log", metavar="FILE", default=env.get("RUN_LOG"),
        help=f"log that everything is appended to (env RUN_LOG; default LOGROOT/{sweep.LOG_NAME})")
    add("--status-file", metavar="FILE", default=env.get("STATUS_FILE"),
        help=f"KEY=VALUE status for experiments.monitor (env STATUS_FILE; default LOGROOT/{sweep.STATUS_NAME})")
    add("--eval-args", metavar="FLAGS", default="",
        help=f"extra flags for every `python -m {EVAL} --logdir RUN`, quoted: --eval-args \"--episodes 2\"")
    add("--dry-run", action="store_true", help="list the training processes and their commands, then exit")
    add("--launcher", choices=LAUNCHERS, default="local",
        help="local: subprocesses, one after another (default); slurm: a SLURM job per training process, all at "
        "once; submitit-local: those jobs as processes on this machine, to try the cluster path")
    for flag, _, _, metavar, text in SLURM_FLAGS:
        add(flag, metavar=metavar, help=text)
    add("--slurm-setup", metavar="LINE", action="append",
        help="shell line run in each job before training, e.g. 'source .venv/bin/activate' (repeatable)")
    add("--slurm-param", metavar="KEY=VALUE", action="append",
        help="any other sbatch option of the jobs, e.g. account=myproject or qos=high (repeatable)")
    return parser


def _truthy(text: str) -> bool:
    """An environment flag's value as a boolean; SweepError when it is neither."""
    if text.lower() in ("1", "true", "yes"):
        return True
    if text.lower() in ("", "0", "false", "no"):
        return False
    raise sweep.SweepError(f"SKIP_RSSM={text!r} is not a boolean; set it to 1 or 0")


def parse_options(argv: list[str], env: Mapping[str, str]) -> Options:
    """The sweep's options from flags and environment; SweepError naming the problem before anything is written."""
    known, flags = _parser(env).parse_known_args(argv)
    if sweep.reserved_flags(flags):
        raise sweep.SweepError(f"{', '.join(sweep.reserved_flags(flags))} is set by the sweep for every run; use "
                               "--logroot, --seeds, --task and --seeds-per-process instead")
    try:
        cfg.parse(["--configs", *known.configs, "--task", known.task, *flags], tasks=pinpad.TASKS)
    except cfg.ConfigError as error:
        raise sweep.SweepError(f"{error} (in the training flags of every run; python -m experiments.train --help "
                               "lists them)") from None
    conditions = sweep.load_conditions(known.conditions) if known.conditions else dict(sweep.DEFAULT_CONDITIONS)
    if known.skip_rssm:
        conditions.pop(sweep.BASELINE, None)
    if not conditions:
        raise sweep.SweepError(f"no conditions left after --skip-rssm; add conditions other than {sweep.BASELINE}")
    logroot = pathlib.Path(known.logroot)
    result = Options(
        logroot=logroot, task=known.task, seeds=_seeds(known.seeds, env), conditions=conditions,
        configs=tuple(known.configs), flags=tuple(flags),
        run_log=pathlib.Path(known.run_log or logroot / sweep.LOG_NAME),
        status_file=pathlib.Path(known.status_file or logroot / sweep.STATUS_NAME),
        eval_args=tuple(shlex.split(known.eval_args)), dry_run=known.dry_run,
        seeds_per_process=_count("--seeds-per-process", known.seeds_per_process, 1), launcher=known.launcher,
        slurm=_slurm_parameters(known))
    _check_launcher(result, known, env)
    _check_paths(result)
    return result


def _count(flag: str, text: str, smallest: int) -> int:
    """A flag's whole-number value; SweepError unless it is at least `smallest`."""
    if not text.isdigit() or int(text) < smallest:
        raise sweep.SweepError(f"{flag} {text}: give a whole number, {smallest} or more")
    return int(text)


def _slurm_parameters(known: argparse.Namespace) -> dict[str, Any]:
    """The submitit AutoExecutor parameters of the --slurm-* flags given; SweepError for a malformed value."""
    parameters: dict[str, Any] = {}
    for flag, name, smallest, _, _ in SLURM_FLAGS:
        value = getattr(known, _dest(flag))
        if value is not None:
            parameters[name] = value if smallest is None else _count(flag, value, smallest)
    if known.slurm_setup:
        parameters["slurm_setup"] = list(known.slurm_setup)
    if known.slurm_param:
        bad = [text for text in known.slurm_param if "=" not in text or text.startswith("=")]
        if bad:
            raise sweep.SweepError(f"--slurm-param {bad[0]!r} is not KEY=VALUE; write e.g. --slurm-param "
                                   "account=myproject")
        parameters["slurm_additional_parameters"] = dict(text.split("=", 1) for text in known.slurm_param)
    return parameters


def _dest(flag: str) -> str:
    """The attribute argparse stores a flag's value under."""
    return flag[2:].replace("-", "_")


def _check_launcher(options: Options, known: argparse.Namespace, env: Mapping[str, str]) -> None:
    """Refuse cluster settings without a cluster launcher, and a cluster launcher that cannot submit."""
    given = [flag for flag in (*(f[0] for f in SLURM_FLAGS), "--slurm-setup", "--slurm-param")
             if getattr(known, _dest(flag)) is not None]
    if options.launcher == "local":
        if given:
            raise sweep.SweepError(f"{given[0]} is a setting of cluster jobs; add --launcher slurm, or drop it")
        return
    if "timeout_min" not in options.slurm:
        raise sweep.SweepError(f"--launcher {options.launcher} needs --slurm-time MINUTES, each job's time limit "
                               "(without it submitit gives jobs 5 minutes)")
    try:
        importlib.import_module("submitit")
    except ImportError:
        raise sweep.SweepError(f"--launcher {options.launcher} needs submitit, which is not installed; "
                               "pip install 'dreamer_jax[cluster]'") from None
    missing = [command for command in ("sbatch", "srun") if not shutil.which(command, path=env.get("PATH", ""))]
    if options.launcher == "slurm" and missing:
        raise sweep.SweepError(f"--launcher slurm: no {' or '.join(missing)} on PATH; run the sweep where SLURM's "
                               "commands are (a login node), or use --launcher local")


def _seeds(flag: list[str] | None, env: Mapping[str, str]) -> tuple[int, ...]:
    """The seeds from --seeds, else from $SEEDS, else the default."""
    if flag:
        return sweep.parse_seeds(flag)
    return sweep.parse_seeds([env["SEEDS"]], "SEEDS") if "SEEDS" in env else sweep.DEFAULT_SEEDS


def _check_paths(options: Options) -> None:
    """Refuse a log root that is a file, and a status file that is not ours to overwrite."""
    if options.logroot.exists() and not options.logroot.is_dir():
        raise sweep.SweepError(f"--logroot {options.logroot} is a file; give a directory (it is created if missing)")
    for flag, path in (("--run-log", options.run_log), ("--status-file", options.status_file)):
        if path.is_dir():
            raise sweep.SweepError(f"{flag} {path} is a directory; give a file path")
    if not options.status_file.exists():
        return
    try:
        previous = read_status(options.status_file)
    except (StatusError, UnicodeDecodeError):
        previous = {}
    if "SWEEP_STATE" not in previous:
        raise sweep.SweepError(f"--status-file {options.status_file} exists and is not a sweep status file; pass "
                               "another --status-file, or delete it")
    pid = int(previous.get("SWEEP_PID") or 0)
    if previous["SWEEP_STATE"] == "running" and pid != os.getpid() and pid_alive(pid):
        raise sweep.SweepError(f"another sweep (process {pid}) is running with {options.status_file}; wait for it "
                               "or stop it, or pass another --status-file")


def _wait(proc: subprocess.Popen, seconds: float) -> int | None:
    """The process's exit code, or None if it still runs after `seconds`."""
    try:
        return proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        return None


def _copy_lines(source, sink, last: list[str]) -> None:
    """Copy a child's stderr to `sink` as it comes, keeping its last non-empty line in `last[0]`."""
    for line in source:
        sink.write(line)
        sink.flush()
        last[0] = line.strip() or last[0]


def run_child(argv: tuple[str, ...], stdout, sink, stops: list[int], poll: Callable[[], None] = lambda: None,
              every: float = POLL_S) -> tuple[int, str]:
    """Run `python -m *argv` (its command line first written to `sink`), its stdout to `stdout` (None: ours) and its
    stderr copied to `sink`, calling `poll` every `every` s and passing each signal that lands in `stops` on; its
    exit code and the last line it wrote to stderr."""
    sink.write(f"$ python -m {shlex.join(argv)}\n")
    sink.flush()
    proc = subprocess.Popen([sys.executable, "-m", *argv], stdout=stdout, stderr=subprocess.PIPE, text=True,
                            errors="replace")
    last = [""]
    copier = threading.Thread(target=_copy_lines, args=(proc.stderr, sink, last))
    copier.start()
    forwarded = 0
    while (code := _wait(proc, every)) is None:
        for signum in stops[forwarded:]:  # a scheduler's warning reaches the child as SIGTERM, which stops it too
            proc.send_signal(signum if signum in (signal.SIGINT, signal.SIGTERM) else signal.SIGTERM)
        forwarded = len(stops)
        poll()
    copier.join()
    return code, last[0]


def _failure(code: int, last: str) -> str:
    """The note for a failed step: the error's last line, or how the process ended."""
    if code > 0 and last:
        return last
    how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
    return how + (f"; last output: {last}" if last else "")


def _ending(code: int, last: str, stops: list[int], note: str) -> tuple[str, str]:
    """A finished step's state and note: done with `note`, stopped by a signal in `stops`, or failed with its error."""
    if stops:
        return "stopped", f"stopped by signal {stops[0]}"
    return ("done", note) if code == 0 else ("failed", _failure(code, last))


def requeue_signal() -> signal.Signals:
    """The signal by which submitit learns that its job is about to time out or is preempted (SIGUSR2 unless
    SUBMITIT_PREEMPT_SIGNAL names another)."""
    return getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"))


class SweepJob:
    """A cluster job's work: train a group (`train` is its experiments.train argv; empty: trained before), then
    evaluate each run that needs it; the training's (state, note) or None, and each evaluation's.

    Checkpointable in submitit's sense: at the scheduler's warning of the time limit, or at a preemption, the step
    under way stops (training saves a checkpoint) and submitit requeues the job, which resumes that training from
    its checkpoint; a training that had ended is not run again.
    """

    def __init__(self):
        self.trained: tuple[str, str] | None = None  # how the training ended, kept across requeues

    def __call__(self, train: tuple[str, ...], train_note: str, logdirs: tuple[str, ...], eval_args: tuple[str, ...]
                 ) -> tuple[tuple[str, str] | None, list[tuple[str, str]]]:
        warning = requeue_signal()
        with stop_requests((signal.SIGINT, signal.SIGTERM, warning)) as stops:
            if train and self.trained is None:
                trained = _ending(*run_child((TRAIN, *train), None, sys.stderr, stops, every=JOB_POLL_S), stops,
                                  train_note)
                self.trained = None if stops else trained
            else:
                trained = self.trained
            evaluations = []
            for logdir in logdirs:
                skip = sweep.eval_skip_reason(logdir)
                if stops:
                    evaluations.append(("pending", ""))
                elif skip:
                    evaluations.append(("skipped", skip))
                else:
                    code, last = run_child((EVAL, "--logdir", logdir, *eval_args), None, sys.stderr, stops,
                                           every=JOB_POLL_S)
                    evaluations.append(_ending(code, last, stops, ""))
        if warning in stops and callable(signal.getsignal(warning)):
            signal.raise_signal(warning)  # to submitit's handler, now back: it calls `checkpoint` and requeues
        return trained, evaluations

    def checkpoint(self, *args) -> Any:
        """What submitit requeues: this job (with how its training ended) and the same arguments."""
        return importlib.import_module("submitit").helpers.DelayedSubmission(self, *args)


def _head(runs: tuple[sweep.Run, ...], total: int) -> str:
    """How runs are named in events and listings: (i/N) name, joined by + for a group."""
    return " + ".join(f"({run.index}/{total}) {run.name}" for run in runs)


def _job_error(error: Exception) -> str:
    """The last line of a failed job's error: of the traceback that submitit frames in dashes, else of the message."""
    parts = str(error).split("-" * 22 + "\n")
    text = parts[1] if len(parts) > 2 else str(error)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else error.__class__.__name__


class Sweeper:
    """A planned sweep under way: its ledger, with the status file and bars kept live, and the table at the end;
    `launch` (local or cluster) trains and evaluates the runs."""

    def __init__(self, options: Options, runs: list[sweep.Run], groups: list[sweep.Group], stops: list[int]):
        self.options, self.runs, self.groups, self.stops = options, runs, groups, stops
        settings = {"LOGROOT": options.logroot, "TASK": options.task, "SEEDS": " ".join(map(str, options.seeds)),
                    "CONDITIONS": " ".join(options.conditions), "CONFIGS": " ".join(options.configs),
                    "FLAGS": shlex.join(options.flags), "EVAL_ARGS": shlex.join(options.eval_args),
                    "RUN_LOG": options.run_log, "SEEDS_PER_PROCESS": options.seeds_per_process,
                    "LAUNCHER": options.launcher}
        self.ledger = sweep.Ledger(runs, {k: str(v) for k, v in settings.items()}, groups=groups)
        self.currents: dict[int, sweep.Current] = {}  # the steps at work, by run index (0: the table)
        self.terminal = Panel(sys.stderr)
        self.log = options.run_log.open("a")
        self.log_panel = Panel(self.log, every=LOG_EVERY_S)

    def run(self) -> int:
        """Train and evaluate every run, then build the table; the exit status (see --help)."""
        count = len(self.groups)
        processes = f" in {count} training process{'es' * (count > 1)}" if count < len(self.runs) else ""
        self.event(f"sweep of {len(self.runs)} runs{processes} in {self.options.logroot}, launcher "
                   f"{self.options.launcher}; status {self.options.status_file}, log {self.options.run_log}")
        try:
            self.launch()
            if not self.stops:
                self.table()
        except BaseException as error:
            self.ledger.state, self.ledger.error = "crashed", f"{error.__class__.__name__}: {error}"
            raise
        finally:
            self.finish()
        if self.stops:
            return 128 + self.stops[0]
        bad = ("failed", "stopped")
        return int(any(o.train in bad or o.eval in bad for o in self.ledger.outcomes) or self.ledger.table == "failed")

    def launch(self) -> None:
        """Train and evaluate the runs, as each launcher does."""
        raise NotImplementedError

    def outcome(self, run: sweep.Run) -> sweep.Outcome:
        """What became of the run so far."""
        return self.ledger.outcomes[run.index - 1]

    def head(self, runs: tuple[sweep.Run, ...]) -> str:
        """How events name runs."""
        return _head(runs, len(self.runs))

    def skip_trained(self, group: sweep.Group) -> bool:
        """Record the group's training as skipped if it is finished, and say so; whether it was."""
        step = sweep.latest_checkpoint(group.runs[0].logdir)
        if not sweep.is_finished(group.runs[0]):
            return False
        for run in group.runs:
            outcome = self.outcome(run)
            outcome.train, outcome.train_note = "skipped", f"finished before (checkpoint {step})"
            outcome.step, outcome.total = step, sweep.target_steps(run) or 0
        self.event(f"{self.head(group.runs)}: already trained to step {step}; training skipped")
        return True

    def begin(self, runs: tuple[sweep.Run, ...], phase: str) -> None:
        """Mark the runs as training together (or evaluating, phase eval), from now on."""
        now, first = time.time(), sweep.latest_checkpoint(runs[0].logdir) or 0
        total = (sweep.target_steps(runs[0]) or 0) if phase == "train" else 0
        for run in runs:
            outcome = self.outcome(run)
            setattr(outcome, phase, "running")
            outcome.started = outcome.started or now
            if phase == "train":
                outcome.step, outcome.total = first, total
            self.currents[run.index] = sweep.Current(run.index, phase, now, step=first, total=total, first_step=first)

    def track(self, runs: tuple[sweep.Run, ...], since: float) -> None:
        """Take each training run's step and rate from its own progress.json (written since `since`)."""
        for run in runs:
            current = self.currents.get(run.index)
            progress = sweep.read_progress(run.logdir, since) if current and current.phase == "train" else None
            if progress:
                outcome = self.outcome(run)
                current.step = outcome.step = progress["step"]
                current.total = outcome.total = progress["total"]
                current.rate = progress["env_steps_per_s"]

    def trained(self, runs: tuple[sweep.Run, ...], state: str, note: str) -> None:
        """Record how the runs' training ended (a stopped run's note names its checkpoint), and say so."""
        for run in runs:
            stopped = f" at checkpoint {sweep.latest_checkpoint(run.logdir)}" if state == "stopped" else ""
            self.outcome(run).train, self.outcome(run).train_note = state, note + stopped
            self.currents.pop(run.index, None)
        note = self.outcome(runs[-1]).train_note
        self.event(f"{self.head(runs)}: training {state}" + (f": {note}" if note else ""))

    def evaluated(self, run: sweep.Run, state: str, note: str) -> None:
        """Record how the run's evaluation ended, and say so."""
        self.outcome(run).eval, self.outcome(run).eval_note = state, note
        self.currents.pop(run.index, None)
        self.event(f"{self.head((run,))}: evaluation {state}" + (f": {note}" if note else ""))

    def table(self) -> None:
        """Gather every evaluated run under the log root into the conditions x seeds table."""
        ledger = self.ledger
        if not any((run.logdir / "boundary_eval.json").exists() for run in self.runs):
            ledger.table, ledger.table_note = "skipped", "no run of this sweep has boundary_eval.json"
        else:
            ledger.table, self.currents[0] = "running", sweep.Current(0, "table", time.time())
            code, last = self.child((EVAL, "--logroot", str(self.options.logroot), *self.options.eval_args),
                                    self.refresh)
            names = [str(self.options.logroot / f"boundary_table.{ext}") for ext in ("csv", "md")]
            ledger.table, ledger.table_note = self.ending(code, last, " ".join(names))
            del self.currents[0]
        self.event(f"table {ledger.table}" + (f": {ledger.table_note}" if ledger.table_note else ""))
        self.curves()

    def curves(self) -> None:
        """Draw the learning curves of every run under the log root (experiments.plot): each condition's mean
        with the 95% interval over its seeds, in LOGROOT/curves.png."""
        code, last = self.child((PLOT, "--logroot", str(self.options.logroot)), self.refresh)
        state, note = self.ending(code, last, str(self.options.logroot / "curves.png"))
        self.event(f"curves {state}: {note}")

    def ending(self, code: int, last: str, note: str) -> tuple[str, str]:
        """A finished step's state and note: done with `note`, stopped by our signal, or failed with its error."""
        return _ending(code, last, self.stops, note)

    def child(self, argv: tuple[str, ...], poll: Callable[[], None]) -> tuple[int, str]:
        """Run `python -m *argv` here with its output appended to the run log, calling `poll` every POLL_S and
        passing stop signals on; its exit code and the last line it wrote to stderr."""
        self.log.flush()
        with self.options.run_log.open("a") as sink:
            return run_child(argv, self.log, sink, self.stops, poll)

    def refresh(self, force: bool = False) -> dict[str, Any]:
        """Write the status file and redraw the bars (in the log too when `force`); returns the status fields."""
        self.ledger.current = sweep.leading(self.currents.values())
        fields = self.ledger.fields()
        write_status(self.options.status_file, fields)
        lines = sweep.render(fields)
        self.terminal.show(lines, force=force)
        self.log_panel.show(lines, force=force)
        return fields

    def event(self, text: str) -> None:
        """Say what happened, on the terminal and in the run log, and update the status."""
        line = f"{time.strftime('%H:%M:%S')} {text}"
        self.terminal.message(line)
        self.log_panel.message(line)
        self.refresh()

    def finish(self) -> None:
        """Record how the sweep ended, then print each run's outcome."""
        ledger = self.ledger
        self.currents.clear()
        ledger.ended = time.time()
        if ledger.state == "running":
            ledger.state = "stopped" if self.stops else "done"
            ledger.error = f"stopped by signal {self.stops[0]}; run the same command to resume" if self.stops else ""
        fields = self.refresh(force=True)
        self.terminal.close()
        report = "\n".join(sweep.summary(fields)) + f"\nstatus: {self.options.status_file}\nlog: {self.options.run_log}"
        print(report, flush=True)
        self.log.write(report + "\n")
        self.log.close()


class LocalSweeper(Sweeper):
    """Trains the groups one after another in subprocesses, evaluating each group's runs after it trained."""

    def launch(self) -> None:
        for group in self.groups:
            if self.stops:
                break
            self.train(group)
            for run in group.runs:
                if self.stops:
                    break
                self.evaluate(run)
                self.outcome(run).ended = time.time()

    def train(self, group: sweep.Group) -> None:
        """Train the group's runs unless they are finished; they resume from their latest checkpoint if any."""
        for run in group.runs:
            self.outcome(run).started = time.time()
        if self.skip_trained(group):
            return
        runs, first = group.runs, sweep.latest_checkpoint(group.runs[0].logdir)
        resumed = f"resumed from step {first}" if first is not None else ""
        together = f" {len(runs)} seeds in one process" if len(runs) > 1 else ""
        self.event(f"{self.head(runs)}: training{together}" + (f", {resumed}" if resumed else ""))
        self.begin(runs, "train")
        since = time.time()
        code, last = self.child((TRAIN, *group.argv), lambda: (self.track(runs, since), self.refresh()))
        self.trained(runs, *self.ending(code, last, resumed))

    def evaluate(self, run: sweep.Run) -> None:
        """Judge the run's boundaries if it left a checkpoint that has not been evaluated yet."""
        skip = sweep.eval_skip_reason(run.logdir)
        if skip:
            self.evaluated(run, "skipped", skip)
            return
        self.event(f"{self.head((run,))}: evaluating checkpoint {sweep.latest_checkpoint(run.logdir)}")
        self.begin((run,), "eval")
        code, last = self.child((EVAL, "--logdir", str(run.logdir), *self.options.eval_args), self.refresh)
        self.evaluated(run, *self.ending(code, last, ""))


class ClusterSweeper(Sweeper):
    """Submits every group, with its runs' evaluations, as one submitit job, all at once, then follows the jobs until
    all have ended; a stop cancels the unfinished ones."""

    def __init__(self, options: Options, runs: list[sweep.Run], groups: list[sweep.Group], stops: list[int],
                 executor):
        super().__init__(options, runs, groups, stops)
        self.executor = executor
        # By its importable name, so that submitit pickles a reference to the job's code rather than this script's.
        self.work = importlib.import_module("experiments.sweep").SweepJob

    def launch(self) -> None:
        jobs = {}
        for group in self.groups:
            if self.stops:
                break
            submitted = time.time()
            job = self.submit(group)
            if job is not None:
                jobs[group] = job, submitted
        while jobs and not self.stops:
            for group, (job, submitted) in list(jobs.items()):
                if job.done():
                    del jobs[group]
                    self.collect(group, job)
                else:
                    self.watch(group, job, submitted)
            self.refresh()
            if jobs:
                time.sleep(POLL_S)
        if jobs:
            self.cancel(jobs)

    def submit(self, group: sweep.Group):
        """Submit the group's job (training unless finished, then evaluations); None when it has nothing to do."""
        runs, trained = group.runs, self.skip_trained(group)
        skips = [sweep.eval_skip_reason(run.logdir) for run in runs] if trained else []
        if trained and all(skips):
            for run, skip in zip(runs, skips):
                self.evaluated(run, "skipped", skip)
                self.outcome(run).ended = time.time()
            return None
        first = sweep.latest_checkpoint(runs[0].logdir)
        resumed = f"resumed from step {first}" if first is not None and not trained else ""
        self.executor.update_parameters(name=runs[0].name)
        try:
            job = self.executor.submit(self.work(), () if trained else group.argv, resumed,
                                       tuple(str(run.logdir) for run in runs), self.options.eval_args)
        except Exception as error:  # refused by the scheduler (e.g. an unknown partition): its runs fail, not the sweep
            self.failed(group, f"not submitted: {_job_error(error)}")
            return None
        for run in runs:
            self.outcome(run).job = job.job_id
        work = "evaluate" if trained else "train" + (f" {len(runs)} seeds in one process" if len(runs) > 1 else "")
        self.event(f"{self.head(runs)}: submitted job {job.job_id} to {work}" + (f", {resumed}" if resumed else "")
                   + f"; its log: {job.paths.stderr}")
        return job

    def watch(self, group: sweep.Group, job, submitted: float) -> None:
        """Follow a job that has not ended: its runs are at work once it runs, or once their progress.json moves."""
        runs = group.runs
        if runs[0].index not in self.currents and (
                job.state.upper() in ("RUNNING", "COMPLETING") or sweep.read_progress(runs[0].logdir, submitted)):
            self.begin(runs, "train" if self.outcome(runs[0]).train == "pending" else "eval")
        self.track(runs, submitted)

    def collect(self, group: sweep.Group, job) -> None:
        """Record what an ended job did: its runs' training and evaluations, or its error as their failure."""
        for run in group.runs:
            self.currents.pop(run.index, None)
        try:
            trained, evaluations = job.result()
        except Exception as error:  # the job raised, was cancelled or died: its runs fail, not the sweep
            self.failed(group, f"job {job.job_id}: {_job_error(error)}")
            return
        if trained is not None:
            self.trained(group.runs, *trained)
        for run, (state, note) in zip(group.runs, evaluations):
            if state != "pending":  # pending: the job was stopped before evaluating it
                self.evaluated(run, state, note)
                self.outcome(run).ended = time.time()

    def failed(self, group: sweep.Group, note: str) -> None:
        """Record a job that failed as a whole: the training of its unfinished runs, else their evaluation."""
        for run in group.runs:
            outcome = self.outcome(run)
            training = outcome.train in ("pending", "running")
            if training and not sweep.is_finished(run):
                outcome.train, outcome.train_note = "failed", note
                outcome.eval, outcome.eval_note = "skipped", "its job failed before evaluating"
            else:
                if training:  # its final checkpoint is there: the job failed after training
                    outcome.train = "done"
                outcome.eval, outcome.eval_note = "failed", note
            outcome.ended = time.time()
            self.currents.pop(run.index, None)
        self.event(f"{self.head(group.runs)}: {note}")

    def cancel(self, jobs: dict) -> None:
        """Cancel the jobs that have not ended, recording their runs' unfinished step as stopped. SLURM sends a
        cancelled job's processes SIGTERM; a local job gets it from its controller, whose id is the job's."""
        for group, (job, _) in jobs.items():
            if self.options.launcher == "slurm":
                job.cancel(check=False)
            else:
                os.kill(int(job.job_id), signal.SIGTERM)
            note = f"stopped by signal {self.stops[0]}; job {job.job_id} cancelled"
            for run in group.runs:
                outcome = self.outcome(run)
                phase = "train" if outcome.train in ("pending", "running") else "eval"
                setattr(outcome, phase, "stopped")
                setattr(outcome, f"{phase}_note", note)
                self.currents.pop(run.index, None)
            self.event(f"{self.head(group.runs)}: job {job.job_id} cancelled")


def _executor(options: Options):
    """The submitit executor of the jobs: SLURM's, or local processes for submitit-local."""
    submitit = importlib.import_module("submitit")
    executor = submitit.AutoExecutor(folder=options.logroot / JOBS_DIR,
                                     cluster="slurm" if options.launcher == "slurm" else "local")
    executor.update_parameters(**options.slurm)
    return executor


def _dry_run(options: Options, groups: list[sweep.Group], runs: int) -> None:
    """Print each training process with its runs, their state and its command, and where the status and log go."""
    for group in groups:
        step = sweep.latest_checkpoint(group.runs[0].logdir)
        state = "finished" if sweep.is_finished(group.runs[0]) else (
            f"resumes from step {step}" if step is not None else "new")
        print(f"{_head(group.runs, runs)} [{state}]: python -m {TRAIN} {shlex.join(group.argv)}")
    if options.launcher != "local":
        print(f"{options.launcher} jobs, one per line above, with: "
              + " ".join(f"{key}={value}" for key, value in options.slurm.items()))
    print(f"status: {options.status_file}\nlog: {options.run_log}")


def main(argv: list[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        chosen = parse_options(argv, os.environ if env is None else env)
    except sweep.SweepError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    runs = sweep.plan(chosen.logroot, chosen.task, chosen.conditions, chosen.seeds, chosen.configs, chosen.flags)
    groups = sweep.plan_groups(runs, chosen.seeds_per_process, [sweep.resume_state(run) for run in runs])
    if chosen.dry_run:
        _dry_run(chosen, groups, len(runs))
        return 0
    for path in (chosen.logroot, chosen.run_log.parent, chosen.status_file.parent):
        path.mkdir(parents=True, exist_ok=True)
    with stop_requests() as stops:
        if chosen.launcher == "local":
            return LocalSweeper(chosen, runs, groups, stops).run()
        return ClusterSweeper(chosen, runs, groups, stops, _executor(chosen)).run()


if __name__ == "__main__":
    sys.exit(main())
