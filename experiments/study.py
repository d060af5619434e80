"""The prototype's experiment, answered: do VTA boundaries learned inside DreamerV3 line up with pinpad's events, and
does the agent learn? RSSM and VTA conditions x seeds on pinpad_three, judged with stratified statistics.

    make study                                   # = python -m experiments.study --records docs/results/runs
    python -m experiments.study                  # train and judge the study here (a day or more on 2 cores; resumable)
    python -m experiments.study --report         # rewrite the report from the runs already there
    python -m experiments.monitor --status-file runs/study/pinpad_status.env      # follow the training

`make study` writes the report from the campaign's committed records (`benchmarks/campaign.json` lists the study's
runs; each record carries its evaluations on the three policies' episodes, and the RSSM surprise baseline is added from
the same seed's RSSM record). Without --records, three steps; each skips what is done, so running the study again
resumes it:
1. `python -m experiments.sweep` trains every condition (RSSM, the prototype's VTA conditions, ours: `vta_batch_rate`;
   the setting chooses which), the seeds of a condition side by side in one process, at the `pinpad_cpu` preset (the
   learning benchmark's CPU setting) for --steps env steps, and judges each run's boundaries on episodes of the
   scripted solver (event-rich, the same data for every model) with the same seed's RSSM run's surprise as a
   baseline: RUN/boundary_eval.json and the detections it scored, RUN/boundary_eval.npz;
2. the same judgement on the random policy's and the run's own agent's episodes: RUN/eval_random/ and
   RUN/eval_agent/;
3. the report: OUT/study.md (the question, the setup, tables with per-seed figures and percentile intervals of a
   bootstrap over seeds and episodes, a reading with Holm-corrected comparisons), OUT/study.json (the numbers behind
   it) and the figures in OUT/study/ (learning curves, peri-event histograms).
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
from typing import NamedTuple

import jax
import numpy as np

import pinpad
from dreamer_jax import config as cfg, curves, sweep
from dreamer_jax.boundaries import analysis, inference, metrics
from dreamer_jax.status import write_atomic
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
    "vta": ("--dynamics", "vta"),  # the default VTA: the learning benchmark's
    RECOMMENDED: ("--dynamics", "vta", "--vta_max_seg_len", "30", "--vta_boundary_force_scale", "0",
                  "--vta_boundary_temp", "1", "--vta_boundary_rate", "0.1", "--vta_boundary_scale", "0.5",
                  "--vta_rate_mode", "batch"),
}
# Settings: training presets and flags on top, seeds, env steps per run, conditions, and the evaluation's flags (both
# policies). cpu: long enough that agents act (at `pinpad_cpu_v1` the learning benchmark's RSSM seeds first reached
# its target at 35k to 37.5k env steps; at `pinpad_cpu_v2` one seed did at 25k), a point of the learning curve and a
# checkpoint every 2500 env steps (a stopped study loses little); RSSM, the default VTA, the two VTA conditions the
# 5000-step study ranked best, and ours: the campaign's study runs (benchmarks/campaign.json), which train the same.
SETTINGS = {
    "cpu": dict(configs=("pinpad_cpu",), flags=("--eval_every", "2500", "--log_every", "2500", "--save_every", "2500"),
                seeds=(0, 1, 2), steps=40_000, eval=("--episodes", "16"),
                conditions=(BASELINE, "vta", "vta_force0_t2_rate", "vta_force10_t1", RECOMMENDED)),
    # tiny: the study end to end for the tests, on agents that only collect (a prefill as long as the runs): no update
    # to trace and compile in each training process. Training is tested by itself (tests/test_vta_train.py trains the
    # rate condition).
    "tiny": dict(configs=("debug",), flags=("--prefill", "128"), seeds=(0,), steps=128, conditions=tuple(CONDITIONS),
                 eval=("--episodes", "2", "--resamples", "19", "--bootstrap", "10")),
}
POLICIES = sweep.EVAL_POLICIES
# A run's entry in study.json: these fields, and the headline figures of its evaluations.
RUN_FIELDS = ("condition", "seed", "logdir", "final_step", "final_return", "train_wall_s")
EVENTS = ("pad", "progress", "distractor")  # in the figures; rewards are pad entries, not scored apart
LABELS = {"model": "model", "pixel_change": "pixel change", "rssm_surprise": "RSSM surprise"}
# The baselines each policy's claims compare the model with: the RSSM surprise only on the episodes every model of a
# seed shares (a record keeps no RSSM to filter another run's agent episodes), so both routes state the same claims.
CLAIMED = {"scripted": ("pixel_change", "rssm_surprise"), "random": ("pixel_change", "rssm_surprise"),
           "agent": ("pixel_change",)}
RATES = ("own", "common")  # each model at its own count, or every detector at the pad-event count
RESAMPLES = 2000  # two-stage bootstrap resamples
BOOTSTRAP_SEED = 0
ALPHA = 0.05
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
    p.add_argument("--records", type=pathlib.Path, default=None,
                   help="write the report from the campaign's records in this folder (TASK/CONDITION/seedK/, "
                        "e.g. docs/results/runs) instead of --logroot's runs; implies --report")
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
           (args.out.exists() and not args.out.is_dir(), f"--out {args.out} is a file; give a folder"),
           (args.records is not None and not args.records.is_dir(), f"--records {args.records} is not a folder; give "
                                                                     "the folder of the campaign's records")]
    for failed, message in bad:
        if failed:
            raise StudyError(message)
    args.seeds, args.steps = tuple(seeds), steps
    args.report = args.report or args.records is not None


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


def judge_policies(args: argparse.Namespace) -> int:
    """Step 2: each run's boundaries on the random policy's and its own agent's episodes (skipped where a current
    result exists)."""
    runs, failed = plan(args), 0
    for policy, run in itertools.product(POLICIES[1:], runs):
        out = sweep.eval_result(run.logdir, policy).parent
        argv = [*sweep.eval_argv(run, runs, eval_args(args.setting, policy), BASELINE), "--out", str(out)]
        print(f"{run.name}: its boundaries on {policy} episodes", flush=True)
        try:
            result, fresh = eval_boundaries.judged(argv)
        except analysis.RunError as error:
            print(f"  failed: {error}", flush=True)
            failed += 1
            continue
        print("  " + (eval_boundaries.summary_line(result) if fresh else "judged before, with these settings"),
              flush=True)
    return 1 if failed else 0


def record_time(logroot: pathlib.Path, started: str, wall_s: float | None, command: str) -> None:
    """Record an invocation in LOGROOT/study_time.json: at its start (wall time None, which stays if it is killed)
    and again at its end."""
    path = logroot / TIMES
    times = [t for t in (json.loads(path.read_text()) if path.exists() else []) if t["started"] != started]
    times.append({"started": started, "wall_s": None if wall_s is None else round(wall_s, 1), "command": command})
    write_atomic(path, json.dumps(times, indent=1) + "\n")


# -- the report ------------------------------------------------------------------------------------------------------
def run_folder(args: argparse.Namespace, run: sweep.Run) -> pathlib.Path:
    """Where a run's files are: its run directory, or with --records its campaign record."""
    return run.logdir if args.records is None else sweep.record_dir(args.records, TASK, run.condition, run.seed)


