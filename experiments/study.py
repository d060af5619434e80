"""The prototype's experiment, answered: do VTA boundaries learned inside DreamerV3 line up with pinpad's events, and
does the agent learn? RSSM and VTA conditions x seeds on pinpad_three, judged with stratified statistics.

    make study                                   # = python -m experiments.study (about 14 hours on 2 cores; resumable)
    python -m experiments.study --report         # rewrite the report from the runs already there
    python -m experiments.monitor --status-file runs/study/pinpad_status.env      # follow the training

Three steps; each skips what is done, so running the study again resumes it:
1. `python -m experiments.sweep` trains every condition (RSSM, the prototype's VTA conditions, ours: `vta_batch_rate`;
   the setting chooses which), the seeds of a condition side by side in one process, at the `pinpad_cpu` preset (the
   learning benchmark's CPU setting) for --steps env steps, and judges each run's boundaries on episodes of the
   scripted solver (event-rich, the same data for every model) with the same seed's RSSM run's surprise as a
   baseline: RUN/boundary_eval.json;
2. the same judgement on episodes of the run's own agent: RUN/eval_agent/boundary_eval.json;
3. the report: OUT/study.md (the question, the setup, tables with 95% intervals over seeds, a reading), OUT/study.json
   (the numbers behind it) and the figures in OUT/study/ (learning curves, peri-event histograms).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import itertools
import json
import math
import os
import pathlib
import platform
import shlex
import sys
import time

import jax
import numpy as np

import pinpad
from dreamer_jax import config as cfg, curves, sweep
from dreamer_jax.boundaries import analysis
from dreamer_jax.status import write_atomic
from dreamer_jax.train import release_programs
from experiments import eval_boundaries, sweep as sweep_cli
from experiments.envs import make_env

TASK = "pinpad_three"
BASELINE = sweep.BASELINE  # the RSSM condition: every VTA run's surprise baseline is its seed's run of it
RECOMMENDED = "vta_batch_rate"
# The prototype's four conditions, then ours: the model's own boundaries (no forcing, temperature 1) with the rate
# regulariser on the batch-mean READ probability. The prototype's per-step KL(Bern(q_t) || Bern(rate)) pulls every
# q_t towards the rate, so it penalises exactly the confident READ/COPY decisions that make boundaries informative;
# the batch-mean form only sets how often READ happens (0.1: about the scripted solver's pad-event rate).
CONDITIONS: dict[str, tuple[str, ...]] = {
    **sweep.DEFAULT_CONDITIONS,
    RECOMMENDED: ("--dynamics", "vta", "--vta_max_seg_len", "30", "--vta_boundary_force_scale", "0",
                  "--vta_boundary_temp", "1", "--vta_boundary_rate", "0.1", "--vta_boundary_scale", "0.5",
                  "--vta_rate_mode", "batch"),
}
# Settings: training presets and flags on top, seeds, env steps per run, conditions, and the evaluation's flags (both
# policies). cpu: long enough that agents act (the learning benchmark's RSSM seeds first reached its target at 35k to
# 37.5k env steps), a point of the learning curve and a checkpoint every 2500 env steps (a stopped study loses
# little); RSSM, the two VTA conditions the 5000-step study ranked best, and ours.
SETTINGS = {
    "cpu": dict(configs=("pinpad_cpu",), flags=("--eval_every", "2500", "--log_every", "2500", "--save_every", "2500"),
                seeds=(0, 1, 2), steps=40_000, eval=("--episodes", "16"),
                conditions=(BASELINE, "vta_force0_t2_rate", "vta_force10_t1", RECOMMENDED)),
    "tiny": dict(configs=("debug",), flags=(), seeds=(0,), steps=128, conditions=tuple(CONDITIONS),
                 eval=("--episodes", "2", "--resamples", "19", "--bootstrap", "10")),
}
POLICIES = ("scripted", "agent")
# A run's entry in study.json: these fields, and the headline figures of its evaluations.
RUN_FIELDS = ("condition", "seed", "logdir", "final_step", "final_return")
AGENT_DIR = "eval_agent"  # RUN/eval_agent/boundary_eval.json: the judgement on the agent's own episodes
EVENTS = ("pad", "reward")
SOURCES = (("model", None), ("pixel change", "pixel_change"), ("RSSM surprise", "rssm_surprise"))
METRICS = (("lift", "lift_over_event_rate"), ("log10 p", "hypergeom_log10_p"), ("circular p", "circular_shift_p"),
           ("F1@1", "f1_tau1"), ("AUPRC", "auprc"))
BASELINE_EPISODES = 64
TIMES = "study_time.json"  # LOGROOT/study_time.json: every invocation's wall time and command
FIGURES = "study"  # OUT/study/: the figures


class StudyError(ValueError):
    """A study that cannot run or be reported as asked; the message names the problem and the fix."""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m experiments.study", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--setting", choices=tuple(SETTINGS), default="cpu", help="cpu: the study; tiny: a test of it")
    p.add_argument("--conditions", nargs="+", choices=tuple(CONDITIONS), default=None,
                   help=f"conditions to run (default: the setting's; {BASELINE} is required: it is every VTA run's "
                        "baseline)")
    p.add_argument("--seeds", nargs="+", type=int, default=None, help="seeds (default: the setting's)")
    p.add_argument("--steps", type=int, default=None, help="env steps per run (default: the setting's)")
    p.add_argument("--logroot", type=pathlib.Path, default=pathlib.Path("runs/study"), help="the run directories")
    p.add_argument("--out", type=pathlib.Path, default=pathlib.Path("docs/results"),
                   help="folder of study.md, study.json and the figures (in OUT/study/)")
    p.add_argument("--report", action="store_true", help="only write the report from the runs in --logroot")
    return p


def check(args: argparse.Namespace) -> None:
    """Refuse a study that cannot run, before any work."""
    setting = SETTINGS[args.setting]
    seeds = args.seeds if args.seeds is not None else setting["seeds"]
    steps = args.steps if args.steps is not None else setting["steps"]
    args.conditions = list(args.conditions if args.conditions is not None else setting["conditions"])
    bad = [(BASELINE not in args.conditions, f"--conditions must include {BASELINE}: it is every VTA run's "
                                             "surprise baseline"),
           (len(set(args.conditions)) != len(args.conditions), "--conditions lists a condition twice"),
           (not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds), "--seeds must be distinct, 0 or more"),
           (steps < 1, f"--steps {steps} must be positive"),
           (args.logroot.exists() and not args.logroot.is_dir(), f"--logroot {args.logroot} is a file; give a "
                                                                  "folder"),
           (args.out.exists() and not args.out.is_dir(), f"--out {args.out} is a file; give a folder")]
    for failed, message in bad:
        if failed:
            raise StudyError(message)
    args.seeds, args.steps = tuple(seeds), steps


def training_flags(args: argparse.Namespace) -> tuple[str, ...]:
    """The flags of every training run on top of the presets."""
    return (*SETTINGS[args.setting]["flags"], "--steps", str(args.steps))


def plan(args: argparse.Namespace) -> list[sweep.Run]:
    """The study's runs, as the sweep plans them."""
    conditions = {name: CONDITIONS[name] for name in args.conditions}
    return sweep.plan(args.logroot, TASK, conditions, args.seeds, SETTINGS[args.setting]["configs"],
                      training_flags(args))


