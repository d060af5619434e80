"""Env steps per second of the full training loop with K seeds in one process, and over fake devices.

    python -m benchmarks.scale_throughput [--configs debug] [--dynamics rssm] [--precision fp32]
                                          [--batch_size 8] [--train_ratio 32] [--seeds 1 2 4 8]
                                          [--devices 4] [--seconds 20] [--envs 1] [--scan_unroll 1]

Seeds: `learner.chunk` with K agents stacked and stepped with `jax.vmap` (`--num_seeds K`),
timed after compiling, as env steps per second summed over the K agents; the ratio is that
rate over the rate of one agent alone, i.e. the speed-up over training the K seeds one after
another in separate runs (on one machine, K separate processes share the same cores, so their
summed rate is not higher than one run's).

Devices: the same loop with every training batch split over D host devices (`--devices D`,
made with XLA_FLAGS=--xla_force_host_platform_device_count=D, set by this script before JAX
starts) against one device, in this process. On a CPU the host devices share the same cores,
so this measures the overhead of the sharded program rather than a speed-up.

All rows run in one process with the same configuration (the presets of `--configs`, then
the flags above; `--batch_size` and `--train_ratio` default to 8 and 32, `--envs` per agent to 1),
and a replay prefilled by the policy. `--devices 1` leaves the device rows out, e.g. on one
GPU: `--configs pinpad size12m --dynamics vta --precision bf16 --batch_size 12
--train_ratio 320 --seeds 1 8 --devices 1`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

DEVICE_FLAG = "--xla_force_host_platform_device_count"


def _fake_devices(count: int) -> None:
    """Make `count` host devices; must run before JAX initialises its CPU backend."""
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {DEVICE_FLAG}={count}".strip()


def steps_per_second(config, seeds: int, devices: int, seconds: float) -> tuple[float, float]:
    """Env steps/s (all agents together) of prefilled training chunks, and the seconds the
    first training chunk took (its compile included)."""
    import jax
    import jax.numpy as jnp

    from dreamer_jax import config as config_lib
    from dreamer_jax.run import make_mesh
    from dreamer_jax.train import Learner, steps_per_iteration
    from experiments.envs import make_env

    config = config_lib.make(base=config, devices=devices)
    env = make_env(config)
    keys = jnp.stack([jax.random.PRNGKey(s) for s in range(seeds)]) if seeds > 1 else jax.random.PRNGKey(0)
    learner, state = Learner.create(config, env, keys, seeds, make_mesh(devices))
    state, _ = learner.chunk(state, 2 * config.batch_length, False)
    per_iteration = steps_per_iteration(config)[0] * config.envs * seeds
    start = time.perf_counter()
    state, _ = jax.block_until_ready(learner.chunk(state, 4, True))
    first = time.perf_counter() - start
    iterations, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        state, _ = jax.block_until_ready(learner.chunk(state, 4, True))
        iterations += 4
    return iterations * per_iteration / (time.perf_counter() - start), first


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["debug"], help="presets, applied in order")
    parser.add_argument("--dynamics", default="rssm", choices=("rssm", "vta"))
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    parser.add_argument("--batch_size", type=int, default=8, help="sequences per batch (divisible by --devices)")
    parser.add_argument("--train_ratio", type=float, default=32.0)
    parser.add_argument("--envs", type=int, default=1, help="envs per agent")
    parser.add_argument("--scan_unroll", type=int, default=1, help="time steps per loop iteration of the observe "
                        "and imagine scans")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 4, 8], help="agents per process")
    parser.add_argument("--devices", type=int, default=4, help="fake host devices for the data-parallel rows (1: none)")
    parser.add_argument("--seconds", type=float, default=20.0, help="timed seconds per row")
    return parser


def main(argv=None) -> None:
    parser = make_parser()
    args = parser.parse_args(argv)
    if "jax" in sys.modules:
        parser.error("run as a script: the fake devices must be made before JAX starts")
    if args.batch_size % args.devices:
        parser.error(f"--batch_size {args.batch_size} must be divisible by --devices {args.devices}")
    _fake_devices(args.devices)

    import jax

    from dreamer_jax import config as config_lib

    config = config_lib.make(*args.configs, envs=args.envs, dynamics=args.dynamics, precision=args.precision,
                             batch_size=args.batch_size, train_ratio=args.train_ratio, scan_unroll=args.scan_unroll)
    config = config_lib.make(base=config, replay_size=4 * config.batch_length)
    print(f"Scale, presets {' '.join(args.configs)}, {args.dynamics}, {args.precision}, batch "
          f"{config.batch_size}x{config.batch_length}, train ratio {config.train_ratio:g}, {config.envs} envs per "
          f"agent, scan unroll {config.scan_unroll}: "
          f"{jax.default_backend()} ({jax.devices()[0].device_kind}), {os.cpu_count()} cpus, jax {jax.__version__}")
    alone, first = steps_per_second(config, 1, 1, args.seconds)
    print("\n| agents in one process | env steps/s (all agents) | ratio to one agent alone | first chunk (s) |"
          "\n|---:|---:|---:|---:|")
    for seeds in args.seeds:
        rate, first = (alone, first) if seeds == 1 else steps_per_second(config, seeds, 1, args.seconds)
        print(f"| {seeds} | {rate:,.1f} | {rate / alone:.2f}x | {first:.1f} |", flush=True)
    if args.devices > 1:
        split, _ = steps_per_second(config, 1, args.devices, args.seconds)
        print(f"\n| devices (batch {config.batch_size} split) | env steps/s | ratio to one device |\n|---:|---:|---:|")
        print(f"| 1 | {alone:,.1f} | 1.00x |\n| {args.devices} | {split:,.1f} | {split / alone:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
