"""Cost of a VTA update relative to an RSSM update at the same preset and batch, in one process.

    python -m benchmarks.dynamics_cost [--presets debug size1m] [--batch 12x40] [--updates 4]

The goal: a VTA update costs at most 1.5x an RSSM update.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax

from benchmarks import record
from benchmarks.train_throughput import _compile_update, _config, _parse_batch, _prefilled
from dreamer_jax import config as config_lib

GOAL = 1.5


def seconds_per_update(preset: str, batch: tuple[int, int], dynamics: str, precision: str, updates: int) -> float:
    """Median wall seconds of one compiled update, after a warm-up."""
    config = config_lib.make(base=_config(preset, batch, precision), dynamics=dynamics)
    learner, state = _prefilled(config, 0)
    compiled, _, _ = _compile_update(learner, state)
    state, _ = jax.block_until_ready(compiled(state))
    times = []
    for _ in range(updates):
        start = time.perf_counter()
        state, _ = jax.block_until_ready(compiled(state))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["debug", "size1m"], choices=list(config_lib.presets()))
    parser.add_argument("--batch", type=_parse_batch, default=(12, 40), help="BATCHxLENGTH")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    parser.add_argument("--updates", type=int, default=4, help="timed updates per row (after one warm-up)")
    parser.add_argument("--json", metavar="PATH", help="also write the rows to this JSON file, with the machine, "
                                                       "commit and command")
    args = parser.parse_args(argv)
    print(f"{jax.devices()[0].platform}, jax {jax.__version__}, batch {args.batch[0]}x{args.batch[1]}, "
          f"{args.precision}")
    print("| preset | RSSM s/update | VTA s/update | VTA / RSSM | goal |")
    print("|---|---:|---:|---:|---:|")
    rows = []
    for preset in args.presets:
        rssm, vta = (seconds_per_update(preset, args.batch, d, args.precision, args.updates) for d in ("rssm", "vta"))
        print(f"| {preset} | {rssm:.3f} | {vta:.3f} | {vta / rssm:.2f}x | <= {GOAL}x |", flush=True)
        rows.append({"preset": preset, "rssm_s_per_update": rssm, "vta_s_per_update": vta, "ratio": vta / rssm})
    if args.json:
        record.write(args.json, "benchmarks.dynamics_cost", argv, batch=list(args.batch), precision=args.precision,
                     updates=args.updates, goal=GOAL, rows=rows)


if __name__ == "__main__":
    main()