def _missing(args: argparse.Namespace) -> str:
    """How to make what a report misses."""
    return "run the study without --report to make it" if args.records is None else \
        "the campaign trains and records it (python -m benchmarks.campaign)"


def _redo(args: argparse.Namespace) -> str:
    """How to judge a run's boundaries again."""
    return "run the study without --report to judge it again" if args.records is None else \
        "python -m benchmarks.campaign --complete judges it again from the run's state"


def _evaluation(args: argparse.Namespace, run: sweep.Run, policy: str, step: int | None
                ) -> tuple[dict, metrics.Detections]:
    """A run's evaluation for one policy and the detections it scored, made by today's metrics with the study's
    evaluation flags from the checkpoint at `step`; StudyError otherwise."""
    path = sweep.eval_result(run_folder(args, run), policy)
    arrays = sweep.detections_path(path)
    if not (path.exists() and arrays.exists()):
        raise StudyError(f"{run.name} has no {policy} evaluation ({path} and {arrays.name}); {_missing(args)}")
    result = json.loads(path.read_text())
    options = eval_boundaries.parser().parse_args(["--logdir", str(path.parent), *eval_args(args.setting, policy)])
    differs = eval_boundaries.settings_diff(result, options, step)
    if differs:
        listed = ", ".join(f"{k} {old!r} (the study: {new!r})" for k, (old, new) in differs.items())
        raise StudyError(f"{run.name}'s {policy} evaluation ({path}) was made otherwise than the study's: {listed}; "
                         f"{_redo(args)}")
    return result, metrics.Detections.load(arrays)


