"""Learning curves of one run or of every run under a folder, and the open-loop predictions of a run's model.

    python -m experiments.plot --logdir RUN [--metrics eval_return loss_rec] [--x step|updates|time]
    python -m experiments.plot --logroot ROOT            # runs grouped by condition: mean and 95% interval
    python -m experiments.plot --logdir RUN --openloop   # also: observe 5 frames, imagine 45 (needs a checkpoint)
    python -m experiments.plot --logdir RUN --jumpy 5    # also: VTA's abstract model 5 segments ahead

Writes curves.png into the run (or the root), or to --out. Runs under a root are grouped by their directory
name without a trailing `_seed<N>` (as experiments.sweep names them). With --openloop, it writes openloop.png
and openloop.json (the mean squared error per imagined step, and the share of frames that draw the agent in its
cell, observed and at imagined steps 1, 5, 15, 45) beside it: episodes of the scripted solver
(pads, rewards, countdowns), observed for --context steps and imagined under their recorded actions. With
--jumpy K (a VTA run trained with --vta_value_mix below 1), it writes jumpy.png and jumpy.json: on the run's own
agent's episodes, from the state at step --context the abstract model alone predicts the next K READ steps, drawn
and scored against the posterior's READs.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import jax
import numpy as np

from dreamer_jax import curves, hierarchy, openloop
from dreamer_jax.boundaries import analysis
from dreamer_jax.status import write_atomic
from experiments import tracking
from experiments.envs import make_env

OPENLOOP_EPISODES = 16
JUMPY_EPISODES = 8


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m experiments.plot", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--logdir", type=pathlib.Path, help="one run directory")
    where.add_argument("--logroot", type=pathlib.Path, help="a folder of runs, grouped into conditions by name")
    p.add_argument("--metrics", nargs="+", default=list(curves.DEFAULT_METRICS),
                   help="metrics.jsonl keys to plot, one panel each")
    p.add_argument("--x", choices=curves.X_AXES, default="step", help="x axis")
    p.add_argument("--out", type=pathlib.Path, default=None, help="PNG path (default: curves.png in the run or root)")
    p.add_argument("--openloop", action="store_true", help="with --logdir: open-loop predictions of its checkpoint")
    p.add_argument("--context", type=int, default=5, help="observed frames before imagining (--openloop)")
    p.add_argument("--length", type=int, default=50, help="frames per open-loop episode, observed and imagined")
    p.add_argument("--seed", type=int, default=0, help="seed of the open-loop episodes and imagination")
    p.add_argument("--jumpy", type=int, default=0, metavar="K",
                   help="with --logdir: K segments ahead by VTA's abstract model alone (0: no)")
    return p


def curves_of(args: argparse.Namespace) -> pathlib.Path:
    """Draw the curves the arguments ask for; returns the PNG's path."""
    if args.logdir is not None:
        groups = {args.logdir.name: [curves.read_metrics(args.logdir)]}
        out = args.out or args.logdir / "curves.png"
    else:
        found = curves.find_runs(args.logroot)
        groups = {name: [curves.read_metrics(d) for d in dirs] for name, dirs in found.items()}
        out = args.out or args.logroot / "curves.png"
    available = curves.available_metrics([lines for runs in groups.values() for lines in runs])
    metrics = [m for m in args.metrics if m in available] if args.metrics == list(curves.DEFAULT_METRICS) \
        else args.metrics  # the defaults a run does not log (e.g. eval_return when never evaluated) are left out
    if not metrics:
        raise curves.CurveError(f"none of the metrics {', '.join(args.metrics)} was logged; available: "
                                f"{', '.join(available)}")
    return curves.plot(groups, metrics, args.x, out)


def open_loop(logdir: pathlib.Path, context: int, length: int, seed: int, out_dir: pathlib.Path,
              name: str = "openloop", episodes: int = OPENLOOP_EPISODES) -> dict:
    """Open-loop predictions of the run's latest checkpoint on scripted episodes, with the agent tracking of its
    decoded frames (`experiments.tracking`): writes out_dir/NAME.{png,json}."""
    config = analysis.load_config(logdir)
    env = make_env(config, max(length, config.time_limit))
    run = analysis.load_run(logdir, env)
    data, out = tracking.predict_episodes(run.learner, run.params, env, episodes, jax.random.PRNGKey(seed), context,
                                          length)
    mse = openloop.step_mse(data["image"], out["recon"], context)
    tracked = tracking.tracking(out["recon"], data["agent_cell"], context)
    result = {"logdir": str(logdir), "step": run.step, "dynamics": config.dynamics, "context": context,
              "length": length, "episodes": episodes, "seed": seed, "mse_per_step": mse.tolist(),
              "imagined_reads": int(out["read"][:, context:].sum()), "tracking": tracked}
    shares = ", ".join(f"{k} {v:.0%}" for k, v in tracked["imagined"].items())
    figure = openloop.figure(data["image"][0], out["recon"][0], out["read"][0], context, out_dir / f"{name}.png",
                             title=f"{logdir.name} at step {run.step}: {context} frames observed, then imagined; "
                             f"agent drawn in its cell ({episodes} episodes): observed {tracked['posterior']:.0%}, "
                             f"imagined step {shares}")
    write_atomic(out_dir / f"{name}.json", json.dumps(result, indent=2) + "\n")
    result["figure"] = str(figure)
    return result


