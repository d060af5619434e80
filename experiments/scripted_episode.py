"""Roll out the scripted pinpad solver and save a PNG strip of the episode with its events.

    python -m experiments.scripted_episode --task pinpad_eight --steps 120 --out runs/demo
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import jax
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import pinpad  # noqa: E402

# Event markers drawn on the strip, strongest first (a reward is also a pad event).
MARKERS = (("event_reward", "reward", "gold"), ("event_respawn", "respawn", "magenta"),
           ("event_pad", "pad", "red"), ("event_pad_visual", "pad cell", "deepskyblue"))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--task", default="pinpad_eight", choices=pinpad.TASKS)
    parser.add_argument("--steps", type=int, default=120, help="steps to draw")
    parser.add_argument("--length", type=int, default=pinpad.DEFAULT_LENGTH, help="episode length")
    parser.add_argument("--random_rate", type=float, default=0.1, help="share of uniform random moves")
    parser.add_argument("--columns", type=int, default=12, help="frames per row of the strip")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("runs/demo"), help="output folder")
    args = parser.parse_args(argv)
    for name in ("steps", "length", "columns"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be a positive integer, got {getattr(args, name)}")
    if not 0.0 <= args.random_rate <= 1.0:
        parser.error(f"--random_rate must be in [0, 1], got {args.random_rate}")
    return args


def rollout(task: str, steps: int, length: int, random_rate: float, seed: int) -> dict:
    """The observations of a solver episode from a reset, reset step included (host numpy)."""
    env = pinpad.make(task, length)
    reset_key, key = jax.random.split(jax.random.key(seed))
    state, first = env.reset(reset_key)
    _, obs = jax.jit(pinpad.scripted_rollout, static_argnums=(0, 3))(env, state, key, steps - 1, random_rate)
    return jax.tree.map(lambda a, b: np.concatenate([np.asarray(a)[None], np.asarray(b)]), first, obs)


def draw_strip(obs: dict, columns: int, title: str):
    """A grid of frames, each labelled with its step and framed in the colour of its event."""
    steps = len(obs["image"])
    rows = -(-steps // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(1.2 * columns, 1.4 * rows + 0.6), squeeze=False)
    for t, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if t >= steps:
            ax.axis("off")
            continue
        ax.imshow(obs["image"][t], interpolation="nearest")
        labels = [label for key, label, _ in MARKERS if obs[key][t]]
        colour = next((c for key, _, c in MARKERS if obs[key][t]), None)
        for spine in ax.spines.values():
            spine.set_color(colour or "lightgrey")
            spine.set_linewidth(3 if colour else 0.5)
        ax.set_title(f"{t}" + (f" {labels[0]}" if labels else ""), fontsize=7, color=colour or "black")
    handles = [plt.Line2D([], [], color=c, lw=3, label=label) for _, label, c in MARKERS]
    fig.legend(handles=handles, loc="lower center", ncol=len(MARKERS), fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=9)
    margin = 0.4 / (1.4 * rows + 0.6)
    fig.tight_layout(rect=(0, margin, 1, 1 - margin))
    return fig


def main(argv=None) -> int:
    args = parse_args(argv)
    obs = rollout(args.task, args.steps, args.length, args.random_rate, args.seed)
    counts = {label: int(obs[key].sum()) for key, label, _ in MARKERS}
    title = (f"{args.task}: scripted solver, {args.random_rate:.0%} random moves, seed {args.seed} — "
             + ", ".join(f"{n} {label}" for label, n in counts.items()))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{args.task}_scripted.png"
    fig = draw_strip(obs, args.columns, title)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"{args.task}: {args.steps} steps, return {obs['reward'].sum():g}; "
          + ", ".join(f"{label} events {n}" for label, n in counts.items()))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
