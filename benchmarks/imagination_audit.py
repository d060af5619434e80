"""Does imagination pay the actor reward that its own episodes do not earn? A check of trained runs' checkpoints.

    python -m benchmarks.imagination_audit "ratio 128=~/.cache/dreamer_jax/campaign/pinpad_three_rssm_r128_seed1"

Each argument is LABEL=RUN (a training run with a checkpoint). Per run: EPISODES episodes of its own agent on its
task; from the posterior every STRIDE steps, the world model imagines the actor's horizon twice (`openloop.
reward_audit`): under the actions the agent took, and under the actor as training imagines. The reward per step each
pays is set against what the episodes earned at the same steps, and the imagined reward events against the real
ones: imagination that pays where the episodes earn nothing misleads the actor. Writes --out (JSON) and prints a
table.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import jax
import numpy as np

from benchmarks import actor_drive, record
from dreamer_jax import openloop
from dreamer_jax.boundaries import analysis
from experiments.envs import make_env

EPISODES, STRIDE = 16, 10
EVENT = 0.5  # a step pays "a reward" when the head predicts at least this share of pinpad's reward of 10


def summary(real: np.ndarray, openloop_reward: np.ndarray, imagined: np.ndarray, reward: float = 10.0) -> dict:
    """Reward per imagined step of the recorded episodes, of imagination under their actions, and under the actor;
    the reward events each holds (steps that pay at least EVENT x `reward`), and how many of the open loop's fall
    where the episode earned one, or within a step of one."""
    paid = lambda r: np.asarray(r) >= EVENT * reward  # noqa: E731
    opened, earned = paid(openloop_reward), paid(real)
    near = earned.copy()
    near[:, 1:] |= earned[:, :-1]
    near[:, :-1] |= earned[:, 1:]
    return {"windows": int(real.shape[0]), "horizon": int(real.shape[1]),
            "real_per_step": float(np.mean(real)), "openloop_per_step": float(np.mean(openloop_reward)),
            "imagined_per_step": float(np.mean(imagined)),
            "real_events": int(earned.sum()), "openloop_events": int(opened.sum()),
            "imagined_events": int(paid(imagined).sum()), "openloop_events_on_real": int((opened & earned).sum()),
            "openloop_events_near_real": int((opened & near).sum())}


def audit(logdir: pathlib.Path, episodes: int, stride: int, seed: int) -> dict:
    """`summary` of one run's newest checkpoint on `episodes` of its own agent's episodes."""
    config = analysis.load_config(logdir)
    env = make_env(config)
    run = analysis.load_run(logdir, env)
    collect_key, audit_key = jax.random.split(jax.random.PRNGKey(seed))
    data = analysis.collect(run, env, episodes, collect_key)
    inputs = {k: data[k] for k in ("image", "action", "is_first", "reward")}
    out = jax.device_get(openloop.reward_audit(run.learner, run.params, inputs, audit_key, config.horizon, stride))
    actions = np.bincount(np.asarray(data["action"]).ravel(), minlength=env.num_actions)
    return {"run": str(logdir), "step": run.step, "task": config.task, "episodes": episodes, "stride": stride,
            "seed": seed, "episode_return": float(np.asarray(data["reward"]).sum(1).mean()),
            **summary(out["real"], out["openloop"], out["imagined"]),
            "acting_entropy": float(out["acting_entropy"].mean()),
            "imagined_entropy": float(out["imagined_entropy"].mean()),
            "action_shares": (actions / actions.sum()).round(4).tolist()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", metavar="LABEL=RUN", help="training runs with a checkpoint")
    p.add_argument("--episodes", type=int, default=EPISODES, help="episodes of each run's agent")
    p.add_argument("--stride", type=int, default=STRIDE, help="env steps between imagination starts")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="docs/results/imagination_audit.json")
    args = p.parse_args(argv)
    try:
        runs = [actor_drive.labelled(arg, "ratio 128=runs/pinpad_three_rssm") for arg in args.runs]
    except actor_drive.DriveError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.episodes < 1 or args.stride < 1:
        print("error: --episodes and --stride must be at least 1", file=sys.stderr)
        return 2
    rows = []
    for label, logdir in runs:
        try:
            rows.append({"label": label, **audit(logdir, args.episodes, args.stride, args.seed)})
        except analysis.RunError as error:
            print(f"error: {label}: {error}", file=sys.stderr)
            return 2
        jax.clear_caches()
    print("| run | step | return per episode | reward per step: earned / open loop / actor's imagination | reward "
          "events: earned / open loop (on earned, within a step) / actor's imagination | policy entropy: acting / "
          "imagined | action shares |\n|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['label']} | {r['step']} | {r['episode_return']:.2f} | {r['real_per_step']:.4f} / "
              f"{r['openloop_per_step']:.4f} / {r['imagined_per_step']:.4f} | {r['real_events']} / "
              f"{r['openloop_events']} ({r['openloop_events_on_real']}, {r['openloop_events_near_real']}) / "
              f"{r['imagined_events']} | {r['acting_entropy']:.3f} / {r['imagined_entropy']:.3f} | "
              f"{' '.join(f'{share:.2f}' for share in r['action_shares'])} |")
    record.write(args.out, "benchmarks.imagination_audit", argv, runs=rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
