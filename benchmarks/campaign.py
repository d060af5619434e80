"""Runs that add up across restarts: train the runs the results need, a few at a time, and keep each as a record.

    python -m benchmarks.campaign --budget 2.5h          # train the next runs that fit, record each as it finishes
    python -m benchmarks.campaign --dry-run              # what is recorded, under way, next, held
    python -m benchmarks.campaign --report               # docs/results/campaign/learning.json from the records
    python -m benchmarks.campaign --complete             # judge again what a record lacks, from the run's state
    python -m experiments.monitor --status-file ~/.cache/dreamer_jax/campaign/campaign_status.env

The list of runs is data, `benchmarks/campaign.json`: the preset, the flags of every run, the variants (flags on top),
the variants whose records make the learning benchmark's results (--report), and entries of task, variants, seeds and
env steps, in the order they are trained. A run whose record exists under
--records (`TASK/VARIANT/seedK/`) is done and never trained again; a record whose configuration differs from what
the list now asks for is refused, naming the fields, except one that only has fewer env steps: that run is extended
(resumed from its state) and its record replaced once it gets there. The others are taken in the list's order while
their estimated time (from the records' own rates, else the list's first estimates, scaled by the steps the updates
replay) fits the budget; the first of them always, so that a run longer than one budget advances each time and
finishes over several. When the chosen runs are recorded with time left (at least the overhead of a run), the campaign
chooses again, with the rates the new records measured.

Each run trains through the sweep (`experiments.sweep`'s plan and launchers: the status file, the monitor, local
processes or submitit jobs) in a state folder outside the work tree (--state, by default
$XDG_CACHE_HOME/dreamer_jax/campaign), so that a machine that comes back resumes it mid-run from its checkpoint. A
finished run's boundaries are judged (experiments.eval_boundaries with the list's eval_args, and again on the episodes
of each of its eval_policies, into eval_POLICY/), then its record is written: config.json and metrics.jsonl as the run
wrote them, each boundary_eval.json with its .npz (the detections a study resamples), and final.json (the return
over 16 fresh episodes, the first step at 10x the random policy's return, agent tracking on 32 scripted episodes,
the training's wall and CPU seconds, the commits and model code it trained at, the machine). --commit commits each
record as soon as it is written. When the budget runs out the training under way saves a checkpoint and stops.
Exit status: 0 when the chosen runs are recorded or the budget ended, 1 when a run failed, 2 on bad input.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time

import pinpad
from dreamer_jax import config as cfg, curves, sweep
from dreamer_jax.stops import stop_requests
from dreamer_jax.status import write_atomic
from experiments import launchers, sweep as sweep_cli
from experiments.provenance import commit, model_code

REPO = pathlib.Path(__file__).resolve().parent.parent
PLAN = REPO / "benchmarks" / "campaign.json"
RECORDS = REPO / "docs" / "results" / "runs"
FINAL = sweep.RECORD_FINAL
COPIED = ("config.json", "metrics.jsonl")
SESSIONS = "campaign_sessions.jsonl"  # in a run's state folder: each training session's commit and model code
STATUS_NAME, LOG_NAME = "campaign_status.env", "campaign.log"
OVERHEAD_S = 420.0  # per run beside training: starting, compiling, the final measures, the boundary evaluations
MODULE = "benchmarks.campaign"
_BUDGET = re.compile(r"(\d+(?:\.\d*)?)\s*([hms]?)\Z")


class CampaignError(ValueError):
    """A campaign that cannot run as asked; the message names the problem and the fix."""


@dataclasses.dataclass(frozen=True)
class Entry:
    """One run of the list: a variant of a task with a seed, trained to `steps` env steps."""

    task: str
    variant: str
    seed: int
    steps: int
    hold: str = ""  # what the run waits for; empty: it may train

    @property
    def name(self) -> str:
        return sweep.run_name(self.task, self.variant, self.seed)

    def record(self, records: pathlib.Path) -> pathlib.Path:
        """The folder of the run's record."""
        return sweep.record_dir(records, self.task, self.variant, self.seed)