def _final(args: argparse.Namespace, run: sweep.Run, folder: pathlib.Path) -> tuple[int, float, float]:
    """A record's (env steps, final return over fresh episodes, training wall seconds), once its configuration is the
    study's own."""
    path = folder / sweep.RECORD_FINAL
    if not path.exists():
        raise StudyError(f"{run.name} has no finished record ({path}); {_missing(args)}")
    final = json.loads(path.read_text())
    differs = cfg.run_diff(cfg.load(folder / "config.json"), cfg.parse(list(run.argv[2:]), tasks=pinpad.TASKS))
    if differs:
        listed = ", ".join(f"{k} {old!r} (the study: {new!r})" for k, (old, new) in differs.items())
        raise StudyError(f"the record {folder} was trained with other settings than the study's: {listed}; give "
                         "--setting, --steps or --conditions that match it, or train the run again (move the record "
                         "aside and run the campaign)")
    return final["step"], final["final_eval_return"], final["train_wall_s"]


def collect(args: argparse.Namespace) -> list[dict]:
    """Per run: condition, seed, learning curve, final return (a record's: over fresh episodes at its end; a run's:
    its last periodic evaluation), and per policy its evaluation and detections."""
    rows = []
    for run in plan(args):
        folder = run_folder(args, run)
        if not (folder / "metrics.jsonl").exists():
            raise StudyError(f"{run.name} has not trained ({folder}); {_missing(args)}")
        lines = curves.read_metrics(folder)
        steps, returns = curves.series(lines, "eval_return")
        final = (int(steps[-1]) if steps.size else None, float(returns[-1]) if returns.size else None, None) \
            if args.records is None else _final(args, run, folder)
        judged_at = final[0] if args.records is not None else sweep.latest_checkpoint(folder)
        rows.append({"condition": run.condition, "seed": run.seed, "logdir": str(folder), "lines": lines,
                     "final_step": final[0], "final_return": final[1], "train_wall_s": final[2],
                     **{policy: _evaluation(args, run, policy, judged_at) for policy in POLICIES}})
    add_rssm_surprise(rows)
    return rows


def add_rssm_surprise(rows: list[dict]) -> None:
    """Where a VTA run's evaluation lacks its seed's RSSM surprise (a record's: the RSSM's checkpoint is not kept), add
    it from the RSSM run's own evaluation of the same episodes. The scripted solver's and the random policy's episodes
    are the same for every model at one evaluation seed (checked: equal frame changes); the agents' differ, so on
    them the baseline stays out."""
    rssm = {row["seed"]: row for row in rows if row["condition"] == BASELINE}
    for row, policy in itertools.product(rows, POLICIES[:2]):
        result, detections = row[policy]
        if row["condition"] == BASELINE or "rssm_surprise" in detections.marks:
            continue
        base = rssm[row["seed"]][policy][1]
        same = base.delta.shape == detections.delta.shape and np.array_equal(base.delta, detections.delta, True)
        if not same:
            raise StudyError(f"{row['logdir']} and {rssm[row['seed']]['logdir']} were judged on different {policy} "
                             "episodes (their frames differ): evaluate both with the same --seed, --episodes and "
                             "--length")
        row[policy] = (result, metrics.with_surprise(detections, base.scores["model"], result["settings"]["seed"]))


def _marks(d: metrics.Detections, detector: str, rate: str) -> np.ndarray:
    """A detector's boundaries at its own count ("own") or at the pad-event count ("common")."""
    return d.marks[detector] if rate == "own" else d.at_pad_count[detector]


def _split(name: str):
    """One rate of `metrics.progress_distractor_rates`."""
    return lambda marks, d, weights: metrics.progress_distractor_rates(
        marks, d.events["progress"], d.events["distractor"], d.valid, weights)[name]


# measure -> f(marks, detections, weights (K, E)) -> (K,): what the tables show of a detector's boundaries
MEASURES = {
    "boundary_rate": lambda marks, d, w: metrics.boundary_rate(marks, d.valid, w),
    "lift": lambda marks, d, w: metrics.lift_over_event_rate(marks, d.events["pad"], d.valid, w),
    "f1": lambda marks, d, w: metrics.tolerance_scores(marks, d.events["pad"], d.valid, 1, w)["f1"],
    "progress_hit_rate": _split("progress_hit_rate"),
    "distractor_hit_rate": _split("distractor_hit_rate"),
    "progress_minus_distractor": _split("difference"),
}


def detectors(entry: dict, policy: str) -> list[str]:
    """The detectors judged for a condition on one policy's episodes: the model, pixel change and (VTA runs) the same
    seed's RSSM surprise where its episodes are the VTA run's (`add_rssm_surprise`)."""
    return list(entry[policy]["common"])


def _summary(statistic, detections: list[metrics.Detections], test: bool = False) -> dict:
    """A measure over a condition's seeds (see inference.summarise), NaN written as None."""
    out = inference.summarise(statistic, [len(d.valid) for d in detections], RESAMPLES, BOOTSTRAP_SEED, test)
    return metrics.plain(out)


