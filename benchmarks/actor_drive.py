"""What moves the actor before its first reward, read off training runs' metrics.jsonl (records or run folders).

    python -m benchmarks.actor_drive                                    # the committed pilots, into docs/results/
    python -m benchmarks.actor_drive "pinpad_cpu=docs/results/runs/pinpad_three/rssm" "mine=runs/pinpad_three_rssm"

Each argument is LABEL=PATH: PATH is a run (a folder with metrics.jsonl) or a folder of runs at any depth; runs that
share a label form one condition. Per run, against env steps, the figure shows the periodic evaluation's return
(with 10x the random policy's, the target), the policy entropy, the reward the actor imagines per step against the
reward its own episodes earn per step, the advantage term's gradient on the actor against the entropy bonus's,
the reward head's prediction at replayed reward steps and elsewhere, the critic's error on replayed returns, the
imagined value, where the world model has the agent (the tracking probe: posterior frames, imagined step 5), and the
share of replayed steps that were rewarded (how much reward the world model saw).
The JSON and the printed table give each run's numbers at fixed env steps, its first step at the target, and its
lowest entropy before then. Runs trained before a metric was logged simply lack its curve.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import pathlib
import sys

import numpy as np

from dreamer_jax import config as cfg, curves

REPO = pathlib.Path(__file__).resolve().parent.parent
RESULTS = REPO / "docs" / "results"
DEFAULT_CONDITIONS = (
    f"pinpad_cpu_v2 (ratio 128, encoder 16/5)={RESULTS / 'pinpad_cpu_rssm_seed0'}",
    f"pinpad_cpu_v2 (ratio 128, encoder 16/5)={RESULTS / 'pinpad_cpu_rssm_seed1'}",
    f"pinpad_cpu_v3 (ratio 64)={RESULTS / 'runs' / 'pinpad_three' / 'rssm_v3'}",
    f"pinpad_cpu_v3, ratio 128={RESULTS / 'runs' / 'pinpad_three' / 'rssm_r128'}",
    f"pinpad_cpu_v3, ratio 128, actor and critic 4e-5={RESULTS / 'runs' / 'pinpad_three' / 'rssm_r128_ac4e-5'}",
    f"the same, no KL free nats={RESULTS / 'runs' / 'pinpad_three' / 'rssm_r128_ac4e-5_fn0'}",
    f"pinpad_cpu (pinpad_cpu_v1's model and learning rates)={RESULTS / 'runs' / 'pinpad_three' / 'rssm'}",
    f"the same, entropy bonus 3e-3={RESULTS / 'runs' / 'pinpad_three' / 'rssm_v1_ent3e-3'}",
    f"pinpad_cpu, VTA={RESULTS / 'runs' / 'pinpad_three' / 'vta'}",
)
AT = (10_000, 15_000, 20_000, 25_000)  # the env steps the table reads
TABLE = ("policy_entropy", "policy_entropy_start", "imag_reward", "earned_reward", "imag_value", "adv_abs",
         "drive_ratio", "rew_pred_event", "rew_pred_other", "repval_error", "return_scale", "tracking_posterior",
         "tracking_imagined_5", "replayed_reward")
ENTROPY_FLOOR = 1.2  # issue 43's aim: the entropy above this until the first evaluation at the target


class DriveError(ValueError):
    """Conditions that cannot be read as asked; the message names the problem and the fix."""


def labelled(arg: str, example: str) -> tuple[str, pathlib.Path]:
    """LABEL=PATH -> (label, path); DriveError naming the form (`example`) otherwise."""
    label, sep, path = arg.partition("=")
    if not sep or not label or not path:
        raise DriveError(f"{arg!r}: give each as LABEL=PATH, e.g. {example!r}")
    return label, pathlib.Path(path).expanduser()


def parse_conditions(args: list[str]) -> dict[str, list[pathlib.Path]]:
    """LABEL=PATH arguments -> label -> run folders (those under PATH with a metrics.jsonl, PATH itself included);
    a PATH that does not exist is skipped with a note (a pilot not yet recorded), one that holds no run is an
    error."""
    conditions: dict[str, list[pathlib.Path]] = {}
    for arg in args:
        label, root = labelled(arg, "pinpad_cpu=docs/results/runs/pinpad_three/rssm")
        if not root.exists():
            print(f"note: {root} does not exist (yet); {label!r} has no run from it", file=sys.stderr)
            continue
        runs = sorted({p.parent for p in root.rglob("metrics.jsonl")} | ({root} if (root / "metrics.jsonl").exists()
                                                                         else set()))
        if not runs:
            raise DriveError(f"{root} holds no metrics.jsonl; point {label!r} at a training run or a folder of runs")
        conditions.setdefault(label, []).extend(runs)
    if not conditions:
        raise DriveError("none of the given paths exists; pass LABEL=PATH for runs that do")
    return conditions


def with_derived(lines: list[dict], length: int, replayed: int) -> list[dict]:
    """Each line with `earned_reward` (its periodic evaluation's return per env step, what the policy earns),
    `drive_ratio` (the advantage term's gradient norm on the actor over the entropy bonus's) and `replayed_reward`
    (the share of the `replayed` steps of a training batch that were rewarded: how much reward the world model saw)
    where their inputs are logged."""
    out = []
    for line in lines:
        line = dict(line)
        if isinstance(line.get("eval_return"), (int, float)):
            line["earned_reward"] = line["eval_return"] / length
        if line.get("actor_grad_ent", 0) > 0 and "actor_grad_adv" in line:
            line["drive_ratio"] = line["actor_grad_adv"] / line["actor_grad_ent"]
        if "reward_events" in line:
            line["replayed_reward"] = line["reward_events"] / replayed
        out.append(line)
    return out


@functools.cache
def target_return(task: str, length: int) -> float:
    """10x the random policy's mean return on `task` with episodes of `length` (the learning benchmark's)."""
    from benchmarks import learning
    from experiments.envs import make_env

    return 10 * learning.baselines(make_env(cfg.make("debug", task=task, time_limit=length)))[0]


def value_at(lines: list[dict], metric: str, step: int) -> float | None:
    """The metric on the log line at `step` (the first line at or after it within one log interval), or None."""
    xs, ys = curves.series(lines, metric)
    later = np.flatnonzero(xs >= step)
    if not later.size or (later[0] > 0 and xs[later[0]] - xs[later[0] - 1] < xs[later[0]] - step):
        return None
    return float(ys[later[0]])


def run_row(label: str, run: pathlib.Path) -> tuple[dict, list[dict]]:
    """A run's table row and its lines (with the derived metrics)."""
    config = cfg.load(run / "config.json")
    lines = with_derived(curves.read_metrics(run), config.time_limit, config.batch_size * config.batch_length)
    target = target_return(config.task, config.time_limit)
    evals = list(zip(*curves.series(lines, "eval_return")))
    first = next((int(x) for x, y in evals if y >= target), None)
    before = [y for x, y in zip(*curves.series(lines, "policy_entropy")) if first is None or x < first]
    row = {"condition": label, "run": str(run.relative_to(REPO) if run.is_relative_to(REPO) else run),
           "seed": config.seed, "train_ratio": config.train_ratio, "episode_length": config.time_limit,
           "target_return": target,
           "first_target_step": first, "best_eval_return": max((y for _, y in evals), default=None),
           "last_step": int(lines[-1]["step"]) if lines else 0,
           "min_entropy_before_target": min(before, default=None),
           "at": {str(step): {m: value_at(lines, m, step) for m in TABLE} for step in AT}}
    return row, lines


