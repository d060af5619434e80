"""Pinpad env steps per second, images rendered: jit + vmap + scan against gymnasium one env at a time.

    python -m benchmarks.env_throughput [--task pinpad_eight] [--seconds 3]

Every row runs in this process; ratios are to the first row (the gymnasium adapter
stepped one env at a time from Python, the way a host loop drives an env). The scan
rows fold each image into a checksum (the env's cost); the "trajectory stored" rows
also write every observation out, as a rollout collector does.
"""

from __future__ import annotations

import argparse
import functools
import platform
import time

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np

import pinpad

BATCHES = (1, 64, 1024, 4096)
STEPS_PER_CALL = 16_384  # env steps per jitted call (scan length x batch); 200 MB of images


def _timed(fn, seconds: float) -> float:
    """Calls per second of `fn` over at least `seconds`, after one warm-up call."""
    fn()
    calls, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        fn()
        calls += 1
    return calls / elapsed


def gymnasium_single(task: str, seconds: float) -> float:
    env = gymnasium.make(pinpad.GYM_IDS[task])
    env.reset(seed=0)
    actions = np.random.default_rng(0).integers(0, pinpad.NUM_ACTIONS, 1 << 16)
    counter = iter(range(1 << 62))

    def one_step():
        _, _, terminated, truncated, _ = env.step(actions[next(counter) % len(actions)])
        if terminated or truncated:
            env.reset()

    return _timed(one_step, seconds)


def gymnasium_vector(task: str, batch: int, seconds: float) -> float:
    envs = gymnasium.make_vec(pinpad.GYM_IDS[task], num_envs=batch, vectorization_mode="vector_entry_point")
    envs.reset(seed=0)
    actions = np.random.default_rng(0).integers(0, pinpad.NUM_ACTIONS, (64, batch))
    counter = iter(range(1 << 62))
    return batch * _timed(lambda: envs.step(actions[next(counter) % 64]), seconds)


def jax_scan(task: str, batch: int, seconds: float, store: bool) -> float:
    """A jitted rollout of `batch` envs under vmap, scanned over time, random actions drawn inside.

    With `store` the scan stacks every observation into a trajectory (T x B images);
    without, each step's image and reward are folded into a checksum, so every image is
    rendered but none is written out: the env's own cost.
    """
    env = pinpad.make(task)
    horizon = max(1, STEPS_PER_CALL // batch)

    def step(carry, key):
        state, checksum = carry
        action_key, step_key = jax.random.split(key)
        actions = jax.random.randint(action_key, (batch,), 0, pinpad.NUM_ACTIONS)
        state, obs = jax.vmap(env.step)(state, actions, jax.random.split(step_key, batch))
        if store:
            return (state, checksum), obs
        checksum += obs["image"].sum(dtype=jnp.int32) + obs["reward"].sum().astype(jnp.int32)
        return (state, checksum), None

    @functools.partial(jax.jit, donate_argnums=0)
    def rollout(state, key):
        return jax.lax.scan(step, (state, jnp.int32(0)), jax.random.split(key, horizon))

    state, _ = jax.vmap(env.reset)(jax.random.split(jax.random.key(0), batch))
    keys = iter(jax.random.split(jax.random.key(1), 1 << 16))
    holder = [state]

    def one_call():
        (holder[0], checksum), trajectory = rollout(holder[0], next(keys))
        jax.block_until_ready((checksum, trajectory))

    return batch * horizon * _timed(one_call, seconds)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="pinpad_eight", choices=pinpad.TASKS)
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per row")
    args = parser.parse_args(argv)

    rows = [("gymnasium adapter, one env at a time", 1, gymnasium_single(args.task, args.seconds))]
    rows.append(("gymnasium vector env (vmap)", 1024, gymnasium_vector(args.task, 1024, args.seconds)))
    for batch in BATCHES:
        rows.append(("jit + vmap + scan", batch, jax_scan(args.task, batch, args.seconds, store=False)))
    for batch in BATCHES:
        rows.append(("jit + vmap + scan, trajectory stored", batch, jax_scan(args.task, batch, args.seconds, store=True)))

    base = rows[0][2]
    print(f"{args.task}, 64x64 images rendered; {jax.devices()[0].platform}, "
          f"{platform.processor() or platform.machine()}, jax {jax.__version__}")
    print("| method | batch | env steps/s | ratio |")
    print("|---|---:|---:|---:|")
    for name, batch, rate in rows:
        print(f"| {name} | {batch} | {rate:,.0f} | {rate / base:,.1f}x |")


if __name__ == "__main__":
    main()
