"""Watch a trained agent: one episode of its policy as an animation, with its READ boundaries and rewards marked.

    python -m experiments.play --logdir RUN [--out play.gif] [--frames 300] [--seed 0]

Loads the run's newest checkpoint (a training run or a `released/` agent, through the same code), plays one
episode of its task, and writes the animation (a GIF; `.mp4` if ffmpeg is installed) and a JSON of the same name
beside it (play.json): the episode's return, the random policy's and the scripted solver's mean returns over
episodes of the same length, and the READ steps (a VTA's posterior boundaries, read by filtering the episode;
an RSSM has none).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import jax
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib import animation  # noqa: E402

import pinpad  # noqa: E402
from dreamer_jax.boundaries import analysis  # noqa: E402
from dreamer_jax.status import write_atomic  # noqa: E402
from experiments.envs import make_env  # noqa: E402

BASELINE_EPISODES = 16


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m experiments.play", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--logdir", type=pathlib.Path, required=True, help="the run (or released agent) to play")
    p.add_argument("--out", type=pathlib.Path, default=None, help="the animation's path (default: RUN/play.gif)")
    p.add_argument("--frames", type=int, default=None,
                   help="animate the first N steps (default: the whole episode); the return is the whole episode's")
    p.add_argument("--fps", type=int, default=20, help="frames per second of the animation")
    p.add_argument("--dpi", type=int, default=100, help="its resolution: the figure is 3.2 x 4 inches (100: 320 x 400 "
                                                       "pixels; 60 makes a GIF of a third the bytes)")
    p.add_argument("--seed", type=int, default=0, help="seed of the episode and of the baselines' episodes")
    return p


def load(logdir: pathlib.Path, step: int | None = None) -> tuple[pinpad.Pinpad, analysis.Run]:
    """(the env of the run's task, the run with checkpoint `step`, default its newest that restores); RunError if
    there is none."""
    env = make_env(analysis.load_config(logdir))
    return env, analysis.load_run(logdir, env, step)


def baselines(env, episodes: int, key: jax.Array) -> dict:
    """Mean returns of the random policy and the scripted solver over `episodes` episodes of the env's length."""
    return {f"{policy}_return": float(pinpad.baseline_return(env, policy, episodes, key))
            for policy in ("random", "scripted")}


def play(run: analysis.Run, env, key: jax.Array) -> dict:
    """One episode of the run's policy: its frames, rewards, and (VTA) the READ boundaries of its posterior."""
    play_key, trace_key = jax.random.split(key)
    data = analysis.collect(run, env, 1, play_key, "agent")
    trace = analysis.trace(run, data, trace_key)
    read = trace.read[0] if trace.has_boundaries else np.zeros(env.length, bool)
    return {"frames": trace.frames[0], "reward": trace.reward[0], "read": read}


def animate(episode: dict, path: pathlib.Path, frames: int, fps: int, title: str, dpi: int = 100) -> None:
    """The first `frames` steps: the observation (framed in red at a READ), and a strip of the READs (black) and
    rewards (green) with a cursor at the current step."""
    image, reward, read = episode["frames"][:frames], episode["reward"][:frames], episode["read"][:frames]
    returns = np.cumsum(reward)
    fig, (top, strip) = plt.subplots(2, 1, figsize=(3.2, 4.0), gridspec_kw={"height_ratios": [5, 1]})
    shown = top.imshow(image[0], interpolation="nearest")
    top.set_xticks([]), top.set_yticks([])
    heading = top.set_title("", fontsize=8)
    strip.vlines(np.flatnonzero(read), 0.5, 1.0, color="black", linewidth=0.6, label="READ")
    strip.vlines(np.flatnonzero(reward > 0), 0.0, 0.5, color="tab:green", linewidth=1.2, label="reward")
    cursor = strip.axvline(0, color="tab:red", linewidth=1.0)
    strip.set_xlim(0, len(image)), strip.set_ylim(0, 1), strip.set_yticks([])
    strip.set_xlabel("step", fontsize=7), strip.tick_params(labelsize=6)
    strip.legend(fontsize=6, loc="upper right", ncols=2, frameon=False, bbox_to_anchor=(1.0, 1.6))
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()

    def update(t):
        shown.set_data(image[t])
        colour = "tab:red" if read[t] else "white"
        for spine in top.spines.values():
            spine.set_edgecolor(colour), spine.set_linewidth(3)
        heading.set_text(f"step {t}   return {returns[t]:g}" + ("   READ" if read[t] else ""))
        cursor.set_xdata([t, t])
        return shown, heading, cursor

    writer = animation.FFMpegWriter(fps=fps) if path.suffix == ".mp4" else animation.PillowWriter(fps=fps)
    path.parent.mkdir(parents=True, exist_ok=True)
    animation.FuncAnimation(fig, update, frames=len(image), blit=False).save(path, writer=writer, dpi=dpi)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.frames is not None and args.frames < 1:
        parser().error(f"--frames {args.frames} must be at least 1")
    if args.dpi < 10:
        parser().error(f"--dpi {args.dpi} must be at least 10")
    out = args.out or args.logdir / "play.gif"
    if out.suffix not in (".gif", ".mp4"):
        parser().error(f"--out {out} must end in .gif or .mp4")
    if out.suffix == ".mp4" and not animation.FFMpegWriter.isAvailable():
        parser().error("--out .mp4 needs ffmpeg on the PATH; install it or write a .gif")
    try:
        env, run = load(args.logdir)
    except analysis.RunError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    key, baseline_key = jax.random.split(jax.random.PRNGKey(args.seed))
    episode = play(run, env, key)
    config = run.config
    result = {
        "logdir": str(args.logdir), "step": run.step, "task": config.task, "dynamics": config.dynamics,
        "episode_length": env.length, "return": float(episode["reward"].sum()),
        **baselines(env, BASELINE_EPISODES, baseline_key), "baseline_episodes": BASELINE_EPISODES,
        "reads": np.flatnonzero(episode["read"]).tolist(),
        "animation": str(out), "frames": min(args.frames or env.length, env.length), "seed": args.seed,
        "dpi": args.dpi,
    }
    title = f"{config.dynamics.upper()} on {config.task}, {run.step} env steps"
    animate(episode, out, result["frames"], args.fps, title, args.dpi)
    write_atomic(out.with_suffix(".json"), json.dumps(result, indent=1) + "\n")
    print(f"{title}: return {result['return']:g} in {env.length} steps (random {result['random_return']:.1f}, "
          f"scripted solver {result['scripted_return']:.1f}; {len(result['reads'])} READs); "
          f"animation: {out} ({result['frames']} steps)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
