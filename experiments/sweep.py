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
import importlib
import os
import pathlib
import shlex
import shutil
import sys
from typing import Any, Mapping

import pinpad
from dreamer_jax import config as cfg, sweep
from dreamer_jax.stops import stop_requests
from dreamer_jax.status import StatusError, pid_alive, read_status
from experiments import launchers

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


def _parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    """The sweep's own flags; defaults come from the prototype's environment variables where they are set."""
    parser = argparse.ArgumentParser(
        prog="python -m experiments.sweep", allow_abbrev=False,
        usage="%(prog)s [-h] [--logroot DIR] [--task NAME] [--seeds N [N ...]] [--conditions FILE]\n"
              "       [--skip-rssm] [--configs PRESET [PRESET ...]] [--seeds-per-process K] [--run-log FILE]\n"
              "       [--status-file FILE] [--eval-args FLAGS] [--eval-baseline CONDITION] [--dry-run] "
              f"[--launcher {{{','.join(launchers.LAUNCHERS)}}}]\n"
              "       [--slurm-* VALUE ...] [--TRAINING_FLAG VALUE ...]",
        description="Train every condition with every seed, evaluate each run's boundaries and gather the "
        "conditions x seeds table. Any other --flag is passed to every training run (python -m experiments.train "
        "--help lists them). A failed run is recorded and the sweep goes on; running the same sweep again skips "
        "finished runs and resumes unfinished ones from their checkpoints.",
        epilog="default conditions: " + "; ".join(f"{name}: {' '.join(flags)}" for name, flags in
                                                  sweep.DEFAULT_CONDITIONS.items())
        + ". Launchers: local runs the training processes one after another; slurm submits each, with its runs' "
        "evaluations, as one job through submitit (pip install 'dreamer_jax[cluster]'), all at once, follows them "
        f"and builds the table at the end (jobs' logs in LOGROOT/{launchers.JOBS_DIR}); a stop signal cancels the "
        "unfinished jobs. Exit status: 0 all done, 1 a run, evaluation, job or the table failed or was stopped, 2 "
        "bad input, 128+N stopped by signal N.",
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
        help=f"extra flags for every `python -m {launchers.EVAL} --logdir RUN`, quoted: --eval-args \"--episodes 2\"")
    add("--eval-baseline", metavar="CONDITION",
        help="evaluate every other condition's run with the same seed's run of CONDITION (an RSSM) as "
        "--baseline-logdir, so its surprise is scored beside the boundaries; its runs train first if it is listed "
        "first (the local launcher keeps the order)")
    add("--dry-run", action="store_true", help="list the training processes and their commands, then exit")
    add("--launcher", choices=launchers.LAUNCHERS, default="local",
        help="local: subprocesses, one after another (default); slurm: a SLURM job per training process, all at "
        "once; submitit-local: those jobs as processes on this machine, to try the cluster path")
    add_slurm_flags(parser)
    return parser


def add_slurm_flags(parser: argparse.ArgumentParser) -> None:
    """The --slurm-* flags of cluster jobs (read back by `slurm_parameters` and `check_launcher`)."""
    for flag, _, _, metavar, text in SLURM_FLAGS:
        parser.add_argument(flag, metavar=metavar, help=text)
    parser.add_argument("--slurm-setup", metavar="LINE", action="append",
                        help="shell line run in each job before training, e.g. 'source .venv/bin/activate' "
                        "(repeatable)")
    parser.add_argument("--slurm-param", metavar="KEY=VALUE", action="append",
                        help="any other sbatch option of the jobs, e.g. account=myproject or qos=high (repeatable)")


def _truthy(text: str) -> bool:
    """An environment flag's value as a boolean; SweepError when it is neither."""
    if text.lower() in ("1", "true", "yes"):
        return True
    if text.lower() in ("", "0", "false", "no"):
        return False
    raise sweep.SweepError(f"SKIP_RSSM={text!r} is not a boolean; set it to 1 or 0")


def parse_options(argv: list[str], env: Mapping[str, str]) -> sweep.Options:
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
    eval_args = tuple(shlex.split(known.eval_args))
    if known.eval_baseline is not None and known.eval_baseline not in conditions:
        raise sweep.SweepError(f"--eval-baseline {known.eval_baseline} is not a condition of this sweep "
                               f"({', '.join(conditions)}); name one of them, or drop the flag")
    if known.eval_baseline is not None and any(a.split("=")[0] in ("--baseline-logdir", "--baseline_logdir")
                                               for a in eval_args):
        raise sweep.SweepError("--eval-args sets --baseline-logdir and --eval-baseline sets it per run; drop one")
    logroot = pathlib.Path(known.logroot)
    result = sweep.Options(
        logroot=logroot, task=known.task, seeds=_seeds(known.seeds, env), conditions=conditions,
        configs=tuple(known.configs), flags=tuple(flags),
        run_log=pathlib.Path(known.run_log or logroot / sweep.LOG_NAME),
        status_file=pathlib.Path(known.status_file or logroot / sweep.STATUS_NAME),
        eval_args=eval_args, eval_baseline=known.eval_baseline, dry_run=known.dry_run,
        seeds_per_process=_count("--seeds-per-process", known.seeds_per_process, 1), launcher=known.launcher,
        slurm=slurm_parameters(known))
    check_launcher(result, known, env)
    check_paths(result)
    return result


def _count(flag: str, text: str, smallest: int) -> int:
    """A flag's whole-number value; SweepError unless it is at least `smallest`."""
    if not text.isdigit() or int(text) < smallest:
        raise sweep.SweepError(f"{flag} {text}: give a whole number, {smallest} or more")
    return int(text)


def slurm_parameters(known: argparse.Namespace) -> dict[str, Any]:
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


def check_launcher(options: sweep.Options, known: argparse.Namespace, env: Mapping[str, str]) -> None:
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


def check_paths(options: sweep.Options) -> None:
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



def _dry_run(options: sweep.Options, groups: list[sweep.Group], runs: int) -> None:
    """Print each training process with its runs, their state and its command, and where the status and log go."""
    for group in groups:
        step = sweep.latest_checkpoint(group.runs[0].logdir)
        state = "finished" if sweep.is_finished(group.runs[0]) else (
            f"resumes from step {step}" if step is not None else "new")
        print(f"{launchers.heading(group.runs, runs)} [{state}]: python -m {launchers.TRAIN} {shlex.join(group.argv)}")
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
            return launchers.LocalSweeper(chosen, runs, groups, stops).run()
        return launchers.ClusterSweeper(chosen, runs, groups, stops, launchers.make_executor(chosen)).run()


if __name__ == "__main__":
    sys.exit(main())