def _split_test(marks: np.ndarray, d) -> dict:
    """Right next pad against other pads that flash alike: the exact p (log10) and the excess hit rate, matched on the
    frame delta (`metrics.progress_vs_distractor`)."""
    out = metrics.progress_vs_distractor(marks, d.events["progress"], d.events["distractor"], d.valid, flash=d.delta)
    return {"progress_log10_p": out["progress_log10_p"], "progress_excess": out["progress_excess"]}


class _Pooled(NamedTuple):
    """Every seed's episodes stacked (the seeds of a condition are judged on episodes of one length)."""
    events: dict
    valid: np.ndarray
    delta: np.ndarray


def _pooled(detections: list[metrics.Detections]) -> _Pooled:
    return _Pooled({k: np.concatenate([d.events[k] for d in detections]) for k in ("pad", "progress", "distractor")},
                   np.concatenate([d.valid for d in detections]), np.concatenate([d.delta for d in detections]))


def condition_numbers(detections: list[metrics.Detections]) -> dict:
    """One condition on one policy's episodes: per rate (own, common) and detector, every measure over seeds, the
    per-seed exact p-values and the same over every seed's episodes at once (`_pooled`: strata by seed and episode),
    and the model's lift minus each baseline's (bootstrap-tested); AUPRC (threshold-free) per detector.
    `detections`: one per seed, in seed order."""
    out = {}
    names = [name for name in detections[0].marks]
    for rate in RATES:
        block = {}
        for name in names:
            entry = {measure: _summary(lambda s, w, f=f: f(_marks(detections[s], name, rate), detections[s], w),
                                       detections)
                     for measure, f in MEASURES.items()}
            entry["circular_log10_p"] = [metrics.circular_shift_log10_p(_marks(d, name, rate), d.events["pad"], d.valid)
                                         for d in detections]
            split = [_split_test(_marks(d, name, rate), d) for d in detections]
            entry["progress_log10_p"] = [s["progress_log10_p"] for s in split]
            entry["progress_excess"] = [s["progress_excess"] for s in split]
            pooled, marks = _pooled(detections), np.concatenate([_marks(d, name, rate) for d in detections])
            entry["circular_log10_p_pooled"] = metrics.circular_shift_log10_p(marks, pooled.events["pad"], pooled.valid)
            entry.update({f"{k}_pooled": v for k, v in _split_test(marks, pooled).items()})
            block[name] = metrics.plain(entry)
        for base in names[1:]:
            lift = MEASURES["lift"]
            block["model"][f"lift_minus_{base}"] = _summary(
                lambda s, w, base=base: lift(_marks(detections[s], "model", rate), detections[s], w)
                - lift(_marks(detections[s], base, rate), detections[s], w), detections, test=True)
        out[rate] = block
    out["auprc"] = {name: _summary(lambda s, w, name=name: metrics.auprc(
        detections[s].scores[name], detections[s].events["pad"], detections[s].valid, w), detections)
        for name in names if detections[0].scores[name] is not None}
    return out


def numbers(rows: list[dict], conditions: list[str]) -> dict:
    """Per condition: each seed's final return and, per policy, `condition_numbers` of its seeds."""
    out = {}
    for condition in conditions:
        runs = sorted((r for r in rows if r["condition"] == condition), key=lambda r: r["seed"])
        out[condition] = {"seeds": [r["seed"] for r in runs], "final_return": [r["final_return"] for r in runs],
                          **{policy: condition_numbers([r[policy][1] for r in runs]) for policy in POLICIES}}
    return out


def verdicts(table: dict) -> list[dict]:
    """Every claim the Reading states, with its p-value and Holm's adjustment over all of them (a claim without a p,
    where its measure is undefined, counts in the family as p = 1 and reads so): the model's boundaries fall on pad
    entries beyond chance (exact circular-shift p, at its own count), they prefer the right next pad over other pads
    that flash alike (exact, matched on the frame delta, at the common rate), both over every seed's episodes at once;
    and its lift is above each baseline's it claims against (CLAIMED; two-stage bootstrap, common rate)."""
    found = []
    for condition, entry in table.items():
        for policy in POLICIES:
            own, common = entry[policy]["own"]["model"], entry[policy]["common"]["model"]
            found.append({"condition": condition, "policy": policy, "measure": "pad_alignment", "test": "exact",
                          "what": "boundaries on pad entries beyond chance (circular shift, own count)",
                          "estimate": own["lift"]["mean"], "log10_p": own["circular_log10_p_pooled"]})
            found.append({"condition": condition, "policy": policy, "measure": "progress_over_distractor",
                          "test": "exact", "what": "the right next pad over other pads that flash alike",
                          "estimate": common["progress_excess_pooled"],  # None: no entries that flash alike
                          "log10_p": None if common["progress_excess_pooled"] is None
                          else common["progress_log10_p_pooled"]})
            for base in (b for b in detectors(entry, policy)[1:] if b in CLAIMED[policy]):
                cell = common[f"lift_minus_{base}"]
                found.append({"condition": condition, "policy": policy, "measure": f"lift_minus_{base}",
                              "test": "bootstrap", "what": f"lift minus {LABELS[base]}'s", "estimate": cell["mean"],
                              "ci95": cell["ci95"],
                              "log10_p": None if cell["p"] is None or cell["mean"] is None else math.log10(cell["p"])})
    p_values = [1.0 if v["log10_p"] is None else 10 ** v["log10_p"] for v in found]
    for verdict, adjusted in zip(found, inference.holm(p_values)):
        verdict["p_holm"] = float(adjusted)
        if verdict["log10_p"] is None:
            verdict["reads"] = "undefined (no p; counted as 1)"
        elif adjusted >= ALPHA:
            verdict["reads"] = "not told apart from chance" if verdict["test"] == "exact" else "not told apart from 0"
        else:
            verdict["reads"] = "above chance" if verdict["test"] == "exact" else \
                ("above 0" if verdict["estimate"] > 0 else "below 0")
    return found