@dataclasses.dataclass(frozen=True)
class Plan:
    """The list of runs, as `benchmarks/campaign.json` gives it."""

    preset: str
    flags: tuple[str, ...]
    eval_args: tuple[str, ...]
    eval_policies: tuple[str, ...]  # judged at record time too, into RUN/eval_POLICY/: eval_args, --policy replaced
    rates: dict[str, float]  # first estimates of env steps/s by dynamics, before a record measures them
    variants: dict[str, tuple[str, ...]]
    entries: tuple[Entry, ...]
    learning: tuple[str, ...]  # the variants whose records make the learning benchmark's results (--report)

    def run(self, entry: Entry, state: pathlib.Path, index: int = 1) -> sweep.Run:
        """The entry as the sweep plans a run: trained in `state`/NAME."""
        run, = sweep.plan(state, entry.task, {entry.variant: self.variants[entry.variant]}, [entry.seed],
                          [self.preset], (*self.flags, "--steps", str(entry.steps)))
        return dataclasses.replace(run, index=index)

    @property
    def policies(self) -> tuple[str, ...]:
        """The policies whose episodes a record's evaluations judge: the scripted solver's (eval_args), then
        eval_policies."""
        return (sweep.EVAL_POLICIES[0], *self.eval_policies)

    def config(self, entry: Entry) -> cfg.Config:
        """The configuration the list asks for (logdir aside)."""
        argv = self.run(entry, pathlib.Path(".")).argv
        return cfg.parse(argv[2:], tasks=pinpad.TASKS)


def load_plan(path: pathlib.Path) -> Plan:
    """The list of runs in `path`; CampaignError naming what is wrong in it."""
    try:
        data = json.loads(path.read_text())
        variants = sweep.parse_conditions("\n".join(f"{k} {v}" for k, v in data["variants"].items()), str(path))
        entries, seen = [], {}
        for number, item in enumerate(data["runs"], 1):
            unknown = [v for v in item["variants"] if v not in variants]
            if unknown:
                raise CampaignError(f"{path}, run entry {number}: variant {unknown[0]!r} is not among the variants "
                                    f"({', '.join(variants)}); add it to variants or fix the name")
            for seed in item["seeds"]:
                for variant in item["variants"]:
                    entry = Entry(item["task"], variant, int(seed), int(item["steps"]), item.get("hold", ""))
                    if entry.name in seen:
                        raise CampaignError(f"{path}, run entry {number}: {entry.name} is listed before (entry "
                                            f"{seen[entry.name]}); list each run once")
                    seen[entry.name] = number
                    entries.append(entry)
        policies = tuple(data.get("eval_policies", ()))
        others = sweep.EVAL_POLICIES[1:]  # the scripted solver's episodes are eval_args' own
        if not set(policies) <= set(others) or len(set(policies)) != len(policies):
            raise CampaignError(f"{path}: eval_policies {list(policies)} must name distinct policies of "
                                f"{', '.join(others)} (eval_args judge the scripted solver's episodes)")
        unknown = [v for v in data["learning"] if v not in variants]
        if unknown:
            raise CampaignError(f"{path}: learning names {unknown[0]!r}, which is not among the variants "
                                f"({', '.join(variants)}); add it to variants or fix the name")
        plan = Plan(data["preset"], tuple(shlex.split(data.get("flags", ""))),
                    tuple(shlex.split(data.get("eval_args", ""))), policies, dict(data["env_steps_per_s"]),
                    variants, tuple(entries), tuple(data["learning"]))
    except (OSError, ValueError, KeyError, TypeError) as error:
        if isinstance(error, CampaignError):
            raise
        raise CampaignError(f"cannot read the list of runs {path} ({error.__class__.__name__}: {error}); it needs "
                            "preset, env_steps_per_s, variants, learning and runs (see benchmarks/campaign.json)"
                            ) from None
    for entry in plan.entries:
        try:
            plan.config(entry)
        except cfg.ConfigError as error:
            raise CampaignError(f"{path}: {entry.name}: {error}") from None
    missing = {dynamics(plan, v) for v in plan.variants} - set(plan.rates)
    if missing:
        raise CampaignError(f"{path}: env_steps_per_s has no estimate for {', '.join(sorted(missing))}; give one "
                            "(env steps per second of training, until a record measures it)")
    return plan