def eval_args(setting: str, policy: str) -> tuple[str, ...]:
    """The evaluation flags of every run for one policy (its baseline comes per run)."""
    return ("--policy", policy, *SETTINGS[setting]["eval"])


def train_and_judge(args: argparse.Namespace) -> int:
    """Step 1: the sweep (training, the judgement on scripted episodes with the RSSM baseline, the table)."""
    conditions = args.logroot / "conditions.txt"
    write_atomic(conditions, "".join(f"{name} {shlex.join(CONDITIONS[name])}\n" for name in args.conditions))
    setting = SETTINGS[args.setting]
    argv = ["--logroot", str(args.logroot), "--task", TASK, "--seeds", *map(str, args.seeds), "--conditions",
            str(conditions), "--configs", *setting["configs"], "--seeds-per-process", str(len(args.seeds)),
            "--eval-args", shlex.join(eval_args(args.setting, "scripted")), "--eval-baseline", BASELINE,
            *training_flags(args)]
    print(f"python -m experiments.sweep {shlex.join(argv)}", flush=True)
    return sweep_cli.main(argv)


def judge_agent(args: argparse.Namespace) -> int:
    """Step 2: each run's boundaries on its own agent's episodes (skipped where a current result exists)."""
    runs, failed = plan(args), 0
    for run in runs:
        out = run.logdir / AGENT_DIR
        argv = [*sweep.eval_argv(run, runs, eval_args(args.setting, "agent"), BASELINE), "--out", str(out)]
        options = eval_boundaries.parser().parse_args(argv)
        if eval_boundaries.stored(run.logdir, options, out / eval_boundaries.RESULT) is not None:
            continue
        print(f"{run.name}: judging its boundaries on its agent's episodes", flush=True)
        try:
            trace, result = eval_boundaries.evaluate(run.logdir, options)
        except analysis.RunError as error:
            print(f"  failed: {error}", flush=True)
            failed += 1
            continue
        eval_boundaries.write(trace, result, out, out / eval_boundaries.RESULT, options.source)
        print("  " + eval_boundaries.summary_line(result), flush=True)
        release_programs()  # each run compiles its own; keep the process's memory maps bounded
    return 1 if failed else 0