def _num(value, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}g}"


def _cell(summary: dict, digits: int = 3) -> str:
    """mean [2.5%, 97.5%] of the two-stage bootstrap (n/a where undefined)."""
    text = _num(summary["mean"], digits)
    if summary["mean"] is not None and summary["ci95"] is not None:
        text += f" [{_num(summary['ci95'][0], digits)}, {_num(summary['ci95'][1], digits)}]"
    return text


def _seeds(values: list, digits: int = 3) -> str:
    """Per-seed values, in seed order."""
    return " / ".join(_num(v, digits) for v in values)


def _below(log10_ps: list) -> str:
    """How many seeds' exact p is below ALPHA."""
    defined = [v for v in log10_ps if v is not None]
    return f"{sum(v < math.log10(ALPHA) for v in defined)} of {len(log10_ps)}"


def _table(header: list[str], body: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|",
            *("| " + " | ".join(cells) + " |" for cells in body)]


def detector_tables(table: dict, policy: str) -> list[str]:
    """Pad events on one policy's episodes: every detector at its own count, then all at the common rate."""
    lines = []
    for rate, title, note in (
            ("own", "each model at its own boundaries, each baseline at the model's count per episode",
             "lift and F1 depend on the count: compare a model with the baselines in its own rows"),
            ("common", "every detector at the pad-event count (its score thresholded, pooled over episodes)",
             "one rate for all rows: rows compare like with like")):
        body = []
        for condition, entry in table.items():
            for name in detectors(entry, policy):
                cell = entry[policy][rate][name]
                row = [condition, LABELS[name], _cell(cell["boundary_rate"]), _cell(cell["lift"]), _cell(cell["f1"])]
                if rate == "common":
                    auprc = entry[policy]["auprc"].get(name)
                    row.append("n/a" if auprc is None else _cell(auprc))
                row += [_seeds(cell["circular_log10_p"], 3), _below(cell["circular_log10_p"])]
                body.append(row)
        header = ["condition", "boundaries from", "boundaries per step", "lift", "F1@1",
                  *(["AUPRC"] if rate == "common" else []), "log10 circular p, per seed", f"seeds p < {ALPHA}"]
        lines += [f"### Pad events, {policy} episodes: {title}", f"({note}.)", "", *_table(header, body), ""]
    return lines


def split_table(table: dict, policy: str) -> list[str]:
    """Hit rates on the right next pad against other pads at the common rate, one policy's episodes; the test compares
    only entries that flash alike (matched on the frame delta), so pixel change's row is the control."""
    body = []
    for condition, entry in table.items():
        for name in detectors(entry, policy):
            cell = entry[policy]["common"][name]
            body.append([condition, LABELS[name], _cell(cell["progress_hit_rate"]),
                         _cell(cell["distractor_hit_rate"]), _seeds(cell["progress_excess"]),
                         _seeds(cell["progress_log10_p"]), _below(cell["progress_log10_p"]),
                         _num(cell["progress_log10_p_pooled"])])
    return [f"### Right next pad against other pads, {policy} episodes (common rate)", "",
            *_table(["condition", "boundaries from", "hit rate, right pad", "hit rate, other pads",
                     "excess on the right pad, matched, per seed", "log10 exact p, per seed", f"seeds p < {ALPHA}",
                     "log10 exact p, all seeds"], body), ""]