def variant_config(plan: Plan, variant: str) -> cfg.Config:
    """The configuration a variant trains (task, seed, steps and run directory aside)."""
    return cfg.parse(["--configs", plan.preset, *plan.flags, *plan.variants[variant]])


def dynamics(plan: Plan, variant: str) -> str:
    """The dynamics a variant trains (rssm or vta)."""
    return variant_config(plan, variant).dynamics


def recorded(entry: Entry, records: pathlib.Path) -> bool:
    """Whether the run has a record (its final.json, written last, is there)."""
    return (entry.record(records) / FINAL).exists()


def record_step(entry: Entry, records: pathlib.Path) -> int | None:
    """The env steps the run's record reached; None without a record."""
    return json.loads((entry.record(records) / FINAL).read_text())["step"] if recorded(entry, records) else None


def short(entry: Entry, records: pathlib.Path) -> int | None:
    """The env steps of the run's record where the list asks for more (the run is extended from there), else None."""
    step = record_step(entry, records)
    return step if step is not None and step < entry.steps else None


def done(entry: Entry, records: pathlib.Path) -> bool:
    """Whether the run is recorded as far as the list asks."""
    step = record_step(entry, records)
    return step is not None and step >= entry.steps


def check_records(plan: Plan, records: pathlib.Path) -> None:
    """Refuse records whose configuration is not the one the list asks for; one that is shorter and otherwise the
    same is extended."""
    for entry in plan.entries:
        if recorded(entry, records):
            differs = cfg.run_diff(cfg.load(entry.record(records) / "config.json"), plan.config(entry))
            if short(entry, records) is not None:
                differs.pop("steps", None)
            if differs:
                listed = ", ".join(f"{k} {old!r} (the list: {new!r})" for k, (old, new) in differs.items())
                raise CampaignError(
                    f"the record {entry.record(records)} was trained with other settings than the list asks for: "
                    f"{listed}. Move the record aside to train the run again, or make the list match it")


def first_estimate(plan: Plan, variant: str) -> float:
    """The list's env steps per second for the variant's dynamics, which is for the preset's train ratio, scaled to
    the variant's: the updates, whose cost goes with the steps they replay, are nearly all of a run's cost
    (docs/speed.md)."""
    config = variant_config(plan, variant)
    return plan.rates[config.dynamics] * cfg.make(plan.preset).train_ratio / config.train_ratio


def rates(plan: Plan, records: pathlib.Path) -> dict[str, float]:
    """Env steps per second of training by variant: the median of its records' own; without one, the median of the
    records of its dynamics in replayed steps per second, at the variant's train ratio (replayed steps per env step);
    without those, the list's estimate (`first_estimate`)."""
    measured: dict[str, list[float]] = {}
    replayed: dict[str, list[float]] = {}
    for entry in plan.entries:
        if recorded(entry, records):
            final = json.loads((entry.record(records) / FINAL).read_text())
            if final["train_wall_s"] > 0:
                rate = final["step"] / final["train_wall_s"]
                config = cfg.load(entry.record(records) / "config.json")
                measured.setdefault(entry.variant, []).append(rate)
                replayed.setdefault(config.dynamics, []).append(rate * config.train_ratio)
    out = {}
    for variant in plan.variants:
        config = variant_config(plan, variant)
        out[variant] = statistics.median(measured[variant]) if variant in measured else \
            statistics.median(replayed[config.dynamics]) / config.train_ratio if config.dynamics in replayed \
            else first_estimate(plan, variant)
    return out


def remaining_s(plan: Plan, entry: Entry, state: pathlib.Path, rate: float) -> float:
    """Estimated seconds to finish the run from where its state stands, its evaluation and record included."""
    done = sweep.latest_checkpoint(state / entry.name) or 0
    return max(entry.steps - done, 0) / rate + OVERHEAD_S


