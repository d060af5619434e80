"""The main job (`make demo`): a released agent plays one pinpad_three episode, a short VTA run is judged.

The released agent's episode becomes an animation with its READ boundaries and rewards (skipped with a note while
no agent is released); then a short VTA training run whose boundaries are its own is judged on scripted episodes
against the baselines; three lines at the end say what each part showed.

    python -m experiments.demo [--out runs/demo] [--released released/pinpad_three_vta] [--steps 3000]

The training run is the `debug` model with the segment constraints out of reach (`--vta_max_seg_len` and
`--vta_max_seg_num` above any sequence), so no length limit sets the rhythm of its READs. Running the demo again
resumes the finished run, which only prints where it is, and judges it again.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

from experiments import eval_boundaries, play, train

RELEASED = pathlib.Path("released/pinpad_three_vta")
UNCONSTRAINED = ("--vta_max_seg_len", "100000", "--vta_max_seg_num", "100000")  # beyond any training sequence
TRAIN_FLAGS = ("--configs", "debug", "--task", "pinpad_three", "--dynamics", "vta", *UNCONSTRAINED,
               "--log_every", "500", "--eval_every", "1000", "--save_every", "1000")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m experiments.demo", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", type=pathlib.Path, default=pathlib.Path("runs/demo"), help="folder of everything written")
    p.add_argument("--released", type=pathlib.Path, default=None,
                   help=f"the released agent to play (default: {RELEASED}, skipped with a note while none is there)")
    p.add_argument("--frames", type=int, default=300, help="steps of the released agent's episode to animate")
    p.add_argument("--steps", type=int, default=3000, help="env steps of the short training run")
    p.add_argument("--episodes", type=int, default=20, help="scripted episodes that judge the boundaries")
    p.add_argument("--length", type=int, default=500, help="steps of each judging episode")
    return p


def summary(played: dict | None, judged: dict, steps: int) -> list[str]:
    """Three lines for a newcomer: what was trained, what the released agent scores (None: none was played), how
    the boundaries compare."""
    pad = judged["events"]["pad"]
    show = lambda v: "n/a" if v is None else f"{v:.2f}"  # noqa: E731
    lift, pixel = pad["all"]["lift_over_event_rate"], pad["baselines"]["pixel_change"]["lift_over_event_rate"]
    low, high = pad["all"]["lift_over_event_rate_ci"] or (None, None)
    released = (f"released agent: none in {RELEASED} (python -m experiments.release makes one from a trained run)"
                if played is None else
                f"released agent ({played['dynamics'].upper()}, {played['step']} env steps of {played['task']}): "
                f"return {played['return']:g} in one {played['episode_length']}-step episode, against random "
                f"{played['random_return']:.1f} and the scripted solver {played['scripted_return']:.1f}; "
                f"animation {played['animation']}")
    return [
        f"trained: a small VTA world model and agent on {judged['task']} for {steps} env steps (the debug model, "
        f"no segment-length limit), in {judged['logdir']}",
        released,
        f"boundaries of the short run: {judged['boundary_count']} READs in {judged['scored_steps']} scripted steps; "
        f"a pad event is {show(lift)}x as likely at a READ as at any step (95% interval {show(low)}..{show(high)}, "
        f"circular-shift p {eval_boundaries.show_p(pad['all']['circular_shift_log10_p'])}), {show(pixel)}x at a large "
        "pixel change (same count)",
    ]


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    animation, run = args.out / "released_play.gif", args.out / "vta"
    released = args.released or (RELEASED if RELEASED.exists() else None)
    if not released:
        print(f"no released agent in {RELEASED}: its episode is skipped", flush=True)
    steps = [
        *([(play.main, ["--logdir", str(released), "--out", str(animation), "--frames", str(args.frames)])]
          if released else []),
        (train.main, [*TRAIN_FLAGS, "--steps", str(args.steps), "--logdir", str(run)]),
        (eval_boundaries.main, ["--logdir", str(run), "--policy", "scripted", "--episodes", str(args.episodes),
                                "--length", str(args.length)]),
    ]
    for step, step_argv in steps:
        code = step(step_argv)
        if code:
            return code
    played = json.loads(animation.with_suffix(".json").read_text()) if released else None
    judged = json.loads((run / eval_boundaries.RESULT).read_text())
    print("\n" + "\n".join(summary(played, judged, args.steps)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