def record_time(logroot: pathlib.Path, started: str, wall_s: float | None, command: str) -> None:
    """Record an invocation in LOGROOT/study_time.json: at its start (wall time None, which stays if it is killed)
    and again at its end."""
    path = logroot / TIMES
    times = [t for t in (json.loads(path.read_text()) if path.exists() else []) if t["started"] != started]
    times.append({"started": started, "wall_s": None if wall_s is None else round(wall_s, 1), "command": command})
    write_atomic(path, json.dumps(times, indent=1) + "\n")


# -- the report ------------------------------------------------------------------------------------------------------
def _result(path: pathlib.Path, run: sweep.Run, policy: str) -> dict:
    """A run's evaluation for one policy; StudyError if it is missing."""
    if not path.exists():
        raise StudyError(f"{run.name} has no {policy} evaluation ({path}); run the study without --report to make it")
    return json.loads(path.read_text())


def collect(args: argparse.Namespace) -> list[dict]:
    """Per run: condition, seed, learning curve, final return and both evaluations."""
    rows = []
    for run in plan(args):
        if not (run.logdir / "metrics.jsonl").exists():
            raise StudyError(f"{run.name} has not trained ({run.logdir}); run the study without --report first")
        lines = curves.read_metrics(run.logdir)
        steps, returns = curves.series(lines, "eval_return")
        results = {"scripted": _result(run.logdir / eval_boundaries.RESULT, run, "scripted"),
                   "agent": _result(run.logdir / AGENT_DIR / eval_boundaries.RESULT, run, "agent")}
        rows.append({"condition": run.condition, "seed": run.seed, "logdir": str(run.logdir), "lines": lines,
                     "final_step": int(steps[-1]) if steps.size else None,
                     "final_return": float(returns[-1]) if returns.size else None, **results})
    return rows


