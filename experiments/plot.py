"""Learning curves of one run or of every run under a folder, and the open-loop predictions of a run's model.

    python -m experiments.plot --logdir RUN [--metrics eval_return loss_rec] [--x step|updates|time]
    python -m experiments.plot --logroot ROOT            # runs grouped by condition: mean and 95% interval
    python -m experiments.plot --logdir RUN --openloop   # also: observe 5 frames, imagine 45 (needs a checkpoint)

Writes curves.png into the run (or the root), or to --out. Runs under a root are grouped by their directory
name without a trailing `_seed<N>` (as experiments.sweep names them). With --openloop, it writes openloop.png
and openloop.json (the mean squared error per imagined step, and the share of frames that draw the agent in its
cell, observed and at imagined steps 1, 5, 15, 45) beside it: episodes of the scripted solver
(pads, rewards, countdowns), observed for --context steps and imagined under their recorded actions.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import jax

from dreamer_jax import curves, openloop
from dreamer_jax.boundaries import analysis
from dreamer_jax.status import write_atomic
from experiments import tracking
from experiments.envs import make_env

OPENLOOP_EPISODES = 16


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


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.openloop and args.logdir is None:
            raise curves.CurveError("--openloop needs one run: pass --logdir RUN")
        if args.openloop and not 1 <= args.context < args.length:
            raise curves.CurveError(f"--context {args.context} must be at least 1 and below --length {args.length}")
        if args.openloop:
            analysis.load_config(args.logdir)  # a run to load, before anything is written
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
    except (curves.CurveError, analysis.RunError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
