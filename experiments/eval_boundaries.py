"""Judge a run's learned boundaries against pinpad's ground-truth events: metrics and figures.

    python -m experiments.eval_boundaries --logdir RUN [--policy scripted] [--episodes 20]
    python -m experiments.eval_boundaries --logroot ROOT      # every run below, one table

Writes RUN/boundary_eval.json, every detector's marks and scores in RUN/boundary_eval.npz (what a study resamples)
and boundary_{grid,internal,fired,peth}.png (or into --out).
The model is rebuilt from the run's saved configuration and its newest checkpoint that restores
(a damaged one is skipped with a warning). An RSSM run is scored by its surprise, KL(post || prior),
thresholded at the pad-event count; `--baseline-logdir RSSM_RUN` adds that baseline to a VTA evaluation.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import jax

import pinpad
from dreamer_jax import config as cfg, sweep
from dreamer_jax.boundaries import analysis, figures, metrics, table
from dreamer_jax.run import blocking_file
from dreamer_jax.status import write_atomic
from dreamer_jax.train import release_programs
from experiments.envs import make_env

RESULT = sweep.EVAL_RESULT
SETTINGS = ("step", "episodes", "length", "policy", "random_rate", "source", "boundaries", "constraints", "tolerance",
            "resamples", "delta_percentile", "bootstrap", "seed", "baseline_logdir")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m experiments.eval_boundaries", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--logdir", type=pathlib.Path, help="the run directory to evaluate")
    where.add_argument("--logroot", type=pathlib.Path,
                       help="evaluate every run below this folder and write boundary_table.{csv,md} into it")
    p.add_argument("--episodes", type=int, default=20, help="evaluation episodes")
    p.add_argument("--length", type=int, default=None, help="steps per episode (default: the run's time_limit)")
    p.add_argument("--policy", choices=sweep.EVAL_POLICIES, default="agent",
                   help="who acts: the trained agent, uniform random actions, or the scripted pinpad solver")
    p.add_argument("--random_rate", type=float, default=0.1, help="rate of random moves of the scripted solver")
    p.add_argument("--source", choices=("posterior", "prior"), default="posterior",
                   help="which boundary to score: the posterior's, or the one the prior predicts (imagination)")
    p.add_argument("--boundaries", choices=analysis.BOUNDARIES, default="mode",
                   help="which boundary to judge: the model's deterministic one (READ where q > 0.5), or one noisy "
                        "draw of it as in training (changes with --seed)")
    p.add_argument("--constraints", action="store_true",
                   help="apply the VTA's segment constraints and posterior forcing while evaluating (off: the "
                        "model's own boundaries)")
    p.add_argument("--tolerance", type=int, nargs="+", default=[0, 1, 2], help="matching tolerances in steps")
    p.add_argument("--resamples", "--permutations", dest="resamples", type=int, default=999,
                   help="resamples of each null distribution (--permutations is the prototype's name)")
    p.add_argument("--delta_percentile", type=float, default=90.0,
                   help="frame_delta events: steps above this percentile of frame difference")
    p.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples (over episodes) per interval")
    p.add_argument("--seed", type=int, default=0, help="seed of the episodes, the model's sampling and the nulls")
    p.add_argument("--step", type=int, default=None, help="checkpoint step to load (default: the latest)")
    p.add_argument("--baseline-logdir", "--baseline_logdir", dest="baseline_logdir", type=pathlib.Path, default=None,
                   help="an RSSM run of the same task whose surprise is scored as a baseline")
    p.add_argument("--out", type=pathlib.Path, default=None, help="folder for the JSON and figures (default: the run)")
    p.add_argument("--out_json", type=pathlib.Path, default=None, help="path of the JSON (default: OUT/" + RESULT + ")")
    p.add_argument("--force", action="store_true", help="with --logroot: re-evaluate runs that have a result")
    return p


def check(args: argparse.Namespace) -> None:
    """Refuse values that cannot be evaluated, before any work."""
    bad = [(args.episodes < 1, "--episodes must be at least 1"),
           (args.length is not None and args.length < 2, "--length must be at least 2"),
           (not 0 <= args.random_rate <= 1, "--random_rate must be in [0, 1]"),
           (min(args.tolerance) < 0, "--tolerance values must be 0 or more"),
           (args.resamples < 1, "--resamples must be at least 1"),
           (not 0 < args.delta_percentile < 100, "--delta_percentile must be in (0, 100)"),
           (args.bootstrap < 1, "--bootstrap must be at least 1"),
           (args.logroot is not None and args.step is not None, "--step applies to one run; drop it with --logroot"),
           (args.logroot is not None and (args.out or args.out_json), "--out and --out_json apply to one run; "
                                                                      "with --logroot results go beside each run")]
    for failed, message in bad:
        if failed:
            raise analysis.RunError(message)


def settings(args: argparse.Namespace, step: int) -> dict:
    """What decides a result, recorded in it so that --logroot knows when a stored result still holds."""
    values = {**vars(args), "step": step}
    values["baseline_logdir"] = str(args.baseline_logdir) if args.baseline_logdir else None
    values["tolerance"] = list(args.tolerance)
    return {**{k: values[k] for k in SETTINGS}, "format": metrics.FORMAT}


def _env(config: cfg.Config, length: int | None):
    try:
        return make_env(config, length)
    except ValueError as error:
        raise analysis.RunError(f"the run's task cannot be built: {error}") from error


def evaluate(logdir: pathlib.Path, args: argparse.Namespace):
    """Collect, filter and score one run: (trace, detections, result)."""
    config = analysis.load_config(logdir)
    env = _env(config, args.length)
    run = analysis.load_run(logdir, env, args.step)
    if config.dynamics != "vta" and (args.source == "prior" or args.constraints):
        raise analysis.RunError(f"{logdir} is an RSSM run: it has no boundaries, so --source prior and "
                               "--constraints do not apply; drop them (its surprise is scored)")
    if args.policy == "agent" and config.vta_lookahead > 0:
        raise analysis.RunError(f"{logdir} has a non-causal boundary posterior (vta_lookahead "
                               f"{config.vta_lookahead}), which cannot act; use --policy scripted or random")
    policy = pinpad.ScriptedPolicy(env, args.random_rate) if args.policy == "scripted" else args.policy
    key = jax.random.PRNGKey(args.seed)
    collect_key, filter_key = jax.random.split(key)
    data = analysis.collect(run, env, args.episodes, collect_key, policy)
    trace = analysis.trace(run, data, filter_key, args.constraints, args.boundaries)
    surprise = None
    if args.baseline_logdir:
        baseline_config = analysis.load_config(args.baseline_logdir)
        if baseline_config.dynamics != "rssm" or baseline_config.task != config.task:
            raise analysis.RunError(f"--baseline-logdir {args.baseline_logdir} is a {baseline_config.dynamics} run "
                                   f"of {baseline_config.task}; it must be an RSSM run of {config.task}")
        baseline = analysis.load_run(args.baseline_logdir, env)
        surprise = analysis.trace(baseline, data, filter_key).kl_obs
    detections = metrics.detect(trace, args.source, args.delta_percentile, args.seed, surprise)
    result = metrics.score(detections, tuple(args.tolerance), args.resamples, args.bootstrap, args.seed)
    result = {"logdir": str(logdir), "dynamics": config.dynamics, "task": config.task,
              "boundaries": args.boundaries, "settings": settings(args, run.step), **result,
              "config": cfg.to_dict(config)}
    return trace, detections, result


def write(trace, detections: metrics.Detections, result: dict, out: pathlib.Path, out_json: pathlib.Path,
          source: str) -> list[pathlib.Path]:
    """The detections, the figures and the JSON (atomically, last: its presence says the evaluation is complete)."""
    out.mkdir(parents=True, exist_ok=True)
    out_json.parent.mkdir(parents=True, exist_ok=True)
    arrays = sweep.detections_path(out_json)
    partial = arrays.with_name(f".{arrays.name}.partial.npz")
    detections.save(partial)
    partial.replace(arrays)
    drawn = figures.save_figures(trace, out, result=result, source=source).values()
    write_atomic(out_json, json.dumps(result, indent=1, allow_nan=False))
    return [out_json, arrays, *drawn]


def judged(argv: list[str]) -> tuple[dict, bool]:
    """A run's evaluation with these flags (its --logdir and --out): the stored one if it is current, else computed
    and written; (the result, whether it was computed now)."""
    args = parser().parse_args(argv)
    check(args)
    return _judged(args, args.logdir, *outputs(args))


def outputs(args: argparse.Namespace) -> tuple[pathlib.Path, pathlib.Path]:
    """(the folder of the figures, the JSON's path) of one run's evaluation, checked before any work: a run directory
    at all, and paths that no file blocks."""
    analysis.load_config(args.logdir)
    out = args.out or args.logdir
    out_json = args.out_json or out / RESULT
    for path in (out, out_json.parent):
        file = blocking_file(path)
        if file:
            raise analysis.RunError(f"{file} is a file; give --out / --out_json a folder path that is not a file")
    if out_json.is_dir():
        raise analysis.RunError(f"{out_json} is a folder; give --out_json the path of a file (it is replaced)")
    return out, out_json


def _judged(args: argparse.Namespace, logdir: pathlib.Path, out: pathlib.Path, path: pathlib.Path) -> tuple[dict, bool]:
    """`judged` of one run with parsed flags: its result in `path`, the figures in `out`."""
    result = stored(logdir, args, path)
    if result is not None:
        return result, False
    trace, detections, result = evaluate(logdir, args)
    write(trace, detections, result, out, path, args.source)
    release_programs()  # each run compiles its own; keep the process's memory maps bounded
    return result, True


def one(args: argparse.Namespace) -> int:
    """Evaluate the run in --logdir and write its JSON and figures; every path is checked before any work."""
    out, out_json = outputs(args)
    trace, detections, result = evaluate(args.logdir, args)
    for path in write(trace, detections, result, out, out_json, args.source):
        print(path)
    print(summary_line(result))
    return 0


def show_p(log10_p: float) -> str:
    """A p-value given as log10, for the terminal: 3 digits, or 10^x where the p-value underflows a float."""
    p = 10 ** log10_p
    return f"{p:.3g}" if p > 0 else f"10^{log10_p:.1f}"


def summary_line(result: dict) -> str:
    """The headline numbers of a result, for the terminal: pad events (the circular-shift p respects runs of steps;
    the hypergeometric takes steps as exchangeable) and, where the env splits them, progress against distractor pads."""
    pad = result["events"]["pad"]["all"]
    show = lambda v: "n/a" if v is None else f"{v:.3g}"  # noqa: E731
    line = (f"{result['boundary_count']} boundaries ({result['forced_count']} forced); pad events: lift "
            f"{show(pad['lift_over_event_rate'])}, circular-shift p {show_p(pad['circular_shift_log10_p'])}, "
            f"hypergeometric p (exchangeable steps) {show_p(pad['hypergeom_log10_p'])}, "
            f"F1@1 {show(pad['tolerance'].get('1', {}).get('f1'))}")
    split = (result.get("progress_vs_distractor") or {}).get("model")
    if split:
        line += (f"; READ on {show(split['progress_hit_rate'])} of progress pads against "
                 f"{show(split['distractor_hit_rate'])} of distractors (p {show_p(split['progress_log10_p'])})")
    return line


def runs_below(root: pathlib.Path) -> list[pathlib.Path]:
    """Every run directory (one with config.json) below `root`, sorted."""
    return sorted(p.parent for p in root.rglob("config.json") if "checkpoints" not in p.relative_to(root).parts)


def stored(logdir: pathlib.Path, args: argparse.Namespace, path: pathlib.Path | None = None) -> dict | None:
    """The run's stored result (in `path`, default the run's RESULT) if it was computed with these settings from its
    latest checkpoint, with its detections beside it; without --baseline-logdir, one computed with a baseline holds too (a sweep's --eval-baseline
    adds it per run)."""
    path = path or logdir / RESULT
    if args.force or not path.exists() or not sweep.detections_path(path).exists():
        return None
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    step = sweep.latest_checkpoint(logdir)
    return None if settings_diff(result, args, -1 if step is None else step) else result


def settings_diff(result: dict, args: argparse.Namespace, step: int) -> dict[str, tuple]:
    """Where a stored result's settings differ from those these arguments would judge checkpoint `step` with, as
    name -> (stored, wanted); without --baseline-logdir a stored baseline holds too (it is the caller's to add)."""
    wanted, had = settings(args, step), dict(result.get("settings", {}))
    if args.baseline_logdir is None:
        had["baseline_logdir"] = None
    return {key: (had.get(key), wanted.get(key)) for key in sorted(wanted.keys() | had.keys())
            if had.get(key) != wanted.get(key)}


def gather(args: argparse.Namespace) -> int:
    root = args.logroot
    if not root.is_dir():
        raise analysis.RunError(f"--logroot {root} is not a folder; pass the folder that holds the run directories")
    found = runs_below(root)
    if not found:
        raise analysis.RunError(f"no runs below {root} (no config.json); pass the folder the sweep or training wrote")
    rows, skipped = [], []
    for i, logdir in enumerate(found, 1):
        name = str(logdir.relative_to(root))
        print(f"({i}/{len(found)}) {name}", flush=True)
        try:
            result, _ = _judged(args, logdir, logdir, logdir / RESULT)
        except analysis.RunError as error:
            print(f"  skipped: {error}", flush=True)
            skipped.append((name, str(error)))
            continue
        print("  " + summary_line(result), flush=True)
        rows.append(table.row(logdir.name, result["config"], result))
    for path in table.write(rows, root, skipped):
        print(path)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        check(args)
        return gather(args) if args.logroot else one(args)
    except analysis.RunError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