def select(plan: Plan, records: pathlib.Path, state: pathlib.Path, budget_s: float | None
           ) -> tuple[list[Entry], list[tuple[Entry, str]]]:
    """(the runs to train now, in the list's order, and every other run with why not). The first run to train is taken
    even when it does not fit: it trains until the budget ends and resumes next time, so a run longer than any budget
    still gets done."""
    speed, left = rates(plan, records), budget_s
    chosen, others = [], []
    for entry in plan.entries:
        estimate = remaining_s(plan, entry, state, speed[entry.variant])
        if done(entry, records):
            others.append((entry, f"recorded in {entry.record(records)}"))
        elif entry.hold:
            others.append((entry, f"held: waits for {entry.hold}"))
        elif left is not None and estimate > left and chosen:
            others.append((entry, f"does not fit the budget left ({estimate / 3600:.1f} h estimated)"))
        else:
            chosen.append(entry)
            left = None if left is None else left - estimate
    return chosen, others


def note_session(logdir: pathlib.Path) -> None:
    """Append this training session's commit and model code to the run's state folder (its record lists them)."""
    logdir.mkdir(parents=True, exist_ok=True)
    with (logdir / SESSIONS).open("a") as f:
        f.write(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "commit": commit(),
                            "model_code": model_code(), "from_step": sweep.latest_checkpoint(logdir) or 0}) + "\n")


class _Recording:
    """What the campaign adds to a sweep launcher: each training session noted, each finished run recorded (and
    committed with `commit`), the aggregates rewritten from the records at the end."""

    def setup(self, plan_path: pathlib.Path, records: pathlib.Path, state: pathlib.Path, out: pathlib.Path,
              plan: Plan, commit_records: bool) -> None:
        self.plan_path, self.records, self.state, self.out, self.commit = plan_path, records, state, out, commit_records
        self.entries = {entry.name: entry for entry in plan.entries}
        self.written: list[pathlib.Path] = []

    def record(self, run: sweep.Run) -> None:
        """Write the record of a run that trained to its end, in a child process, and commit it if asked."""
        entry = self.entries[run.name]
        if self.stops or not sweep.is_finished(run) or done(entry, self.records):
            return
        if self.outcome(run).eval == "failed":  # its boundary_eval.json may be stale or half-made: judged again next time
            self.event(f"{self.head((run,))}: no record, its evaluation failed; the next campaign evaluates it again")
            return
        self.event(f"{self.head((run,))}: writing its record")
        code, last = self.child((MODULE, "--record-run", run.name, *self.where()), self.refresh)
        state, note = self.ending(code, last, str(entry.record(self.records)))
        if state == "done":
            self.written.append(entry.record(self.records))
            if self.commit:
                note += "; " + commit_record(entry.record(self.records))
        else:
            self.outcome(run).eval, self.outcome(run).eval_note = "failed", f"record {state}: {note}"
        self.event(f"{self.head((run,))}: record {state}: {note}")

    def where(self) -> tuple[str, ...]:
        return ("--plan", str(self.plan_path), "--records", str(self.records), "--state", str(self.state), "--out",
                str(self.out))

    def table(self) -> None:
        """The aggregates from every record, when this session wrote one (instead of the sweep's table)."""
        if not self.written:
            self.event("no record written this time; aggregates left as they are")
            return
        code, last = self.child((MODULE, "--report", *self.where()), self.refresh)
        state, note = self.ending(code, last, "aggregates written from the records")
        self.ledger.table, self.ledger.table_note = state, note
        self.event(f"report {state}: {note}")


class LocalCampaign(_Recording, launchers.LocalSweeper):
    """The runs one after another in subprocesses; each judged and recorded in one more as soon as it has trained."""

    def train(self, group: sweep.Group) -> None:
        if not sweep.is_finished(group.runs[0]):
            note_session(group.runs[0].logdir)
        super().train(group)

    def evaluate(self, run: sweep.Run) -> None:
        """Judge the run's boundaries in the child that writes its record (`--record-run` judges every policy's
        episodes first): one process per finished run rather than one to judge and another to record."""
        if not sweep.is_finished(run):
            self.evaluated(run, "skipped", "not trained to its end; the next campaign resumes it")
            return
        self.begin((run,), "eval")
        self.record(run)
        outcome = self.outcome(run)
        if outcome.eval != "failed":  # judged and recorded, or not recorded (a stop came first)
            outcome.eval = "done" if done(self.entries[run.name], self.records) else "skipped"
        self.currents.pop(run.index, None)


