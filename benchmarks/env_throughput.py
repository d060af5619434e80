"""Pinpad env steps per second, images rendered: jit + vmap + scan against gymnasium one env at a time.

    python -m benchmarks.env_throughput [--task pinpad_eight] [--seconds 3] [--batches 1 64 1024 4096]

Every row runs in this process; ratios are to the first row (the gymnasium adapter
stepped one env at a time from Python, the way a host loop drives an env). The scan
rows carry the latest observation, as the training loop's acting scan does (the env's
own cost); the "trajectory stored" rows also write every observation into a
preallocated buffer, as the training loop writes replay.
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
from benchmarks import record

BATCHES = (1, 64, 1024, 4096)
STEPS_PER_CALL = 16_384  # env steps per jitted call (scan length x batch): 200 MB of stored images


def _timed(fn, seconds: float, repeats: int = 3) -> float:
    """Calls per second of `fn`: the best of `repeats` blocks of `seconds / repeats`, after one
    warm-up call (the best block is the one least disturbed by the rest of the machine)."""
    fn()
    rates = []
    for _ in range(repeats):
        calls, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds / repeats:
            fn()
            calls += 1
        rates.append(calls / elapsed)
    return max(rates)


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


def scan_rollout(env: pinpad.Pinpad, batch: int, horizon: int, store: bool):
    """A jitted rollout of `batch` envs under vmap, scanned over `horizon` steps, random actions
    drawn inside, and its first carry; `rollout(carry, key) -> carry`, the carry donated.

    The carry holds the env state and the latest observation, as an acting loop does (the
    policy reads it next step), so every step's image is rendered and written to memory.
    With `store` it also holds a preallocated trajectory (horizon x batch observations, as a
    replay buffer is) that each step writes into.
    """

    def step(carry, key):
        state, _, trajectory, t = carry
        action_key, step_key = jax.random.split(key)
        actions = jax.random.randint(action_key, (batch,), 0, pinpad.NUM_ACTIONS)
        state, obs = jax.vmap(env.step)(state, actions, jax.random.split(step_key, batch))
        if store:
            trajectory = jax.tree.map(
                lambda buffer, x: jax.lax.dynamic_update_index_in_dim(buffer, x, t, 0), trajectory, obs)
        return (state, obs, trajectory, t + 1), None

    @functools.partial(jax.jit, donate_argnums=0)
    def rollout(carry, key):
        carry = carry[:3] + (jnp.int32(0),)
        return jax.lax.scan(step, carry, jax.random.split(key, horizon))[0]

    state, obs = jax.vmap(env.reset)(jax.random.split(jax.random.key(0), batch))
    trajectory = jax.tree.map(lambda x: jnp.zeros((horizon,) + x.shape, x.dtype), obs) if store else ()
    return rollout, (state, obs, trajectory, jnp.int32(0))


def jax_scan(task: str, batch: int, seconds: float, store: bool, steps_per_call: int) -> float:
    """Env steps/s of `scan_rollout` calls of `steps_per_call` env steps each."""
    horizon = max(1, steps_per_call // batch)
    rollout, carry = scan_rollout(pinpad.make(task), batch, horizon, store)
    holder = [carry]
    keys = iter(jax.random.split(jax.random.key(1), 1 << 16))

    def one_call():
        holder[0] = jax.block_until_ready(rollout(holder[0], next(keys)))

    return batch * horizon * _timed(one_call, seconds)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="pinpad_eight", choices=pinpad.TASKS)
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per row (best of three blocks)")
    parser.add_argument("--batches", type=int, nargs="+", default=list(BATCHES),
                        help="env batch sizes of the scan rows")
    parser.add_argument("--steps_per_call", type=int, default=STEPS_PER_CALL,
                        help="env steps per jitted call of the scan rows (scan length x batch)")
    parser.add_argument("--json", metavar="PATH", help="also write the rows to this JSON file, with the machine, "
                                                       "commit and command")
    args = parser.parse_args(argv)
    if args.steps_per_call < 1:
        parser.error(f"--steps_per_call {args.steps_per_call}: give a whole number, 1 or more")

    rows = [("gymnasium adapter, one env at a time", 1, gymnasium_single(args.task, args.seconds))]
    rows.append(("gymnasium vector env (vmap)", 1024, gymnasium_vector(args.task, 1024, args.seconds)))
    for batch in args.batches:
        rows.append(("jit + vmap + scan", batch, jax_scan(args.task, batch, args.seconds, False, args.steps_per_call)))
    for batch in args.batches:
        rows.append(("jit + vmap + scan, trajectory stored", batch,
                     jax_scan(args.task, batch, args.seconds, True, args.steps_per_call)))

    base = rows[0][2]
    print(f"{args.task}, 64x64 images rendered; {jax.devices()[0].platform}, "
          f"{platform.processor() or platform.machine()}, jax {jax.__version__}")
    print("| method | batch | env steps/s | ratio |")
    print("|---|---:|---:|---:|")
    for name, batch, rate in rows:
        print(f"| {name} | {batch} | {rate:,.0f} | {rate / base:,.1f}x |")
    if args.json:
        record.write(args.json, "benchmarks.env_throughput", argv, task=args.task, seconds=args.seconds,
                     steps_per_call=args.steps_per_call,
                     rows=[{"method": name, "batch": batch, "env_steps_per_s": rate, "ratio": rate / base}
                           for name, batch, rate in rows])


if __name__ == "__main__":
    main()
