"""Replay on the device: a ring buffer per environment, uint8 images, uniform sequence sampling by gather.

Each step stores the observation, the action taken after it and the dynamics carry after
it, so a sampled sequence can start from the stored latent of the step before it
(replay context 1); the oldest step in the buffer has none and starts from zeros.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class Replay(NamedTuple):
    """`steps` and `carry` are pytrees with leading axes (envs, capacity); `count` steps written per env."""

    steps: dict
    carry: object
    count: jax.Array


def init(envs: int, capacity: int, step_example: dict, carry_example) -> Replay:
    """An empty buffer shaped after one env's step dict and dynamics carry (no leading axes)."""
    alloc = lambda x: jnp.zeros((envs, capacity) + jnp.shape(x), jnp.asarray(x).dtype)  # noqa: E731
    return Replay(jax.tree.map(alloc, step_example), jax.tree.map(alloc, carry_example), jnp.int32(0))


def capacity(replay: Replay) -> int:
    return jax.tree.leaves(replay.steps)[0].shape[1]


def add(replay: Replay, steps: dict, carry) -> Replay:
    """Write one step for every env (leading axis envs) at the ring position."""
    index = replay.count % capacity(replay)
    put = lambda buf, x: jax.lax.dynamic_update_index_in_dim(buf, x.astype(buf.dtype), index, 1)  # noqa: E731
    return Replay(jax.tree.map(put, replay.steps, steps), jax.tree.map(put, replay.carry, carry), replay.count + 1)


def sample(replay: Replay, key: jax.Array, batch: int, length: int):
    """`batch` sequences of `length` steps, uniform over env and start among the stored steps.

    Returns (steps (batch, length, ...), context carry (batch, ...)), the carry zero where the
    sequence starts at the oldest stored step. Needs at least `length` steps stored.
    """
    cap = capacity(replay)
    envs = jax.tree.leaves(replay.steps)[0].shape[0]
    stored = jnp.minimum(replay.count, cap)
    oldest = jnp.where(replay.count > cap, replay.count % cap, 0)
    env_key, start_key = jax.random.split(key)
    env = jax.random.randint(env_key, (batch,), 0, envs)
    offset = jax.random.randint(start_key, (batch,), 0, stored - length + 1)
    index = (oldest + offset[:, None] + jnp.arange(length)) % cap
    steps = jax.tree.map(lambda buf: buf[env[:, None], index], replay.steps)
    has_context = offset > 0
    before = (oldest + offset - 1) % cap
    carry = jax.tree.map(
        lambda buf: buf[env, before] * has_context.reshape((batch,) + (1,) * (buf.ndim - 2)).astype(buf.dtype),
        replay.carry)
    return steps, carry