def metric(result: dict, event: str, source: str | None, name: str) -> float | None:
    """One metric of a run's evaluation: the model's boundaries (source None) or a baseline's, for an event type."""
    block = result["events"][event]["all"] if source is None else result["events"][event]["baselines"].get(source)
    if block is None:
        return None
    value = block.get("tolerance", {}).get("1", {}).get("f1") if name == "f1_tau1" else block.get(name)
    return None if value is None or not math.isfinite(value) else float(value)


def summarise(values: list[float | None]) -> dict:
    """Mean and 95% Student-t interval over seeds of the defined values, with their count."""
    defined = np.array([v for v in values if v is not None], np.float64)
    if defined.size == 0:
        return {"mean": None, "ci95": None, "n": 0}
    mean, low, high = curves.interval(defined)
    return {"mean": float(mean), "ci95": [float(low), float(high)], "n": int(defined.size)}


def numbers(rows: list[dict], conditions: list[str]) -> dict:
    """Per condition: the final return, the boundary rate and every (policy, event, source, metric), summarised over
    seeds, plus the per-seed lift difference of the model over each baseline."""
    out = {}
    for condition in conditions:
        runs = [r for r in rows if r["condition"] == condition]
        entry = {"seeds": [r["seed"] for r in runs], "final_return": summarise([r["final_return"] for r in runs])}
        for policy in POLICIES:
            results = [r[policy] for r in runs]
            entry[f"{policy}_boundary_rate"] = summarise([x["boundary_count"] / x["scored_steps"] for x in results])
            for event in EVENTS:
                for label, source in SOURCES:
                    for _, name in METRICS:
                        entry[f"{policy}/{event}/{label}/{name}"] = summarise(
                            [metric(x, event, source, name) for x in results])
                    if source is not None:
                        lifts = [(metric(x, event, None, "lift_over_event_rate"),
                                  metric(x, event, source, "lift_over_event_rate")) for x in results]
                        entry[f"{policy}/{event}/lift over {label}"] = summarise(
                            [None if None in pair else pair[0] - pair[1] for pair in lifts])
                entry[f"{policy}/{event}/seeds with p < 0.05"] = sum(
                    (metric(x, event, None, "hypergeom_log10_p") or 0.0) < math.log10(0.05) for x in results)
                entry[f"{policy}/{event}/seeds with circular p < 0.05"] = sum(
                    (metric(x, event, None, "circular_shift_p") or 1.0) < 0.05 for x in results)
        out[condition] = entry
    return out


def _cell(summary: dict, digits: int = 3) -> str:
    """mean [low, high] (n/a when no seed defines it; the count when some seeds do not)."""
    if summary["mean"] is None:
        return "n/a"
    show = lambda v: f"{v:.{digits}g}"  # noqa: E731
    text = show(summary["mean"])
    if summary["ci95"] is not None and summary["n"] > 1:
        text += f" [{show(summary['ci95'][0])}, {show(summary['ci95'][1])}]"
    return text


def _table(header: list[str], body: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|",
            *("| " + " | ".join(cells) + " |" for cells in body)]


def _compare(summary: dict, what: str) -> str:
    """How a per-seed difference reads: above, below, or not told apart by its 95% interval."""
    if summary["mean"] is None:
        return f"no {what} to compare"
    if summary["n"] < 2:
        return f"{summary['mean']:+.3g} over {what} (one seed, no interval)"
    low, high = summary["ci95"]
    verdict = "above" if low > 0 else "below" if high < 0 else "not told apart from"
    return f"{verdict} {what} ({summary['mean']:+.3g} [{low:+.3g}, {high:+.3g}])"


