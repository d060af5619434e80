"""Release a trained agent: its parameters alone (no replay, no optimiser state) as a run directory of its own.

    python -m experiments.release --logdir RUN --out released/NAME --trained_by "python -m benchmarks.learning ..."

Writes NAME/config.json (the run's), NAME/checkpoints/STEP (the parameters of the run's checkpoint --step, by
default its newest that restores) and NAME/provenance.json: the command that trained it, the commit it is released
at, its env steps, its mean return over fresh episodes beside the random policy's and the scripted solver's, and
its size in bytes.
Everything that loads a run loads it (`experiments.play`, `experiments.eval_boundaries`, `analysis.load_run`).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shutil
import sys
import time

import jax

from dreamer_jax import checkpoint
from dreamer_jax.boundaries import analysis
from dreamer_jax.status import write_atomic
from experiments import play
from experiments.provenance import commit

EPISODES = 16  # fresh episodes for the released agent's return and the baselines'


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m experiments.release", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--logdir", type=pathlib.Path, required=True, help="the trained run")
    p.add_argument("--out", type=pathlib.Path, required=True, help="the release's folder (must not exist)")
    p.add_argument("--trained_by", required=True, help="the command that trained the run, for the provenance")
    p.add_argument("--step", type=int, default=None,
                   help="the checkpoint to release (default: the newest that restores); say why in --trained_by")
    p.add_argument("--seed", type=int, default=0, help="seed of the evaluation episodes")
    return p


def folder_bytes(path: pathlib.Path) -> int:
    """Bytes of every file below `path`."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def release(run: analysis.Run, env, out: pathlib.Path, trained_by: str, key: jax.Array) -> dict:
    """Write the release of `run` into the new folder `out`; returns its provenance."""
    out.mkdir(parents=True)
    shutil.copy(run.logdir / "config.json", out / "config.json")
    checkpoint.save(checkpoint.manager(out, keep=1), run.step, {"params": run.params}, run.config)
    agent_key, baseline_key = jax.random.split(key)
    provenance = {
        "trained_by": trained_by, "source_logdir": str(run.logdir), "released_at_commit": commit(),
        "date": time.strftime("%Y-%m-%d"), "task": run.config.task, "dynamics": run.config.dynamics,
        "env_steps": run.step, "episode_length": env.length, "episodes": EPISODES,
        "return": float(run.learner.evaluate(run.params, EPISODES, agent_key)),
        **play.baselines(env, EPISODES, baseline_key),
    }
    provenance["bytes"] = folder_bytes(out)  # without provenance.json itself
    write_atomic(out / "provenance.json", json.dumps(provenance, indent=1) + "\n")
    return provenance


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.out.exists():
        print(f"error: {args.out} exists; release into a new folder (or delete the old release first)",
              file=sys.stderr)
        return 2
    try:
        env, run = play.load(args.logdir, args.step)
    except analysis.RunError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    provenance = release(run, env, args.out, args.trained_by, jax.random.PRNGKey(args.seed))
    print(f"released {args.logdir} at {run.step} env steps into {args.out} ({provenance['bytes'] / 1e6:.1f} MB): "
          f"return {provenance['return']:.1f} over {EPISODES} episodes (random {provenance['random_return']:.1f}, "
          f"scripted solver {provenance['scripted_return']:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