def seed_table(table: dict) -> list[str]:
    """Each seed's figures: its final return and its model's headline numbers on scripted episodes."""
    body = []
    for condition, entry in table.items():
        scripted = entry["scripted"]
        own, common = scripted["own"]["model"], scripted["common"]["model"]
        for i, seed in enumerate(entry["seeds"]):
            body.append([condition, str(seed), _num(entry["final_return"][i]),
                         _num(own["boundary_rate"]["per_seed"][i]), _num(own["lift"]["per_seed"][i]),
                         _num(common["lift"]["per_seed"][i]), _num(common["progress_excess"][i]),
                         _num(own["circular_log10_p"][i], 4)])
    return _table(["condition", "seed", "final return", "boundaries per step", "lift (own count)",
                   "lift (common rate)", "excess on the right pad, matched (common)", "log10 circular p (own)"], body)


def reading(table: dict, found: list[dict], baselines: dict) -> list[str]:
    """The findings, generated from the numbers: each seed's return against the random policy's (a count, no test),
    then every verdict with its estimate, its p (log10) and Holm-adjusted p."""
    lines = []
    for condition, entry in table.items():
        returns = [r for r in entry["final_return"] if r is not None]
        above = sum(r > baselines["random"] for r in returns)
        lines.append(f"- **{condition}**: final return per seed {_seeds(entry['final_return'])}; {above} of "
                     f"{len(entry['final_return'])} seeds above the random policy's {baselines['random']:.3g} "
                     f"(scripted solver {baselines['scripted']:.3g}).")
        for v in (v for v in found if v["condition"] == condition):
            if v["test"] == "exact":
                figure = f"{_num(v['estimate'])}, log10 exact p {_num(v['log10_p'])}"
            else:
                interval = "no interval" if v.get("ci95") is None else f"[{v['ci95'][0]:+.3g}, {v['ci95'][1]:+.3g}]"
                figure = f"{_num(v['estimate'])} {interval}, log10 bootstrap p {_num(v['log10_p'])}"
            lines.append(f"  - {v['policy']} episodes, the model's {v['what']}: {figure}, Holm p {v['p_holm']:.2g}: "
                         f"**{v['reads']}**.")
    return lines


def plot_peth(rows: list[dict], conditions: list[str], out: pathlib.Path) -> pathlib.Path:
    """The model's boundary rate around events (lag 0: the event's step), each seed a thin line and the mean over
    seeds thick, per policy (rows) and event type (columns)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(POLICIES), len(EVENTS), figsize=(5 * len(EVENTS), 3.2 * len(POLICIES)),
                             squeeze=False)
    for (i, policy), (j, event) in itertools.product(enumerate(POLICIES), enumerate(EVENTS)):
        ax = axes[i, j]
        for index, condition in enumerate(conditions):
            peths = [r[policy][0]["events"][event]["all"]["peth"] for r in rows if r["condition"] == condition]
            rates = np.array([[np.nan if v is None else v for v in p["read_rate"]] for p in peths], np.float64)
            lags = np.array(peths[0]["lags"])
            for seed_rates in rates:
                ax.plot(lags, seed_rates, color=f"C{index}", lw=0.6, alpha=0.4)
            ax.plot(lags, rates.mean(axis=0), color=f"C{index}", lw=1.8, label=condition)
        if not any(r[policy][0]["events"][event]["event_count"] for r in rows):
            ax.text(0.5, 0.5, "no such events", transform=ax.transAxes, ha="center", color="grey")
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
    found = verdicts(table)
    figures = args.out / FIGURES
    figures.mkdir(parents=True, exist_ok=True)
    groups = {c: [r["lines"] for r in rows if r["condition"] == c] for c in args.conditions}
    curve_path = curves.plot(groups, ["eval_return"], "step", figures / "learning_curves.png",
                             hlines=baselines, title=f"{TASK}, study ({args.setting} setting)")
    peth_path = plot_peth(rows, args.conditions, figures)
    times_path = args.logroot / TIMES
    times = json.loads(times_path.read_text()) if times_path.exists() and args.records is None else []
    wall_s = sum(t["wall_s"] or 0.0 for t in times) if args.records is None else sum(r["train_wall_s"] for r in rows)
    data = {"task": TASK, "setting": args.setting, "conditions": {c: list(CONDITIONS[c]) for c in args.conditions},
            "seeds": list(args.seeds), "steps": args.steps, "presets": list(SETTINGS[args.setting]["configs"]),
            "baseline_returns": baselines, "baseline_episodes": BASELINE_EPISODES,
            "bootstrap": {"resamples": RESAMPLES, "seed": BOOTSTRAP_SEED}, "alpha": ALPHA, "summary": table,
            "verdicts": found, "runs": [{k: r[k] for k in RUN_FIELDS} | {p: _headline(r[p][0]) for p in POLICIES}
                                        for r in rows],
            "evaluation": {p: eval_args(args.setting, p) for p in POLICIES}, "invocations": times,
            "records": None if args.records is None else str(args.records), "wall_s": wall_s,
            "versions": _versions(),
            "machine": {"platform": platform.platform(), "processor": platform.processor() or "unknown",
                        "cpus": os.cpu_count(), "backend": jax.default_backend()}}
    write_atomic(args.out / "study.json", json.dumps(data, indent=1, allow_nan=False) + "\n")
    markdown = _markdown(args, data, rows[0]["scripted"][0]["settings"], [curve_path, peth_path])
    path = args.out / "study.md"
    write_atomic(path, "\n".join(markdown) + "\n")
    return path


def _headline(result: dict) -> dict:
    """Where one run's evaluation on a policy stands (its full JSON and detections stay beside the run)."""
    return {"boundary_count": result["boundary_count"], "scored_steps": result["scored_steps"],
            "checkpoint": result["settings"]["step"], "pad_events": result["events"]["pad"]["event_count"]}


