"""The sweep's launchers: run the planned training processes and evaluations, locally or as submitit jobs.

`LocalSweeper` runs them one after another in subprocesses (`run_child`); `ClusterSweeper` submits each training
process, with its runs' evaluations, as one `SweepJob` through submitit (`make_executor`). Both keep the ledger
(`dreamer_jax.ledger`), the status file and the bars live, and build the table at the end.
"""

from __future__ import annotations

import importlib
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Callable

from dreamer_jax import sweep, sweep_view
from dreamer_jax.ledger import Current, Ledger, Outcome, leading
from dreamer_jax.progress import Panel
from dreamer_jax.stops import stop_requests
from dreamer_jax.status import write_status

POLL_S = 1.0  # how often the status file and the bars are refreshed while a step runs
JOB_POLL_S = 0.1  # how soon a job passes a stop on (submitit's local executor kills it a second after signalling)
LOG_EVERY_S = 30.0  # how often the bars are copied into the run log
TRAIN, EVAL, PLOT = "experiments.train", "experiments.eval_boundaries", "experiments.plot"
LAUNCHERS = ("local", "slurm", "submitit-local")
JOBS_DIR = ".submitit"  # under the log root: the jobs' pickles and logs


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

    def __call__(self, train: tuple[str, ...], train_note: str, logdirs: tuple[str, ...],
                 evals: tuple[tuple[str, ...], ...]) -> tuple[tuple[str, str] | None, list[tuple[str, str]]]:
        warning = requeue_signal()
        with stop_requests((signal.SIGINT, signal.SIGTERM, warning)) as stops:
            if train and self.trained is None:
                trained = _ending(*run_child((TRAIN, *train), None, sys.stderr, stops, every=JOB_POLL_S), stops,
                                  train_note)
                self.trained = None if stops else trained
            else:
                trained = self.trained
            evaluations = []
            for logdir, eval_argv in zip(logdirs, evals):
                skip = sweep.eval_skip_reason(logdir)
                if stops:
                    evaluations.append(("pending", ""))
                elif skip:
                    evaluations.append(("skipped", skip))
                else:
                    code, last = run_child((EVAL, *eval_argv), None, sys.stderr, stops,
                                           every=JOB_POLL_S)
                    evaluations.append(_ending(code, last, stops, ""))
        if warning in stops and callable(signal.getsignal(warning)):
            signal.raise_signal(warning)  # to submitit's handler, now back: it calls `checkpoint` and requeues
        return trained, evaluations

    def checkpoint(self, *args) -> Any:
        """What submitit requeues: this job (with how its training ended) and the same arguments."""
        return importlib.import_module("submitit").helpers.DelayedSubmission(self, *args)


def heading(runs: tuple[sweep.Run, ...], total: int) -> str:
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

    def __init__(self, options: sweep.Options, runs: list[sweep.Run], groups: list[sweep.Group], stops: list[int]):
        self.options, self.runs, self.groups, self.stops = options, runs, groups, stops
        settings = {"LOGROOT": options.logroot, "TASK": options.task, "SEEDS": " ".join(map(str, options.seeds)),
                    "CONDITIONS": " ".join(options.conditions), "CONFIGS": " ".join(options.configs),
                    "FLAGS": shlex.join(options.flags), "EVAL_ARGS": shlex.join(options.eval_args),
                    "EVAL_BASELINE": options.eval_baseline or "",
                    "RUN_LOG": options.run_log, "SEEDS_PER_PROCESS": options.seeds_per_process,
                    "LAUNCHER": options.launcher}
        self.ledger = Ledger(runs, {k: str(v) for k, v in settings.items()}, groups=groups)
        self.currents: dict[int, Current] = {}  # the steps at work, by run index (0: the table)
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

    def outcome(self, run: sweep.Run) -> Outcome:
        """What became of the run so far."""
        return self.ledger.outcomes[run.index - 1]

    def head(self, runs: tuple[sweep.Run, ...]) -> str:
        """How events name runs."""
        return heading(runs, len(self.runs))

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
            self.currents[run.index] = Current(run.index, phase, now, step=first, total=total, first_step=first)

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

    def eval_argv(self, run: sweep.Run) -> tuple[str, ...]:
        """The flags of the run's evaluation (its --logdir, its baseline's, the sweep's --eval-args)."""
        return sweep.eval_argv(run, self.runs, self.options.eval_args, self.options.eval_baseline)

    def table(self) -> None:
        """Gather every evaluated run under the log root into the conditions x seeds table."""
        ledger = self.ledger
        if not any((run.logdir / sweep.EVAL_RESULT).exists() for run in self.runs):
            ledger.table, ledger.table_note = "skipped", "no run of this sweep has boundary_eval.json"
        else:
            ledger.table, self.currents[0] = "running", Current(0, "table", time.time())
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
        self.ledger.current = leading(self.currents.values())
        fields = self.ledger.fields()
        write_status(self.options.status_file, fields)
        lines = sweep_view.render(fields)
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
        report = "\n".join(sweep_view.summary(fields)) + \
            f"\nstatus: {self.options.status_file}\nlog: {self.options.run_log}"
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
        code, last = self.child((EVAL, *self.eval_argv(run)), self.refresh)
        self.evaluated(run, *self.ending(code, last, ""))


class ClusterSweeper(Sweeper):
    """Submits every group, with its runs' evaluations, as one submitit job, all at once, then follows the jobs until
    all have ended; a stop cancels the unfinished ones."""

    def __init__(self, options: sweep.Options, runs: list[sweep.Run], groups: list[sweep.Group], stops: list[int],
                 executor):
        super().__init__(options, runs, groups, stops)
        self.executor = executor

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
            job = self.executor.submit(SweepJob(), () if trained else group.argv, resumed,
                                       tuple(str(run.logdir) for run in runs),
                                       tuple(self.eval_argv(run) for run in runs))
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


def make_executor(options: sweep.Options):
    """The submitit executor of the jobs: SLURM's, or local processes for submitit-local."""
    submitit = importlib.import_module("submitit")
    executor = submitit.AutoExecutor(folder=options.logroot / JOBS_DIR,
                                     cluster="slurm" if options.launcher == "slurm" else "local")
    executor.update_parameters(**options.slurm)
    return executor