def reading(table: dict, baselines: dict, seeds: int) -> list[str]:
    """The findings, stated mechanically from the numbers (intervals over seeds, counts of significant seeds)."""
    lines = []
    for condition, entry in table.items():
        ret = entry["final_return"]
        verdict = "n/a" if ret["mean"] is None else (
            "above the random policy's" if ret["ci95"] and ret["n"] > 1 and ret["ci95"][0] > baselines["random"]
            else "not above the random policy's")
        lines.append(f"- **{condition}**: final return {_cell(ret)}, {verdict} {baselines['random']:.3g} (scripted "
                     f"{baselines['scripted']:.3g}).")
        for policy in POLICIES:
            for event in EVENTS:
                lift = entry[f"{policy}/{event}/model/lift_over_event_rate"]
                parts = [f"lift {_cell(lift)}",
                         f"stratified p < 0.05 in {entry[f'{policy}/{event}/seeds with p < 0.05']} of {seeds} seeds",
                         f"circular-shift p < 0.05 in {entry[f'{policy}/{event}/seeds with circular p < 0.05']}"]
                parts += [_compare(entry[f"{policy}/{event}/lift over {label}"], f"{label}'s lift")
                          for label, source in SOURCES if source is not None]
                lines.append(f"  - {event} events, {policy} episodes: " + "; ".join(parts) + ".")
    return lines