def _markdown(args, data: dict, evaluation: dict, figures: list[pathlib.Path]) -> list[str]:
    """The lines of study.md."""
    preset = cfg.presets()[SETTINGS[args.setting]["configs"][0]]
    table, seeds = data["summary"], len(args.seeds)
    hours = data["wall_s"] / 3600
    command = "python -m experiments.study" + (f" --records {args.records}" if args.records else
                                               " --report" if args.report else "")
    lines = [
        "# Do VTA boundaries line up with pinpad's events, and does the agent learn?",
        "",
        f"Written by `{command}` from the {'campaign records' if args.records else 'runs'} in "
        f"`{args.records or args.logroot}`; the numbers behind every table, each seed's among them, are in "
        "`study.json`.",
        "",
        "## The question",
        "The prototype trained DreamerV3 with RSSM and with VTA dynamics on pinpad and asked whether the boundaries "
        "VTA learns fall on the task's events more often than chance and more often than simple detectors do, and "
        "whether the agent learns. On pinpad every pad entry flashes, so any change detector finds pad events; the "
        "question a flash cannot answer is whether a model's boundaries prefer the *right next* pad of the sequence "
        "over other pads, which flash alike. Each run is judged on the scripted solver's episodes (the same for every "
        "model, rich in events), on the random policy's, and on its own agent's.",
        "",
        "## Setup",
        f"- Task `{TASK}`; {_count(seeds, 'seed')} per condition ({', '.join(map(str, args.seeds))}), "
        + ("each trained and recorded by the campaign (`benchmarks/campaign.json`)" if args.records else
           "trained side by side in one process") + f"; {args.steps} env steps per run.",
        f"- Training flags on top of the preset: `{' '.join(training_flags(args))}`.",
        f"- Preset `{SETTINGS[args.setting]['configs'][0]}`: " + ", ".join(f"{k}={v}" for k, v in preset.items())
        + ".",
        "- Conditions (flags on top of the preset):",
        *(f"  - `{c}`: `{' '.join(CONDITIONS[c])}`" + (" (ours, see below)" if c == RECOMMENDED else "")
          for c in args.conditions),
        f"- Why `{RECOMMENDED}`: the prototype's rate regulariser, KL(Bern(q_t) || Bern(rate)) at every step, pulls "
        "each READ probability towards the rate; ours regularises the batch-mean READ probability instead "
        "(`--vta_rate_mode batch`), which only sets how often READ happens, with no forcing and temperature 1.",
        f"- Evaluation: `python -m experiments.eval_boundaries --policy {{{','.join(POLICIES)}}} "
        f"{' '.join(SETTINGS[args.setting]['eval'])}`" + (
            f"; the same seed's `{BASELINE}` record's surprise on the same scripted and random episodes (their "
            "frames checked equal) is added as a baseline here, and agent episodes, which differ per run, go without "
            "it; " if args.records else f" with `--baseline-logdir` the same seed's `{BASELINE}` run; ") +
        f"{evaluation['episodes']} episodes of {evaluation['length'] or 'time_limit'} steps per policy, the "
        f"deterministic boundary (`{evaluation['boundaries']}`). Events: pad entries; of those outside the countdown "
        "and unrewarded, entries of the right next pad (progress) and of any other pad (distractor), which flash "
        "alike (the rewarded entry turns the background green and entries during the countdown shift every status "
        "slot: neither is compared).",
        "- Detectors: the model's boundaries (an RSSM's: its surprise KL(posterior || prior) at the pad-event count), "
        "the largest pixel changes, and the same seed's RSSM surprise. Two scorings: at the model's own count (each "
        "baseline marks as many steps per episode as the model), and at one common rate (every detector's score "
        "thresholded at the number of pad events, pooled over episodes).",
        "- Measures: lift over the event rate (stratified by episode), F1 at a tolerance of 1 step, AUPRC of the "
        "score (threshold-free), and the hit rates on right and other pads. Significance, per seed and over every "
        "seed's episodes at once (strata by seed and episode): the exact circular-shift p (each episode's boundaries "
        "shifted cyclically against its events, which keeps runs of steps together) and, for right against other "
        "pads, the exact hypergeometric p given the boundaries on those entries, within strata of one episode and one "
        "frame change, so only entries that flash alike are compared (a scripted episode's distractor entries shift a "
        "full history more often than its progress entries; `benchmarks.flash_calibration` measures pixel change "
        "against this test on real frames); the excess is the right pad's hit rate above that chance. All p-values "
        "are given as log10, never averaged.",
        f"- Intervals: 95% percentile intervals of a two-stage bootstrap ({data['bootstrap']['resamples']} resamples: "
        "seeds with replacement, then each drawn seed's episodes with replacement), so a bounded measure's interval "
        "stays in its range; the lift against each baseline is tested by that bootstrap. Holm's correction runs "
        "over every claim of the Reading.",
        f"- Baseline returns over {data['baseline_episodes']} episodes: random "
        f"{data['baseline_returns']['random']:.3g}, scripted {data['baseline_returns']['scripted']:.3g}. Final "
        "return: " + ("each record's, over 16 fresh episodes of its last policy." if args.records else
                      "each run's last periodic evaluation."),
        f"- Machine: {data['machine']['platform']}, {data['machine']['cpus']} CPUs, JAX backend "
        f"{data['machine']['backend']}. Versions: " + ", ".join(f"{k} {v}" for k, v in data["versions"].items()) + ".",
        (f"- Training wall time, summed over the records: {data['wall_s']:.0f} s ({hours:.2f} h)." if args.records
         else f"- Wall time: {data['wall_s']:.0f} s ({hours:.2f} h) over "
         f"{_count(len(data['invocations']), 'invocation')}: "
         + "; ".join(f"{t['started']}, " + ("stopped before it recorded its time" if t["wall_s"] is None else
                                           f"{t['wall_s']:.0f} s") + f", `{t['command']}`"
                     for t in data["invocations"]) + "."),
        "",
        "## Headline: scripted episodes, common rate",
        *_table(["condition", "final return, per seed", "lift", "minus pixel change's",
                 "excess on the right pad, matched", "AUPRC", "log10 circular p, per seed"],
                [[c, _seeds(e["final_return"]), _cell(e["scripted"]["common"]["model"]["lift"]),
                  _cell(e["scripted"]["common"]["model"]["lift_minus_pixel_change"]),
                  _num(e["scripted"]["common"]["model"]["progress_excess_pooled"]),
                  _cell(e["scripted"]["auprc"]["model"]) if "model" in e["scripted"]["auprc"] else "n/a",
                  _seeds(e["scripted"]["common"]["model"]["circular_log10_p"])]
                 for c, e in table.items()]),
        "",
        "## Each seed (scripted episodes, the model)",
        *seed_table(table),
        "",
        "## Learning curves",
        f"![learning curves]({FIGURES}/{figures[0].name})",
        "",
        "## Detectors on pad events",
        "",
    ]
    for policy in POLICIES:
        lines += detector_tables(table, policy)
    lines += ["## Right next pad against other pads", ""]
    for policy in POLICIES:
        lines += split_table(table, policy)
    lines += ["## Boundary rate around events", f"![peri-event histograms]({FIGURES}/{figures[1].name})", "",
              "## Reading",
              f"Generated from the numbers above. A claim reads \"above chance\", \"above 0\" or \"below 0\" only "
              f"where its Holm-adjusted p (over all {len(data['verdicts'])} claims) is below {ALPHA}.", "",
              *reading(table, data["verdicts"], data["baseline_returns"]), "",
              "## Limits",
              f"- {_count(seeds, 'seed')} per condition: the seed level of the bootstrap has "
              f"{_count(math.comb(2 * seeds - 1, seeds), 'distinct draw')}, and a bootstrap over so few seeds "
              "understates the spread between seeds (its variance by a factor (n - 1) / n), so the intervals and "
              "p-values are optimistic at the seed level.",
              f"- CPU scale: {args.steps} env steps per run of one small model, one task ({TASK}).",
              "- The same scripted and random episodes serve every model of a seed, so rows of a seed are paired; the "
              "agent episodes differ per run."]
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
                code = train_and_judge(args) or judge_policies(args)
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