def abstract_config(logdir: pathlib.Path):
    """The run's configuration if it has VTA's abstract model; RunError naming the fix if not."""
    config = analysis.load_config(logdir)
    if config.dynamics != "vta" or config.vta_value_mix >= 1:
        raise analysis.RunError(f"{logdir} has no abstract model (--dynamics {config.dynamics}, --vta_value_mix "
                                f"{config.vta_value_mix}); train a VTA run with --vta_value_mix below 1")
    return config


def jumpy(logdir: pathlib.Path, segments: int, start: int, seed: int, out_dir: pathlib.Path,
          episodes: int = JUMPY_EPISODES) -> dict:
    """The abstract model's jumps on the run's own agent's episodes, from step `start`, against the posterior's next
    READs: writes out_dir/jumpy.{png,json}; the result holds the mean absolute error of the k-th predicted READ."""
    config = abstract_config(logdir)
    env = make_env(config)
    if not 0 <= start < env.length - 1:
        raise analysis.RunError(f"--context {start} must be below the episode length {env.length} minus 1")
    run = analysis.load_run(logdir, env)
    collect_key, jump_key = jax.random.split(jax.random.PRNGKey(seed))
    data = analysis.collect(run, env, episodes, collect_key, "agent")
    inputs = {k: data[k] for k in ("image", "action", "is_first", "reward")} | {"start": np.full(episodes, start)}
    out = jax.device_get(hierarchy.jumpy_from_episodes(run.learner, run.params, inputs, jump_key, segments))
    actual = hierarchy.next_reads(out["read"], inputs["start"], segments)
    result = {"logdir": str(logdir), "step": run.step, "start": start, "episodes": episodes, "seed": seed,
              "predicted": out["ends"].tolist(), "actual": actual.tolist(),
              "mean_abs_error": hierarchy.read_errors(out["ends"], actual)}
    write_atomic(out_dir / "jumpy.json", json.dumps(result, indent=1) + "\n")
    result["figure"] = str(jumpy_figure(out["read"], out["ends"], start, out_dir / "jumpy.png",
                                        f"{logdir.name} at step {run.step}: {segments} segments ahead of step {start}"))
    return result


def jumpy_figure(read: np.ndarray, ends: np.ndarray, start: int, out: pathlib.Path, title: str) -> pathlib.Path:
    """One row per episode: the posterior's READs (ticks), the abstract model's predicted READs (red crosses) and
    the step they were predicted from (dotted)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 0.4 * len(read) + 1.2))
    for e, (row, predicted) in enumerate(zip(read, ends)):
        steps = np.flatnonzero(row)
        ax.scatter(steps, np.full(len(steps), e), marker="|", s=120, color="black",
                   label="posterior READ" if e == 0 else None)
        ax.scatter(predicted, np.full(len(predicted), e), marker="x", color="tab:red",
                   label="predicted READ" if e == 0 else None)
    ax.axvline(start, color="grey", ls=":", label="predicted from")
    ax.set(xlabel="step", ylabel="episode", title=title, xlim=(-1, read.shape[1]), yticks=range(len(read)))
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if (args.openloop or args.jumpy) and args.logdir is None:
            raise curves.CurveError(f"--{'openloop' if args.openloop else 'jumpy'} needs one run: pass --logdir RUN")
        if args.jumpy < 0:
            raise curves.CurveError(f"--jumpy {args.jumpy} must be 0 (no) or a number of segments")
        if args.openloop and not 1 <= args.context < args.length:
            raise curves.CurveError(f"--context {args.context} must be at least 1 and below --length {args.length}")
        if args.jumpy:  # a run to load, before anything is written
            abstract_config(args.logdir)
        elif args.openloop:
            analysis.load_config(args.logdir)
        print(f"curves: {curves_of(args)}")
        if args.openloop:
            out_dir = args.out.parent if args.out else args.logdir
            result = open_loop(args.logdir, args.context, args.length, args.seed, out_dir)
            mse = result["mse_per_step"]
            tracked = result["tracking"]
            print(f"open loop: {result['figure']} (mse at imagined steps 1, 10, {len(mse)}: "
                  f"{mse[0]:.4f}, {mse[min(9, len(mse) - 1)]:.4f}, {mse[-1]:.4f}; agent tracked in "
                  f"{tracked['posterior']:.0%} of observed frames, imagined "
                  + ", ".join(f"step {k} {v:.0%}" for k, v in tracked["imagined"].items()) + ")")
        if args.jumpy:
            out_dir = args.out.parent if args.out else args.logdir
            result = jumpy(args.logdir, args.jumpy, args.context, args.seed, out_dir)
            errors = ", ".join("n/a" if e is None else f"{e:.1f}" for e in result["mean_abs_error"])
            print(f"jumpy: {result['figure']} (mean absolute error of the predicted READ steps, 1 to "
                  f"{args.jumpy} segments ahead: {errors})")
    except (curves.CurveError, analysis.RunError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