def markdown(rows: list[dict]) -> str:
    """The per-seed table of issue 43's note."""
    fmt = lambda v, d=2: "–" if v is None else f"{v:.{d}f}"  # noqa: E731
    at = lambda row, m, d=2: " / ".join(fmt(row["at"][str(s)][m], d) for s in AT)  # noqa: E731
    per_1000 = lambda row: " / ".join(fmt(None if v is None else 1000 * v)  # noqa: E731
                                      for v in (row["at"][str(s)]["replayed_reward"] for s in AT))
    head = ("| condition | seed | first at target | best eval | entropy at 10k/15k/20k/25k | imagined / earned "
            "reward per step at 20k | advantage / entropy gradient at 10k/15k/20k/25k | agent tracked at 20k: "
            "posterior / imagined step 5 | rewarded per 1000 replayed steps at 10k/15k/20k/25k |"
            "\n|---|---|---|---|---|---|---|---|---|")
    body = [f"| {r['condition']} | {r['seed']} | {r['first_target_step'] or 'never'} (of {r['last_step']}) | "
            f"{fmt(r['best_eval_return'], 1)} | {at(r, 'policy_entropy')} | "
            f"{fmt(r['at']['20000']['imag_reward'], 4)} / {fmt(r['at']['20000']['earned_reward'], 4)} | "
            f"{at(r, 'drive_ratio', 1)} | {fmt(r['at']['20000']['tracking_posterior'])} / "
            f"{fmt(r['at']['20000']['tracking_imagined_5'])} | {per_1000(r)} |" for r in rows]
    return "\n".join([head, *body])