def plot_peth(rows: list[dict], conditions: list[str], out: pathlib.Path) -> pathlib.Path:
    """Boundary rate around events (lag 0: the event's step), mean and 95% interval over seeds, per policy and
    event type."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(POLICIES), len(EVENTS), figsize=(5.5 * len(EVENTS), 3.4 * len(POLICIES)),
                             squeeze=False)
    for (i, policy), (j, event) in itertools.product(enumerate(POLICIES), enumerate(EVENTS)):
        ax = axes[i, j]
        for index, condition in enumerate(conditions):
            peths = [r[policy]["events"][event]["all"]["peth"] for r in rows if r["condition"] == condition]
            rates = np.array([p["read_rate"] for p in peths], np.float64)
            if not np.isfinite(rates).all():
                continue
            lags = np.array(peths[0]["lags"])
            mean, low, high = curves.interval(rates)
            ax.plot(lags, mean, color=f"C{index}", label=condition)
            ax.fill_between(lags, low, high, color=f"C{index}", alpha=0.2)
        ax.axvline(0, color="grey", lw=0.8, ls=":")
        ax.set(title=f"{event} events, {policy} episodes", xlabel="steps from the event", ylabel="boundary rate")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    path = out / "peth.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _versions() -> dict:
    found = {"python": platform.python_version()}
    for name in ("jax", "flax", "optax", "distrax", "numpy", "scipy"):
        found[name] = importlib.metadata.version(name)
    return found


def write_report(args: argparse.Namespace) -> pathlib.Path:
    """Step 3: OUT/study.md, OUT/study.json and the figures in OUT/study/, from the runs and their evaluations."""
    rows = collect(args)
    env = make_env(analysis.load_config(rows[0]["logdir"]))
    key = jax.random.PRNGKey(0)
    baselines = {p: float(pinpad.baseline_return(env, p, BASELINE_EPISODES, key)) for p in ("random", "scripted")}
    table = numbers(rows, args.conditions)
    figures = args.out / FIGURES
    figures.mkdir(parents=True, exist_ok=True)
    groups = {c: [r["lines"] for r in rows if r["condition"] == c] for c in args.conditions}
    curve_path = curves.plot(groups, ["eval_return"], "step", figures / "learning_curves.png",
                             hlines=baselines, title=f"{TASK}, study ({args.setting} setting)")
    peth_path = plot_peth(rows, args.conditions, figures)
    times_path = args.logroot / TIMES
    times = json.loads(times_path.read_text()) if times_path.exists() else []
    evaluation = rows[0]["scripted"]["settings"]
    data = {"task": TASK, "setting": args.setting, "conditions": {c: list(CONDITIONS[c]) for c in args.conditions},
            "seeds": list(args.seeds), "steps": args.steps, "presets": list(SETTINGS[args.setting]["configs"]),
            "baseline_returns": baselines, "baseline_episodes": BASELINE_EPISODES, "summary": table,
            "runs": [{k: r[k] for k in RUN_FIELDS} | {p: _headline(r[p]) for p in POLICIES} for r in rows],
            "evaluation": {p: eval_args(args.setting, p) for p in POLICIES}, "invocations": times,
            "wall_s": sum(t["wall_s"] or 0.0 for t in times), "versions": _versions(),
            "machine": {"platform": platform.platform(), "processor": platform.processor() or "unknown",
                        "cpus": os.cpu_count(), "backend": jax.default_backend()}}
    write_atomic(args.out / "study.json", json.dumps(data, indent=1) + "\n")
    markdown = _markdown(args, data, table, evaluation, [curve_path, peth_path])
    path = args.out / "study.md"
    write_atomic(path, "\n".join(markdown) + "\n")
    return path


def _headline(result: dict) -> dict:
    """The figures of one run's evaluation that the report's tables use (the full JSON stays beside the run)."""
    return {"boundary_count": result["boundary_count"], "scored_steps": result["scored_steps"],
            "checkpoint": result["settings"]["step"],
            **{f"{event}/{label}/{name}": metric(result, event, source, name)
               for event in EVENTS for label, source in SOURCES for _, name in METRICS}}


def _markdown(args, data: dict, table: dict, evaluation: dict, figures: list[pathlib.Path]) -> list[str]:
    """The lines of study.md."""
    preset = cfg.presets()[SETTINGS[args.setting]["configs"][0]]
    seeds = len(args.seeds)
    hours = data["wall_s"] / 3600
    lines = [
        "# Do VTA boundaries line up with pinpad's events, and does the agent learn?",
        "",
        f"Written by `python -m experiments.study{' --report' if args.report else ''}` (`make study`) from the runs in "
        f"`{args.logroot}`; the numbers behind every table are in `study.json`.",
        "",
        "## The question",
        "The prototype trained DreamerV3 with RSSM and with VTA dynamics on pinpad and asked whether the boundaries "
        "VTA learns fall on the task's events (entering a pad, earning a reward) more often than chance and more often "
        "than simple detectors do, and whether the agent learns. Each run's boundaries are judged on the same kind of "
        "episodes for every model (the scripted solver's, full of events) and on its own agent's episodes; the "
        "baselines mark as many steps per episode as the model does: the largest pixel changes, and the largest "
        "surprise KL(posterior || prior) of the same seed's RSSM run.",
        "",
        "## Setup",
        f"- Task `{TASK}`; {_count(seeds, 'seed')} per condition ({', '.join(map(str, args.seeds))}), trained side "
        f"by side in one process; {args.steps} env steps per run.",
        f"- Training flags on top of the preset: `{' '.join(training_flags(args))}`.",
        f"- Preset `{SETTINGS[args.setting]['configs'][0]}`: " + ", ".join(f"{k}={v}" for k, v in preset.items())
        + ".",
        "- Conditions (flags on top of the preset):",
        *(f"  - `{c}`: `{' '.join(CONDITIONS[c])}`" + (" (ours, see below)" if c == RECOMMENDED else "")
          for c in args.conditions),
        f"- Why `{RECOMMENDED}`: the prototype's rate regulariser, KL(Bern(q_t) || Bern(rate)) at every step, pulls "
        "each READ probability towards the rate and so penalises the confident decisions that make boundaries "
        "informative; ours regularises the batch-mean READ probability instead (`--vta_rate_mode batch`), which "
        "only sets how often READ happens, with no forcing and temperature 1 (the model's own boundaries).",
        f"- Evaluation: `python -m experiments.eval_boundaries --policy {{scripted,agent}} "
        f"{' '.join(SETTINGS[args.setting]['eval'])}` with `--baseline-logdir` the same seed's `{BASELINE}` run; "
        f"{evaluation['episodes']} episodes of {evaluation['length'] or 'time_limit'} steps, the "
        f"deterministic boundary (`{evaluation['boundaries']}`), {evaluation['resamples']} circular-shift resamples, "
        f"{evaluation['bootstrap']} bootstrap resamples, tolerance 1 step for F1. p is the exact hypergeometric "
        "p-value stratified by episode, given as log10; lift is over the event rate, stratified by episode.",
        f"- Baseline returns over {data['baseline_episodes']} episodes: random "
        f"{data['baseline_returns']['random']:.3g}, scripted {data['baseline_returns']['scripted']:.3g}. Final "
        "return: each run's last periodic evaluation.",
        "- Intervals: 95% Student-t over seeds (none for one seed).",
        f"- Machine: {data['machine']['platform']}, {data['machine']['cpus']} CPUs, JAX backend "
        f"{data['machine']['backend']}. Versions: " + ", ".join(f"{k} {v}" for k, v in data["versions"].items()) + ".",
        f"- Wall time: {data['wall_s']:.0f} s ({hours:.2f} h) over {_count(len(data['invocations']), 'invocation')}: "
        + "; ".join(f"{t['started']}, " + ("stopped before it recorded its time" if t["wall_s"] is None else
                                          f"{t['wall_s']:.0f} s") + f", `{t['command']}`"
                    for t in data["invocations"]) + ".",
        "",
        "## Headline (pad events, scripted episodes)",
        *_table(["condition", "final return", "boundaries per step", "lift", "log10 p", "circular p", "F1@1",
                 "lift minus pixel change's", "lift minus RSSM surprise's"],
                [[c, _cell(e["final_return"]), _cell(e["scripted_boundary_rate"]),
                  *(_cell(e[f"scripted/pad/model/{name}"]) for _, name in METRICS[:4]),
                  _cell(e["scripted/pad/lift over pixel change"]), _cell(e["scripted/pad/lift over RSSM surprise"])]
                 for c, e in table.items()]),
        "",
        "## Learning curves",
        f"![learning curves]({FIGURES}/{figures[0].name})",
        "",
    ]
    for policy in POLICIES:
        for event in EVENTS:
            lines += [f"## {event.capitalize()} events, {policy} episodes", "",
                      *_table(["condition", "boundaries from", *(label for label, _ in METRICS)],
                              [[c, label, *(_cell(e[f"{policy}/{event}/{label}/{name}"]) for _, name in METRICS)]
                               for c, e in table.items() for label, _ in SOURCES]), ""]
    lines += ["## Boundary rate around events", f"![peri-event histograms]({FIGURES}/{figures[1].name})", "",
              "## Reading", "Stated from the numbers above: a difference is \"above\" or \"below\" only when its 95% "
              "interval over seeds excludes 0.", "", *reading(table, data["baseline_returns"], seeds), "",
              "## Limits",
              f"- CPU scale: {args.steps} env steps per run of one small model; the learning benchmark's RSSM "
              "agents (`pinpad_cpu`) first earned reward after about 30k env steps (docs/results/learning.json). "
              "An agent that has not learned to act makes episodes with few pad and no reward events, so the "
              "judgement on its own episodes rests on few events.",
              f"- One task ({TASK}), {_count(seeds, 'seed')}: intervals over so few seeds are wide, and a condition "
              "that is \"not told apart\" from a baseline may still differ."]
    return lines


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        check(args)
        if not args.report:
            command = " ".join(["python -m experiments.study", *(sys.argv[1:] if argv is None else argv)])
            started, clock = time.strftime("%Y-%m-%d %H:%M:%S"), time.monotonic()
            args.logroot.mkdir(parents=True, exist_ok=True)
            record_time(args.logroot, started, None, command)
            try:
                code = train_and_judge(args) or judge_agent(args)
            finally:
                record_time(args.logroot, started, time.monotonic() - clock, command)
            if code:
                print("the study stopped before its report; run it again to resume", file=sys.stderr)
                return code
        print(write_report(args))
    except (StudyError, analysis.RunError, curves.CurveError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