class ClusterCampaign(_Recording, launchers.ClusterSweeper):
    """The runs as submitit jobs, all at once; each recorded here when its job has ended."""

    def submit(self, group: sweep.Group):
        if not sweep.is_finished(group.runs[0]):
            note_session(group.runs[0].logdir)
        return super().submit(group)

    def collect(self, group: sweep.Group, job) -> None:
        super().collect(group, job)
        for run in group.runs:
            self.record(run)


def commit_record(folder: pathlib.Path, what: str = "as the run wrote it") -> str:
    """Commit a record's folder alone (other changes in the work tree stay as they are); what happened."""
    git = lambda *args: subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True)  # noqa
    added = git("add", "--", ".")
    message = f"Campaign record: {folder.parent.parent.name} {folder.parent.name} {folder.name}, {what}"
    done = added if added.returncode else git("commit", "-q", "-m", message, "--", ".")
    return "committed" if done.returncode == 0 else f"not committed ({done.stderr.strip() or 'git failed'})"


def evaluations(plan: Plan) -> list[str]:
    """The evaluations a record holds, relative to its folder, one per policy of the plan."""
    return [str(sweep.eval_result(".", policy)) for policy in plan.policies]


def record_files(plan: Plan) -> list[str]:
    """The run's files a record copies: its configuration, its metrics and each evaluation with its detections."""
    return [*COPIED, *(name for result in evaluations(plan) for name in (result, str(sweep.detections_path(result))))]


def judge(plan: Plan, logdir: pathlib.Path) -> None:
    """The run's boundaries judged on every policy's episodes the record holds, where no current judgement is
    stored (experiments.eval_boundaries)."""
    from experiments import eval_boundaries

    for policy in plan.policies:
        chosen = () if policy == sweep.EVAL_POLICIES[0] else ("--policy", policy)
        eval_boundaries.judged(["--logdir", str(logdir), *plan.eval_args, *chosen, "--out",
                                str(sweep.eval_result(logdir, policy).parent)])


def outdated(plan: Plan, folder: pathlib.Path) -> list[str]:
    """A record's files that are missing, and its evaluations made by older metrics (another metrics.FORMAT)."""
    from dreamer_jax.boundaries.metrics import FORMAT  # scipy and the model: only where records are checked

    old = [name for name in evaluations(plan) if (folder / name).exists()
           and json.loads((folder / name).read_text()).get("settings", {}).get("format") != FORMAT]
    old += [str(sweep.detections_path(name)) for name in old]  # an evaluation and its detections go together
    return [name for name in record_files(plan) if not (folder / name).exists() or name in old]


def complete(plan: Plan, entry: Entry, state: pathlib.Path, records: pathlib.Path) -> list[str]:
    """Bring a record's missing or outdated files from the run's state, judging its evaluations again from its
    checkpoint at the record's step; each file is replaced whole. The files brought; CampaignError if the checkpoint
    is gone."""
    folder, logdir = entry.record(records), state / entry.name
    missing = outdated(plan, folder)
    step = json.loads((folder / FINAL).read_text())["step"]
    if missing and sweep.latest_checkpoint(logdir) != step:
        raise CampaignError(f"{folder} lacks {', '.join(missing)} (missing, or judged by older metrics), and the run's "
                            f"checkpoint at step {step} is not in {logdir} to judge it again; move the record aside "
                            "to train the run again")
    if missing:
        judge(plan, logdir)
    for name in missing:
        partial = (folder / name).with_name(f".{pathlib.Path(name).name}.partial")
        partial.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(logdir / name, partial)
        os.replace(partial, folder / name)
    return missing


