"""Replay on the device: a ring buffer per environment, uint8 images, sequence sampling by gather.

Each step stores the observation, the action taken after it and the dynamics carry after
it, so a sampled sequence can start from the stored latent of the step before it
(replay context 1); the oldest step in the buffer has none and starts from zeros. After each
update the training posteriors are written back into the stored carries (`refresh`), so a
sequence starts from a recent model's latent, as in the official DreamerV3.

Steps are addressed by their absolute index a = 0, 1, ... per env (the same for every env, as
all step together); step a lives in slot a % capacity while count - capacity <= a < count.
With `online`, each env's sequences [k L, (k + 1) L) form a queue in order of completion, and
every batch takes the next ones from it before filling up with uniform samples (the official
`replay.online`), so each new step is trained on soon after it arrives.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class Replay(NamedTuple):
    """`steps` and `carry` are pytrees with leading axes (envs, capacity); `count` steps written per env;
    `queued` sequences taken from the online queue so far (its read position)."""

    steps: dict
    carry: object
    count: jax.Array
    queued: jax.Array


class Where(NamedTuple):
    """Where the sequences of a batch came from: env and absolute first step (batch,), and whether online."""

    env: jax.Array
    start: jax.Array
    online: jax.Array


def init(envs: int, capacity: int, step_example: dict, carry_example) -> Replay:
    """An empty buffer shaped after one env's step dict and dynamics carry (no leading axes)."""
    alloc = lambda x: jnp.zeros((envs, capacity) + jnp.shape(x), jnp.asarray(x).dtype)  # noqa: E731
    return Replay(jax.tree.map(alloc, step_example), jax.tree.map(alloc, carry_example), jnp.int32(0), jnp.int32(0))


def capacity(replay: Replay) -> int:
    return jax.tree.leaves(replay.steps)[0].shape[1]


def num_envs(replay: Replay) -> int:
    return jax.tree.leaves(replay.steps)[0].shape[0]


def oldest(replay: Replay) -> jax.Array:
    """The absolute index of the oldest stored step."""
    return jnp.maximum(replay.count - capacity(replay), 0)


def add(replay: Replay, steps: dict, carry) -> Replay:
    """Write one step for every env (leading axis envs) at the ring position."""
    index = replay.count % capacity(replay)
    put = lambda buf, x: jax.lax.dynamic_update_index_in_dim(buf, x.astype(buf.dtype), index, 1)  # noqa: E731
    return replay._replace(steps=jax.tree.map(put, replay.steps, steps), carry=jax.tree.map(put, replay.carry, carry),
                           count=replay.count + 1)


def _online(replay: Replay, batch: int, length: int):
    """The next `batch` entries of the online queue: (env, start, fresh) and the new read position.

    Entry j is env j % envs's sequence k = j // envs, completed once count >= (k + 1) L. Entries already
    overwritten are passed over (not fresh); slots past the end of the queue are not fresh either.
    """
    envs = num_envs(replay)
    completed = (replay.count // length) * envs
    j = replay.queued + jnp.arange(batch)
    start = (j // envs) * length
    fresh = (j < completed) & (start >= oldest(replay))
    return j % envs, start, fresh, jnp.minimum(replay.queued + batch, completed)


def sample(replay: Replay, key: jax.Array, batch: int, length: int, online: bool = False):
    """`batch` sequences of `length` steps: from the online queue first (if `online`), else uniform over env
    and start among the stored steps.

    Returns (replay with the queue advanced, steps (batch, length, ...), context carry (batch, ...), Where).
    The context is the stored carry of the step before each sequence, zero where that step is no longer
    stored. Needs at least `length` steps stored.
    """
    cap, first = capacity(replay), oldest(replay)
    env_key, start_key = jax.random.split(key)
    env = jax.random.randint(env_key, (batch,), 0, num_envs(replay))
    start = first + jax.random.randint(start_key, (batch,), 0, replay.count - first - length + 1)
    fresh = jnp.zeros((batch,), bool)
    if online:
        queue_env, queue_start, fresh, queued = _online(replay, batch, length)
        env, start = jnp.where(fresh, queue_env, env), jnp.where(fresh, queue_start, start)
        replay = replay._replace(queued=queued)
    index = (start[:, None] + jnp.arange(length)) % cap
    steps = jax.tree.map(lambda buf: buf[env[:, None], index], replay.steps)
    has_context = start > first
    before = (start - 1) % cap
    carry = jax.tree.map(
        lambda buf: buf[env, before] * has_context.reshape((batch,) + (1,) * (buf.ndim - 2)).astype(buf.dtype),
        replay.carry)
    return replay, steps, carry, Where(env, start, fresh)


def refresh(replay: Replay, where: Where, states) -> Replay:
    """Write posterior states (batch, length, ...) into the `state` of the stored carries they were computed for."""
    index = (where.start[:, None] + jnp.arange(jax.tree.leaves(states)[0].shape[1])) % capacity(replay)
    put = lambda buf, x: buf.at[where.env[:, None], index].set(x.astype(buf.dtype))  # noqa: E731
    return replay._replace(carry=replay.carry._replace(state=jax.tree.map(put, replay.carry.state, states)))
