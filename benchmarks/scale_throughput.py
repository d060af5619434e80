"""Env steps per second of the full training loop with K seeds in one process, and over fake devices.

    python -m benchmarks.scale_throughput [--preset debug] [--seeds 1 2 4 8] [--devices 4] [--seconds 20]

Seeds: `learner.chunk` with K agents stacked and stepped with `jax.vmap` (`--num_seeds K`),
timed after compiling, as env steps per second summed over the K agents; the ratio is that
rate over the rate of one agent alone, i.e. the speed-up over training the K seeds one after
another in separate runs (on one machine, K separate processes share the same cores, so their
summed rate is not higher than one run's).

Devices: the same loop with every training batch split over D host devices (`--devices D`,
made with XLA_FLAGS=--xla_force_host_platform_device_count=D, set by this script before JAX
starts) against one device, in this process. On a CPU the host devices share the same cores,
so this measures the overhead of the sharded program rather than a speed-up.

All rows run in one process with the same preset, one env per agent, train_ratio 32 and a
replay prefilled by the policy.
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


def steps_per_second(preset: str, seeds: int, devices: int, batch: int, seconds: float) -> float:
    """Env steps/s (all agents together) of prefilled training chunks, after one compiling chunk."""
    import jax
    import jax.numpy as jnp

    import pinpad
    from dreamer_jax import config as config_lib
    from dreamer_jax.run import make_mesh
    from dreamer_jax.train import Learner, steps_per_iteration

    config = config_lib.make(preset, envs=1, train_ratio=32.0, batch_size=batch,
                             replay_size=4 * config_lib.make(preset).batch_length, devices=devices)
    env = pinpad.make(config.task, config.time_limit)
    keys = jnp.stack([jax.random.PRNGKey(s) for s in range(seeds)]) if seeds > 1 else jax.random.PRNGKey(0)
    learner, state = Learner.create(config, env, keys, seeds, make_mesh(devices))
    state, _ = learner.chunk(state, 2 * config.batch_length, False)
    per_iteration = steps_per_iteration(config)[0] * config.envs * seeds
    state, _ = jax.block_until_ready(learner.chunk(state, 1, True))
    iterations, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        state, _ = jax.block_until_ready(learner.chunk(state, 4, True))
        iterations += 4
    return iterations * per_iteration / (time.perf_counter() - start)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="debug", help="model preset")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 4, 8], help="agents per process")
    parser.add_argument("--devices", type=int, default=4, help="fake host devices for the data-parallel rows")
    parser.add_argument("--seconds", type=float, default=20.0, help="timed seconds per row")
    args = parser.parse_args(argv)
    if "jax" in sys.modules:
        parser.error("run as a script: the fake devices must be made before JAX starts")
    _fake_devices(args.devices)

    import jax

    print(f"Scale, preset {args.preset}: {jax.default_backend()} ({jax.devices()[0].device_kind}), "
          f"{os.cpu_count()} cpus, jax {jax.__version__}")
    batch = 2 * args.devices  # one batch size for every row, divisible by the device count
    alone = steps_per_second(args.preset, 1, 1, batch, args.seconds)
    print(f"\n| agents in one process | env steps/s (all agents) | ratio to one agent alone |\n|---:|---:|---:|")
    for seeds in args.seeds:
        rate = alone if seeds == 1 else steps_per_second(args.preset, seeds, 1, batch, args.seconds)
        print(f"| {seeds} | {rate:,.1f} | {rate / alone:.2f}x |", flush=True)
    split = steps_per_second(args.preset, 1, args.devices, batch, args.seconds)
    print(f"\n| devices (batch {batch} split) | env steps/s | ratio to one device |\n|---:|---:|---:|")
    print(f"| 1 | {alone:,.1f} | 1.00x |\n| {args.devices} | {split:,.1f} | {split / alone:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