def complete_records(plan: Plan, records: pathlib.Path, state: pathlib.Path, commit_records: bool) -> int:
    """`complete` every record (committing each one changed, if asked); 1 if a record could not be completed."""
    failed = 0
    for entry in (e for e in plan.entries if recorded(e, records)):
        try:
            brought = complete(plan, entry, state, records)
        except CampaignError as error:
            print(f"error: {entry.name}: {error}", file=sys.stderr)
            failed += 1
            continue
        if brought:
            note = "; " + commit_record(entry.record(records), "its evaluations judged again") if commit_records else ""
            print(f"{entry.name}: {', '.join(brought)} brought from {state / entry.name}{note}", flush=True)
    return 1 if failed else 0


def write_record(plan: Plan, entry: Entry, state: pathlib.Path, records: pathlib.Path) -> pathlib.Path:
    """Measure a finished run and write its record; the folder appears whole (written aside, then renamed)."""
    import jax

    from benchmarks import learning, record as bench_record
    from experiments.envs import make_env

    logdir = state / entry.name
    judge(plan, logdir)
    config = cfg.load(logdir / "config.json")
    env = make_env(config)
    random_return, _ = learning.baselines(env)
    final, step, tracked = learning.final_measures(logdir, env, entry.seed)
    lines = curves.read_metrics(logdir)
    xs, ys = curves.series(lines, "eval_return")
    sessions = [json.loads(line) for line in (logdir / SESSIONS).read_text().splitlines()] \
        if (logdir / SESSIONS).exists() else []
    result = {
        "task": entry.task, "variant": entry.variant, "seed": entry.seed, "step": step, "preset": plan.preset,
        "final_eval_return": final, "final_episodes": learning.FINAL_EPISODES, "random_return": random_return,
        "target_return": learning.TARGET * random_return,
        "first_target_step": learning.first_at([[x, y] for x, y in zip(xs, ys)], learning.TARGET * random_return),
        "tracking": tracked, "tracking_episodes": learning.TRACKING_EPISODES,
        **learning.training_seconds(lines),
        "sessions": sessions, "model_code": sorted({s["model_code"] for s in sessions if s["model_code"]}),
        "recorded_at": {"date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "commit": commit(),
                        "model_code": model_code()},
        "machine": bench_record.machine(), "command": shlex.join(["python", "-m", launchers.TRAIN,
                                                                  *plan.run(entry, state).argv]),
    }
    target = entry.record(records)
    partial = target.with_name(f".{target.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for name in record_files(plan):
        (partial / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(logdir / name, partial / name)  # every file: a record without one is no record
    write_atomic(partial / FINAL, json.dumps(result, indent=1) + "\n")
    if target.exists():  # a shorter record of the run, extended: replaced whole
        replaced = target.with_name(f".{target.name}.replaced")
        shutil.rmtree(replaced, ignore_errors=True)
        target.rename(replaced)
        partial.rename(target)
        shutil.rmtree(replaced)
    else:
        partial.rename(target)
    jax.clear_caches()
    return target


def report(plan: Plan, records: pathlib.Path, out: pathlib.Path) -> list[pathlib.Path]:
    """learning.json (learning_TASK.json for another task) and its figures from the records alone: per task, the
    list's learning variants that have records. Records trained at other settings than the list's are kept
    apart under their own name; the model code of every record is listed in each summary."""
    from benchmarks import learning
    from experiments.envs import make_env

    written = []
    for task in dict.fromkeys(entry.task for entry in plan.entries):
        entries = [e for e in plan.entries
                   if e.task == task and e.variant in plan.learning and recorded(e, records)]
        if not entries:
            continue
        runs, groups, settings, codes = [], {}, {}, {}
        env = make_env(cfg.load(entries[0].record(records) / "config.json"))
        baselines = learning.baselines(env)
        for entry in entries:
            folder = entry.record(records)
            final = json.loads((folder / FINAL).read_text())
            saved = cfg.load(folder / "config.json")
            differs = {k: v for k, (v, _) in cfg.run_diff(saved, plan.config(entry)).items()}
            name = entry.variant + (" (" + ", ".join(f"{k}={v}" for k, v in differs.items()) + ")" if differs else "")
            lines = curves.read_metrics(folder)
            groups.setdefault(name, []).append(lines)
            settings.setdefault(name, cfg.to_dict(dataclasses.replace(saved, seed=0, logdir="")))
            for code in final["model_code"] or ["unknown"]:
                codes.setdefault(name, {}).setdefault(code, 0)
                codes[name][code] += 1
            runs.append(learning.run_entry(name, task, entry.seed, lines, final["final_eval_return"], final["step"],
                                           final["tracking"], learning.TARGET * baselines[0], str(folder)))
        result = learning.write_results(out, task, plan.preset, runs, groups, baselines, env.length, {
            "command": shlex.join(["python", "-m", MODULE, "--report"]), "settings": settings,
            "records": str(records), "model_code": codes})
        written.append(out / f"{learning.results_stem('learning', task)}.json")
        for name, summary in result["summary"].items():
            print(f"{task} {name}: {summary['seeds']} records, final return {summary['final_mean']:.1f}, "
                  f"{summary['seeds_ever_at_target']} ever at the target")
    return written


def parse_budget(text: str) -> float:
    """Seconds from `2.5h`, `150m`, `9000s` or `9000`; CampaignError otherwise."""
    match = _BUDGET.match(text.strip())
    if not match or float(match.group(1)) <= 0:
        raise CampaignError(f"--budget {text!r}: give a positive time such as 2.5h, 150m or 9000s")
    return float(match.group(1)) * {"h": 3600, "m": 60, "s": 1, "": 1}[match.group(2)]


def default_state() -> pathlib.Path:
    """$XDG_CACHE_HOME/dreamer_jax/campaign (~/.cache when it is not set): outside the work tree."""
    cache = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(cache) / "dreamer_jax" / "campaign"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--budget", help="time to train for, e.g. 2.5h, 150m, 9000s (default: every run not recorded)")
    p.add_argument("--plan", type=pathlib.Path, default=PLAN, help="the list of runs")
    p.add_argument("--records", type=pathlib.Path, default=RECORDS, help="the records, TASK/VARIANT/seedK/")
    p.add_argument("--state", type=pathlib.Path, default=None,
                   help="the runs under way (default: $XDG_CACHE_HOME/dreamer_jax/campaign, outside the work tree)")
    p.add_argument("--out", type=pathlib.Path, default=REPO / "docs" / "results" / "campaign",
                   help="folder of the aggregates (beside, not over, the learning benchmark's earlier results)")
    p.add_argument("--status-file", type=pathlib.Path, default=None, help=f"default STATE/{STATUS_NAME}")
    p.add_argument("--commit", action="store_true", help="git commit each record as soon as it is written")
    p.add_argument("--dry-run", action="store_true", help="list every run and what the campaign would do with it")
    p.add_argument("--report", action="store_true", help="only write the aggregates from the records")
    p.add_argument("--complete", action="store_true",
                   help="only bring the records up to the list: judge again, from each run's state, the evaluations "
                        "a record lacks or that older metrics made")
    p.add_argument("--launcher", choices=launchers.LAUNCHERS, default="local", help="as experiments.sweep's")
    sweep_cli.add_slurm_flags(p)
    p.add_argument("--record-run", metavar="NAME", help=argparse.SUPPRESS)  # the launcher's child: one record
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    state = args.state or default_state()
    try:
        plan = load_plan(args.plan)
        check_records(plan, args.records)
        if args.record_run:
            entry = next(e for e in plan.entries if e.name == args.record_run)
            print(f"record: {write_record(plan, entry, state, args.records)}")
            return 0
        if args.complete:
            return complete_records(plan, args.records, state, args.commit)
        if args.report:
            args.out.mkdir(parents=True, exist_ok=True)
            written = report(plan, args.records, args.out)
            print("results: " + (", ".join(map(str, written)) if written else "none (no record yet)"))
            return 0
        budget = None if args.budget is None else parse_budget(args.budget)
        deadline = None if budget is None else time.monotonic() + budget
        chosen, others = select(plan, args.records, state, budget)
        options = sweep_options(plan, args, state, chosen)
        sweep_cli.check_launcher(options, args, os.environ)
        sweep_cli.check_paths(options)
    except (CampaignError, sweep.SweepError, cfg.ConfigError, StopIteration) as error:
        text = f"no run named {args.record_run} in {args.plan}" if isinstance(error, StopIteration) else error
        print(f"error: {text}", file=sys.stderr)
        return 2
    runs = [plan.run(entry, state, i) for i, entry in enumerate(chosen, 1)]
    if args.dry_run:
        speed = rates(plan, args.records)
        for entry, run in zip(chosen, runs):
            at = sweep.latest_checkpoint(run.logdir)
            extends = short(entry, args.records)
            print(f"train  {entry.name}: {'resumes from step ' + str(at) if at else 'new'}, to {entry.steps} env "
                  f"steps, about {remaining_s(plan, entry, state, speed[entry.variant]) / 3600:.1f} h"
                  + (f"; extends its record of {extends} env steps" if extends else ""))
        for entry, why in others:
            lacks = outdated(plan, entry.record(args.records)) if recorded(entry, args.records) else []
            fix = f"; lacks {', '.join(lacks)} (missing, or judged by older metrics): python -m benchmarks.campaign " \
                  "--complete" if lacks else ""
            print(f"skip   {entry.name}: {why}{fix}")
        print(f"state: {state}\nstatus: {options.status_file}")
        return 0
    if not runs:
        print("nothing to train: every run is recorded or held")
        return 0
    state.mkdir(parents=True, exist_ok=True)
    while True:
        code, stopped, budget_ended = _train(plan, args, state, options, runs, deadline)
        if budget_ended:
            print(f"the budget of {args.budget} ended: the run under way saved a checkpoint in {state}; run the "
                  "campaign again to resume it")
            return 0
        left = None if deadline is None else deadline - time.monotonic()
        if code or stopped or left is None or left < OVERHEAD_S:
            return min(code, 1) if code < 128 else code
        chosen, _ = select(plan, args.records, state, left)
        if not chosen:
            return 0
        print(f"{left / 60:.0f} minutes of the budget left: {len(chosen)} more run(s)", flush=True)
        options = sweep_options(plan, args, state, chosen)
        runs = [plan.run(entry, state, i) for i, entry in enumerate(chosen, 1)]


def sweep_options(plan: Plan, args: argparse.Namespace, state: pathlib.Path, chosen: list[Entry]) -> sweep.Options:
    """The sweep that trains the chosen runs in the state folder, with the campaign's status file and launcher."""
    return sweep.Options(
        logroot=state, task=" ".join(dict.fromkeys(e.task for e in chosen)) or "-",
        seeds=tuple(dict.fromkeys(e.seed for e in chosen)),
        conditions={e.variant: plan.variants[e.variant] for e in chosen}, configs=(plan.preset,),
        flags=plan.flags, run_log=state / LOG_NAME, status_file=args.status_file or state / STATUS_NAME,
        eval_args=plan.eval_args, eval_baseline=None, dry_run=args.dry_run, seeds_per_process=1,
        launcher=args.launcher, slurm=sweep_cli.slurm_parameters(args))


def _train(plan: Plan, args: argparse.Namespace, state: pathlib.Path, options: sweep.Options, runs: list,
           deadline: float | None) -> tuple[int, bool, bool]:
    """Train and record `runs` through the sweep until they end, a stop signal comes or the budget's deadline
    passes (the run under way saves a checkpoint): (the sweep's exit status, stopped by a signal, the budget ended)."""
    groups = sweep.plan_groups(runs, 1, [sweep.resume_state(run) for run in runs])
    with stop_requests() as stops:
        timer = None if deadline is None else threading.Timer(max(deadline - time.monotonic(), 0), stops.append,
                                                              (signal.SIGTERM,))
        if timer:
            timer.daemon = True
            timer.start()
        if args.launcher == "local":
            campaign = LocalCampaign(options, runs, groups, stops)
        else:
            campaign = ClusterCampaign(options, runs, groups, stops, launchers.make_executor(options))
        campaign.setup(args.plan, args.records, state, args.out, plan, args.commit)
        code = campaign.run()
        budget_ended = timer is not None and not timer.is_alive() and stops == [signal.SIGTERM]
        if timer:
            timer.cancel()
    return code, bool(stops) and not budget_ended, budget_ended


if __name__ == "__main__":
    sys.exit(main())
