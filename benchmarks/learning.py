"""Does the agent learn? RSSM and VTA agents on a pinpad task, several seeds, against random and scripted play.

    python -m benchmarks.learning                       # the CPU setting (hours on 2 cores; resumable)
    python -m benchmarks.learning --setting gpu         # 64x64, size12m, 8 seeds vmapped (minutes on one GPU)
    python -m benchmarks.learning --report              # only (re)write the results from the runs already there
    python -m benchmarks.learning --task pinpad_four --dynamics rssm vta_hier   # results in learning_pinpad_four.*

`--dynamics` names the agents: rssm, vta, and vta_hier (VTA whose abstract model's segment return is mixed into
the critic's target, `--vta_value_mix 0.9`); each is recorded under its name. The default task is pinpad_three;
another task's files carry its name (learning_TASK.json, learning_curves_TASK.png, ...).

Trains each dynamics with `--num_seeds` seeds side by side (resumable: running it again continues the runs in
--logroot), measures the random and the scripted policy's return over episodes of the same length, evaluates
every seed's final policy, and writes into --out:
- learning.json: the settings, machine, versions, this invocation's wall time (None for --report), random_return,
  scripted_return, per dynamics the summary with its training seconds (summed over every invocation, from the
  logged rates, the seeds ever at the target and the median first step there), and per run {dynamics, seed,
  final_eval_return, first_target_step (null if never), tracking (the agent drawn in its cell: posterior and
  imagined steps 1, 5, 15, 45, on 32 scripted episodes), curve [[env_step, eval_return], ...], train_wall_s,
  train_cpu_s}, plus the open-loop errors and tracking;
- learning_curves.png: eval return against env steps, mean and 95% bootstrap interval over seeds per dynamics, with
  the random and scripted returns as lines;
- learning_diagnostics.png: the quantities that say why a run does or does not learn (reward loss and
  imagined reward, critic value, policy entropy, return scale, reconstruction);
- learning_tracking.png: agent tracking at each periodic evaluation (8 episodes);
- openloop_<dynamics>.png and .json: seed 0's world model observing 5 frames, then imagining 45.
The target: every seed reaching 10x the random policy's return, and soon (first_target_step).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import sys
import time

import jax
import numpy as np

import pinpad
from dreamer_jax import config as cfg, curves, run as run_lib
from dreamer_jax.boundaries import analysis
from dreamer_jax.status import write_atomic
from dreamer_jax.train import release_programs
from experiments import tracking
from experiments.envs import make_env
from experiments.plot import open_loop

TASK = "pinpad_three"  # the default task; its results are learning.json, another task's learning_TASK.json
# The agents the benchmark compares: name -> configuration fields. vta_hier is VTA with its hierarchy reaching the
# critic (the abstract model's segment return mixed into the critic's target, psi 0.9 as in THICK Dreamer).
VARIANTS = {"rssm": dict(dynamics="rssm"), "vta": dict(dynamics="vta"), "vta_hier": dict(dynamics="vta",
                                                                                        vta_value_mix=0.9)}
TARGET = 10.0  # eval return over the random policy's, every seed
BASELINE_EPISODES = 64
FINAL_EPISODES = 16
TRACKING_EPISODES = 32  # scripted episodes for each run's final agent tracking
DIAGNOSTICS = ("loss_rew", "imag_reward", "imag_value", "policy_entropy", "return_scale", "loss_rec")
TRACKING = ("tracking_posterior", "tracking_imagined_1", "tracking_imagined_15", "tracking_imagined_45")

# Settings: presets and fields on top of the defaults; the benchmark adds task, dynamics, seeds and logdir.
SETTINGS = {
    # The `pinpad_cpu` preset: `pinpad_cpu_v1`, behind the committed learning.json, with 8 evaluation episodes. At
    # `pinpad_cpu_v1` 3 seeds took 2.5 hours (RSSM) and 3.9 hours (VTA) on 2 cores. benchmarks.campaign trains such
    # runs a few at a time and keeps each as a record.
    "cpu": dict(configs=("pinpad_cpu",), seeds=3, time_budget=None, fields={}),
    # The official model at size12m on 64x64 images at the official train ratio and batch, 8 seeds vmapped in one
    # process, trained for a time budget (about 8 minutes of GPU time with compiling, saving and evaluating).
    # Learning rate 1e-4 with a 200-update warm-up instead of the official 4e-5 over 1000: a few thousand updates
    # fit in the budget. An iteration is 32 env steps (2 per env, one update), a chunk 32 iterations; prefill and
    # the log, eval and save periods are multiples of 1024 steps, so every chunk has the same length and the
    # fused loop compiles once for prefilling and once for training.
    "gpu": dict(
        configs=("size12m",), seeds=8, time_budget=dict.fromkeys(VARIANTS, 400),
        fields=dict(size=64, envs=16, time_limit=1000, prefill=3072, steps=1_024_000, replay_size=40_000, lr=1e-4,
                    warmup=200, eval_every=10_240, eval_episodes=8, log_every=5_120, save_every=1_024_000,
                    precision="bf16")),
    # For tests: the debug model on a few hundred steps.
    "tiny": dict(
        configs=("debug",), seeds=1, time_budget=None,
        fields=dict(time_limit=50, steps=128, eval_every=64, log_every=64, save_every=128)),
}
FIELDS_FIXED_HERE = ("task", "dynamics", "vta_value_mix", "num_seeds", "seed", "logdir")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.learning", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--setting", choices=tuple(SETTINGS), default="cpu", help="which setting to run")
    p.add_argument("--dynamics", nargs="+", choices=tuple(VARIANTS), default=["rssm", "vta"],
                   help="the agents to compare (vta_hier: VTA with --vta_value_mix 0.9)")
    p.add_argument("--task", choices=pinpad.TASKS, default=TASK, help="the pinpad task")
    p.add_argument("--seeds", type=int, default=None, help="seeds per dynamics (default: the setting's)")
    p.add_argument("--logroot", type=pathlib.Path, default=None, help="run folders (default: runs/learning_SETTING)")
    p.add_argument("--out", type=pathlib.Path, default=pathlib.Path("docs/results"), help="folder of the results")
    p.add_argument("--time_budget", type=float, default=None,
                   help="seconds of training for each dynamics, compiling included (default: the setting's)")
    p.add_argument("--report", action="store_true", help="write the results from the runs in --logroot, no training")
    p.add_argument("--no-openloop", dest="openloop", action="store_false", help="skip the open-loop figures")
    p.add_argument("--set", nargs="+", default=[], metavar="FIELD=VALUE", help="override a setting's fields")
    return p


def setting_config(name: str, variant: str, seeds: int, logroot: pathlib.Path, overrides: list[str],
                   task: str = TASK) -> cfg.Config:
    """The configuration of one variant in a setting: its presets and fields, then `FIELD=VALUE` overrides."""
    setting = SETTINGS[name]
    flags = [f"--{item.replace('=', ' ', 1)}".split(" ", 1) for item in overrides]
    bad = [flag for flag, *_ in flags if flag[2:] in FIELDS_FIXED_HERE]
    if bad:
        raise cfg.ConfigError(f"{', '.join(bad)} is set by the benchmark itself; drop it from --set")
    base = cfg.make(*setting["configs"], **setting["fields"], **VARIANTS[variant], task=task, num_seeds=seeds,
                    logdir=str(logroot / f"{task}_{variant}_seed{{seed}}"))
    return cfg.parse([token for flag in flags for token in flag], base=base)


def final_measures(logdir: pathlib.Path, env, seed: int) -> tuple[float, int, dict]:
    """(mean return of FINAL_EPISODES fresh episodes of the run's latest policy, the checkpoint's step, its world
    model's agent tracking on TRACKING_EPISODES scripted episodes)."""
    run = analysis.load_run(logdir, env)
    ret = float(run.learner.evaluate(run.params, FINAL_EPISODES, jax.random.PRNGKey(10_000 + seed)))
    tracked = tracking.measure(run.learner, run.params, env, TRACKING_EPISODES, jax.random.PRNGKey(20_000 + seed))
    release_programs()  # each run compiles its own; keep the process's memory maps bounded
    return ret, run.step, tracked


def first_at(curve: list[list[float]], target: float) -> int | None:
    """The first env step whose periodic evaluation reached `target`, or None if none did."""
    return next((int(step) for step, value in curve if value >= target), None)


def results_stem(stem: str, task: str) -> str:
    """A result file's name without its suffix: STEM for the default task, STEM_TASK for another."""
    return stem if task == TASK else f"{stem}_{task}"


def train_setting(configs: dict[str, cfg.Config], budgets: dict[str, float] | None) -> float:
    """Train every variant's seeds (resuming where runs exist) within its seconds of budget; returns the wall time."""
    start = time.monotonic()
    for variant, config in configs.items():
        deadline = None if budgets is None else time.monotonic() + budgets[variant]
        env = make_env(config)
        run_lib.train(config, env, deadline=deadline, probe=tracking.probe(env))
    return time.monotonic() - start


def median_first(firsts: list[int | None]) -> float | None:
    """The median over seeds of the first step at the target, a seed that never reached it counting as later than
    any; None when that median is such a seed."""
    median = float(np.median([np.inf if step is None else step for step in firsts]))
    return None if np.isinf(median) else median


def run_entry(variant: str, task: str, seed: int, lines: list[dict], final: float, step: int, tracked: dict,
              target: float, logdir: str) -> dict:
    """A run's entry in learning.json: its final measures, its curve of periodic evaluations, when it first
    reached `target`, and its training's wall and CPU seconds (over every session that trained it)."""
    xs, ys = curves.series(lines, "eval_return")
    curve = [[int(x), float(y)] for x, y in zip(xs, ys)]
    return {"dynamics": variant, "task": task, "seed": seed, "final_eval_return": final, "final_step": step,
            "first_target_step": first_at(curve, target), "tracking": tracked, "curve": curve,
            **training_seconds(lines), "logdir": logdir}


def training_seconds(lines: list[dict]) -> dict:
    """A run's training wall seconds (its last log line's) and CPU seconds (summed over its log lines)."""
    return {"train_wall_s": lines[-1]["time"], "train_cpu_s": sum(line.get("cpu_s", 0.0) for line in lines)}


def baselines(env) -> tuple[float, float]:
    """(random, scripted) policy's mean return over BASELINE_EPISODES episodes of `env`."""
    key = jax.random.PRNGKey(0)
    return (float(pinpad.baseline_return(env, "random", BASELINE_EPISODES, key)),
            float(pinpad.baseline_return(env, "scripted", BASELINE_EPISODES, key)))


def report(args, configs: dict[str, cfg.Config], wall_s: float | None) -> dict:
    """Measure baselines and the runs' final returns, draw the figures and write learning.json (learning_TASK.json
    for another task); returns its content."""
    env = make_env(next(iter(configs.values())))
    random_return, scripted_return = baselines(env)
    runs, groups, openloops = [], {}, {}
    for variant, config in configs.items():
        groups[variant] = []
        for seed_config in run_lib.seed_configs(config):
            logdir = pathlib.Path(seed_config.logdir)
            lines = curves.read_metrics(logdir)
            groups[variant].append(lines)
            runs.append(run_entry(variant, config.task, seed_config.seed, lines,
                                  *final_measures(logdir, env, seed_config.seed), TARGET * random_return,
                                  str(logdir)))
        if args.openloop:
            first = pathlib.Path(run_lib.seed_configs(config)[0].logdir)
            result = open_loop(first, 5, 50, 0, args.out, name=results_stem(f"openloop_{variant}", args.task))
            openloops[variant] = {k: result[k] for k in ("step", "context", "mse_per_step", "tracking",
                                                                 "imagined_reads")}
    return write_results(args.out, args.task, args.setting, runs, groups, (random_return, scripted_return), env.length,
                         {"command": " ".join(["python -m benchmarks.learning"] + sys.argv[1:]), "openloop": openloops,
                          "settings": {variant: cfg.to_dict(c) for variant, c in configs.items()}, "wall_s": wall_s})


def write_results(out: pathlib.Path, task: str, setting: str, runs: list[dict], groups: dict[str, list[list[dict]]],
                  returns: tuple[float, float], episode_length: int, extra: dict) -> dict:
    """Summarise runs per dynamics, draw the figures and write learning.json (learning_TASK.json for another task)
    from the runs' entries (`run_entry`) and their metrics lines by dynamics; returns its content."""
    named = lambda stem, suffix="png": out / f"{results_stem(stem, task)}.{suffix}"  # noqa: E731
    random_return, scripted_return = returns
    target = TARGET * random_return
    summary = {}
    for dynamics in groups:
        finals = np.array([r["final_eval_return"] for r in runs if r["dynamics"] == dynamics])
        mean, low, high = curves.interval(finals)
        firsts = [r["first_target_step"] for r in runs if r["dynamics"] == dynamics]
        summary[dynamics] = {"final_mean": float(mean), "final_ci95": [float(low), float(high)],
                             "seeds_at_target": int((finals >= target).sum()), "seeds": int(finals.size),
                             "seeds_ever_at_target": sum(step is not None for step in firsts),
                             "median_first_target_step": median_first(firsts),
                             "train_s": max(lines[-1]["time"] for lines in groups[dynamics])}
    lines = {"random": random_return, "scripted": scripted_return, f"target ({TARGET:g}x random)": target}
    title = f"{task}, {setting} setting"
    every = [line for group in groups.values() for lines_of_run in group for line in lines_of_run]
    curves.plot(groups, ["eval_return"], "step", named("learning_curves"), hlines=lines, title=title)
    diagnostics = [m for m in DIAGNOSTICS if m in curves.available_metrics([every])]
    if diagnostics:  # none before the first update
        curves.plot(groups, diagnostics, "step", named("learning_diagnostics"), title=title)
    tracked = [m for m in TRACKING if m in curves.available_metrics([every])]
    if tracked:  # the share of decoded frames that draw the agent in its cell, at each periodic evaluation
        curves.plot(groups, tracked, "step", named("learning_tracking"), title=title)
    result = {
        "task": task, "setting": setting, "command": extra.pop("command"), "episode_length": episode_length,
        "random_return": random_return, "scripted_return": scripted_return, "baseline_episodes": BASELINE_EPISODES,
        "final_episodes": FINAL_EPISODES, "target_return": target, "summary": summary, "runs": runs, **extra,
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "device": jax.devices()[0].device_kind, "backend": jax.default_backend(),
                    "devices": jax.device_count()},
        "versions": {"python": platform.python_version(), "jax": jax.__version__, "numpy": np.__version__},
        "date": time.strftime("%Y-%m-%d"),
    }
    write_atomic(named("learning", "json"), json.dumps(result, indent=1) + "\n")
    return result


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    setting = SETTINGS[args.setting]
    seeds = setting["seeds"] if args.seeds is None else args.seeds
    args.logroot = args.logroot or pathlib.Path(f"runs/learning_{args.setting}")
    budgets = setting["time_budget"] if args.time_budget is None else dict.fromkeys(args.dynamics, args.time_budget)
    try:
        if seeds < 1:
            raise cfg.ConfigError(f"--seeds {seeds} must be at least 1")
        configs = {v: setting_config(args.setting, v, seeds, args.logroot, args.set, args.task) for v in args.dynamics}
        wall_s = None if args.report else train_setting(configs, budgets)
        args.out.mkdir(parents=True, exist_ok=True)
        result = report(args, configs, wall_s)
    except (cfg.ConfigError, curves.CurveError, analysis.RunError, run_lib.RunDirInUse) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for r in result["runs"]:
        print(f"{r['dynamics']} seed {r['seed']}: final return {r['final_eval_return']:.1f}, first at target "
              f"{r['first_target_step']}, agent tracked in {r['tracking']['posterior']:.0%} of observed frames, "
              f"{r['tracking']['imagined']['15']:.0%} at imagined step 15")
    print(f"random {result['random_return']:.1f}, scripted {result['scripted_return']:.1f}, target "
          f"{result['target_return']:.1f} per {result['episode_length']}-step episode")
    for dynamics, s in result["summary"].items():
        print(f"{dynamics}: final eval return {s['final_mean']:.1f} (95% CI {s['final_ci95'][0]:.1f} .. "
              f"{s['final_ci95'][1]:.1f}), {s['seeds_at_target']}/{s['seeds']} seeds at the target")
    stems = [results_stem(stem, args.task) for stem in ("learning", "learning_curves")]
    print(f"results: {args.out / stems[0]}.json, {args.out / stems[1]}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
