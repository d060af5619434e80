"""Seconds per update of this project against the public official JAX DreamerV3, timed side by side.

    python -m benchmarks.official_ratio --official-tree TREE --official-python VENV/bin/python \\
        [--bench ../shared/tools/peerbench/bench_jax.py] [--presets size1m size12m] [--updates 4] [--json PATH]
    python -m benchmarks.official_ratio ... --dry-run      # print the commands, run nothing

For each preset, one right after the other on the same machine: the official update, ours compiled with XLA's
defaults, ours as the learner compiles it (`dreamer_jax.train.COMPILER_OPTIONS`), the official update again. Each
is its own process, float32, batch 16 x 64, 64x64 images, 5 discrete actions, the median of `--updates` updates
after one warm-up. The ratio is the mean of the two official medians over ours (above 1: ours is faster); the two
official figures show how much the machine drifted meanwhile.

The official side is `bench_jax.py` of `../shared/tools/peerbench/` (its README says how to fetch the official tree
at the commit used and make its virtual environment); nothing of the official code is in this project. Its
sequences carry one extra context step (65 steps against our 64).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shlex
import statistics
import subprocess
import sys
import tempfile

BENCH = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "tools" / "peerbench" / "bench_jax.py"
BATCH = (16, 64)


def official_command(args, preset: str, out: pathlib.Path) -> tuple[list[str], dict]:
    """The official update's timing command and its environment additions."""
    size, length = BATCH
    argv = [str(args.official_python), str(args.bench), "--size", preset, "--batch_size", str(size),
            "--batch_length", str(length), "--updates", str(args.updates), "--warmup", "1",
            "--compute_dtype", "float32", "--json_out", str(out)]
    return argv, {"DV3_JAX_REPO": str(args.official_tree)}


def ours_command(args, preset: str, out: pathlib.Path, xla_defaults: bool) -> list[str]:
    """Our update's timing command (benchmarks.train_throughput, one row, no fused loop)."""
    size, length = BATCH
    argv = [sys.executable, "-m", "benchmarks.train_throughput", "--presets", preset, "--batches", f"{size}x{length}",
            "--updates", str(args.updates), "--fused_presets", "--json", str(out)]
    return argv + (["--xla_defaults"] if xla_defaults else [])


def plan(args, folder: pathlib.Path) -> list[dict]:
    """The timed commands in order, per preset: official, ours with XLA's defaults, ours, official."""
    steps = []
    for preset in args.presets:
        for index, (side, variant) in enumerate((("official", "first"), ("ours", "XLA defaults"),
                                                 ("ours", "learner options"), ("official", "second"))):
            out = folder / f"{preset}_{index}_{side}.json"
            if side == "official":
                argv, env = official_command(args, preset, out)
            else:
                argv, env = ours_command(args, preset, out, variant == "XLA defaults"), {}
            steps.append(dict(preset=preset, side=side, variant=variant, argv=argv, env=env, out=out))
    return steps


def seconds(step: dict) -> float:
    """The median seconds per update a finished step wrote."""
    data = json.loads(step["out"].read_text())
    return data["median_s_per_update"] if step["side"] == "official" else data["updates"][0]["seconds_per_update"]


def summarise(steps: list[dict]) -> list[dict]:
    """Per preset: both official figures, ours with XLA's defaults and with the learner's options, the ratios."""
    rows = []
    for preset in dict.fromkeys(s["preset"] for s in steps):
        got = {(s["side"], s["variant"]): s["seconds"] for s in steps if s["preset"] == preset}
        official = statistics.mean([got["official", "first"], got["official", "second"]])
        ours, defaults = got["ours", "learner options"], got["ours", "XLA defaults"]
        rows.append(dict(preset=preset, official_first_s=got["official", "first"],
                         official_second_s=got["official", "second"], ours_xla_defaults_s=defaults, ours_s=ours,
                         ratio=official / ours, ratio_xla_defaults=official / defaults))
    return rows


def check(args) -> None:
    """Refuse paths that do not exist before anything runs."""
    paths = {"--official-tree": args.official_tree / "dreamerv3", "--official-python": args.official_python,
             "--bench": args.bench}
    for flag, path in paths.items():
        if not path.exists():
            sys.exit(f"official_ratio: {flag}: {path} does not exist; see ../shared/tools/peerbench/README.md "
                     "for fetching the official tree and making its virtual environment")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official-tree", type=pathlib.Path, required=True,
                        help="the unpacked official danijar/dreamerv3 tree (holds dreamerv3/ and embodied/)")
    parser.add_argument("--official-python", type=pathlib.Path, required=True,
                        help="the Python of the official code's virtual environment")
    parser.add_argument("--bench", type=pathlib.Path, default=BENCH, help="peerbench's bench_jax.py")
    parser.add_argument("--presets", nargs="+", default=["size1m", "size12m"], choices=("size1m", "size12m"))
    parser.add_argument("--updates", type=int, default=4, help="timed updates per process, after one warm-up")
    parser.add_argument("--json", type=pathlib.Path, help="also write the commands and figures to this JSON file")
    parser.add_argument("--dry-run", action="store_true", help="print the commands and run nothing")
    args = parser.parse_args(argv)
    if args.updates < 1:
        parser.error("--updates must be at least 1")
    with tempfile.TemporaryDirectory() as scratch:
        steps = plan(args, pathlib.Path(scratch))
        if args.dry_run:
            for step in steps:
                env = " ".join(f"{k}={shlex.quote(v)}" for k, v in step["env"].items())
                print((env + " " if env else "") + shlex.join(step["argv"]))
            return
        check(args)
        for step in steps:
            print(f"{step['preset']}: {step['side']} ({step['variant']}) ...", file=sys.stderr, flush=True)
            subprocess.run(step["argv"], env={**os.environ, **step["env"]}, check=True, stdout=subprocess.DEVNULL)
            step["seconds"] = seconds(step)
            print(f"  {step['seconds']:.3f} s / update", file=sys.stderr, flush=True)
        rows = summarise(steps)
    print(f"Seconds per update, float32, batch {BATCH[0]} x {BATCH[1]}, 64x64 images, timed side by side in this "
          f"run (official, ours with XLA defaults, ours, official), median of {args.updates} updates each")
    print()
    print("| preset | official, first | official, second | ours, XLA defaults | ours | official / ours "
          "| official / ours with XLA defaults |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['preset']} | {r['official_first_s']:.2f} | {r['official_second_s']:.2f} | "
              f"{r['ours_xla_defaults_s']:.2f} | {r['ours_s']:.2f} | {r['ratio']:.2f}x | "
              f"{r['ratio_xla_defaults']:.2f}x |")
    if args.json:
        commands = [dict(preset=s["preset"], side=s["side"], variant=s["variant"], argv=s["argv"], env=s["env"],
                         seconds=s["seconds"]) for s in steps]
        args.json.write_text(json.dumps(dict(rows=rows, commands=commands), indent=1) + "\n")


if __name__ == "__main__":
    main()