PANELS = (("eval_return", "periodic evaluation return"), ("policy_entropy", "policy entropy"),
          ("reward", "reward per step: imagined (solid), earned in evaluation (dashed)"),
          ("drive_ratio", "actor gradient: advantages / entropy bonus"),
          ("rew_pred", "reward head: at reward steps (solid), elsewhere (dotted)"),
          ("repval", "critic on replayed returns: |error| (solid), bias (dotted)"), ("imag_value", "imagined value"),
          ("tracking", "agent tracked: posterior (solid), imagined step 5 (dotted)"),
          ("replayed_reward", "rewarded share of replayed steps"))


def plot(groups: dict[str, list[tuple[dict, list[dict]]]], out: pathlib.Path) -> pathlib.Path:
    """One panel per quantity of PANELS; a colour per condition, a line per run."""
    import matplotlib

    from pinpad.env import REWARD

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 5, figsize=(25, 7.5))
    panels = dict(zip((name for name, _ in PANELS), axes.flat))
    styles = {"reward": (("imag_reward", "-"), ("earned_reward", "--")),
              "rew_pred": (("rew_pred_event", "-"), ("rew_pred_other", ":")),
              "repval": (("repval_error", "-"), ("repval_bias", ":")),
              "tracking": (("tracking_posterior", "-"), ("tracking_imagined_5", ":"))}
    for index, (label, runs) in enumerate(groups.items()):
        for number, (row, lines) in enumerate(runs):
            for name, ax in panels.items():
                for metric, style in styles.get(name, ((name, "-"),)):
                    xs, ys = curves.series(lines, metric)
                    ax.plot(xs, ys, style, color=f"C{index}", lw=2 if row["first_target_step"] else 0.8, alpha=0.8,
                            label=f"{label}" if number == 0 and metric == name == "eval_return" else None)
            if row["first_target_step"] is not None:
                panels["policy_entropy"].axvline(row["first_target_step"], color=f"C{index}", lw=0.6, ls="--")
    lengths = {row["target_return"]: row["episode_length"] for runs in groups.values() for row, _ in runs}
    targets = sorted(lengths)
    for target in targets:
        panels["eval_return"].axhline(target, color="0.3", ls="--", lw=1, label="10x random")
        random_rate = target / 10 / lengths[target]  # the random policy's reward per step
        panels["reward"].axhline(random_rate, color="0.3", ls=":", lw=1, label="random policy")
        panels["replayed_reward"].axhline(random_rate / REWARD, color="0.3", ls=":", lw=1, label="random policy")
    panels["policy_entropy"].axhline(math.log(5), color="0.3", ls=":", lw=1, label="ln 5 (uniform)")
    panels["policy_entropy"].axhline(ENTROPY_FLOOR, color="0.3", ls="--", lw=1, label=f"{ENTROPY_FLOOR}")
    panels["repval"].axhline(0.0, color="0.3", lw=0.6)
    for name in ("reward", "drive_ratio", "rew_pred"):
        panels[name].set_yscale("symlog", linthresh={"drive_ratio": 1.0}.get(name, 1e-3))
    for (name, title), ax in zip(PANELS, axes.flat):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("env steps")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(PANELS):]:
        ax.axis("off")
    panels["eval_return"].legend(fontsize=8)
    panels["policy_entropy"].legend(fontsize=8)
    panels["reward"].legend(fontsize=8)
    panels["replayed_reward"].legend(fontsize=8)
    fig.suptitle("What moves the actor before its first reward (pinpad; a line per seed, thick for the runs that "
                 "reached 10x random, dashed vertical: their first evaluation there)")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("conditions", nargs="*", default=list(DEFAULT_CONDITIONS), metavar="LABEL=PATH",
                   help="runs to read, grouped by label (default: the committed pilots)")
    p.add_argument("--out", type=pathlib.Path, default=RESULTS / "actor_drive",
                   help="writes OUT.json and OUT.png (default docs/results/actor_drive)")
    args = p.parse_args(argv)
    try:
        conditions = parse_conditions(args.conditions)
        groups = {label: [run_row(label, run) for run in runs] for label, runs in conditions.items()}
    except (DriveError, cfg.ConfigError, curves.CurveError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    rows = [row for runs in groups.values() for row, _ in runs]
    json_path = args.out.with_suffix(".json")
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps({"about": __doc__.split("\n\n")[0],
                                     "entropy_floor": ENTROPY_FLOOR, "runs": rows}, indent=1) + "\n")
    figure = plot(groups, args.out.with_suffix(".png"))
    print(markdown(rows))
    print(f"wrote {json_path} and {figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
