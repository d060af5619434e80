"""The plan of a sweep of training runs, conditions x seeds: conditions, seeds, runs, seed groups, where each stands.

The library half of `python -m experiments.sweep` (which trains and evaluates the planned runs in subprocesses, or
in cluster jobs, see `experiments.launchers`) and `python -m experiments.monitor` (which draws
`dreamer_jax.sweep_view.render(read_status(file))`). In a notebook: `plan(...)` lists a sweep's runs,
`plan_groups(...)` the training processes that train them, `is_finished(run)` says which are done,
`dreamer_jax.status.read_status` reads a live sweep's status (its fields are listed in `dreamer_jax.ledger`).
Imports no JAX.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
import shlex
from typing import Any, Hashable, Iterable, Mapping, Sequence

from dreamer_jax import config as cfg

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
EVAL_RESULT = "boundary_eval.json"  # each run's judgement, written by experiments.eval_boundaries
EVAL_POLICIES = ("scripted", "random", "agent")  # who acts in the episodes a run's boundaries are judged on
RECORD_FINAL = "final.json"  # in a run's record: its final measures, written last (benchmarks/campaign.py)
RESERVED = ("--logdir", "--seed", "--task", "--num_seeds")  # set per run (or seed group) by the sweep

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")


@dataclasses.dataclass(frozen=True)
class Options:
    """The sweep asked for, after checking (`experiments.sweep.parse_options` builds it from the command line)."""

    logroot: pathlib.Path
    task: str
    seeds: tuple[int, ...]
    conditions: dict[str, tuple[str, ...]]
    configs: tuple[str, ...]
    flags: tuple[str, ...]
    run_log: pathlib.Path
    status_file: pathlib.Path
    eval_args: tuple[str, ...]
    eval_baseline: str | None  # the condition whose same-seed run is every other run's --baseline-logdir
    dry_run: bool
    seeds_per_process: int
    launcher: str
    slurm: dict[str, Any]  # submitit AutoExecutor parameters of the jobs


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


def record_dir(records: str | os.PathLike, task: str, condition: str, seed: int) -> pathlib.Path:
    """The folder of a finished run's record (the campaign's): RECORDS/TASK/CONDITION/seedK; its RECORD_FINAL is
    written last."""
    return pathlib.Path(records) / task / condition / f"seed{seed}"


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
    """Whether the run's boundary_eval.json was written after its newest checkpoint, in the current format."""
    from dreamer_jax.boundaries.metrics import FORMAT  # scipy and the model: only once a sweep evaluates

    logdir = pathlib.Path(logdir)
    step, result = latest_checkpoint(logdir), logdir / EVAL_RESULT
    if step is None or not result.exists() or \
            result.stat().st_mtime < (logdir / "checkpoints" / str(step)).stat().st_mtime:
        return False
    try:
        return json.loads(result.read_text()).get("settings", {}).get("format") == FORMAT
    except (OSError, ValueError):
        return False


def resume_state(run: Run) -> tuple[int | None, bool]:
    """Where a run stands for training: its newest checkpoint's step and whether it is finished."""
    return latest_checkpoint(run.logdir), is_finished(run)


def eval_result(logdir: str | os.PathLike, policy: str = EVAL_POLICIES[0]) -> pathlib.Path:
    """Where a run's evaluation on one policy's episodes is kept: the scripted solver's beside the run (a sweep's),
    any other in RUN/eval_POLICY/."""
    logdir = pathlib.Path(logdir)
    return logdir / EVAL_RESULT if policy == EVAL_POLICIES[0] else logdir / f"eval_{policy}" / EVAL_RESULT


def detections_path(result: str | os.PathLike) -> pathlib.Path:
    """Where an evaluation's detections (every detector's marks and scores) are saved: beside its JSON, as .npz."""
    return pathlib.Path(result).with_suffix(".npz")


def eval_argv(run: Run, runs: Sequence[Run], eval_args: Sequence[str], baseline: str | None = None
              ) -> tuple[str, ...]:
    """The flags of a run's `python -m experiments.eval_boundaries`: its --logdir; with a `baseline` condition, its
    seed's run of that condition as --baseline-logdir (an RSSM's surprise as a baseline; not for the baseline's own
    runs); then the sweep's `eval_args`."""
    argv = ["--logdir", str(run.logdir)]
    if baseline is not None and run.condition != baseline:
        partner = next(r for r in runs if r.condition == baseline and r.seed == run.seed)
        argv += ["--baseline-logdir", str(partner.logdir)]
    return (*argv, *eval_args)


def eval_skip_reason(logdir: str | os.PathLike) -> str:
    """Why the run's boundaries need no evaluation now (no checkpoint, or evaluated since the newest); empty if
    they do."""
    step = latest_checkpoint(logdir)
    if step is None:
        return f"no checkpoint in {pathlib.Path(logdir) / 'checkpoints'}"
    return f"{EVAL_RESULT} is newer than checkpoint {step}" if eval_is_current(logdir) else ""


def read_progress(logdir: str | os.PathLike, since: float = 0.0) -> dict[str, Any] | None:
    """The progress.json a training run writes after each chunk, if one was written at or after `since`."""
    try:
        progress = json.loads((pathlib.Path(logdir) / "progress.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return progress if progress.get("time", 0.0) >= since else None
