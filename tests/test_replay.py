"""Device replay (dreamer_jax/replay.py): ring writes, contiguous sequence sampling, replay context, uniformity,
the online queue and the refresh of stored latents.

Every written step is labelled with its write count and env, so a sample can be checked value by value.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from dreamer_jax import replay as rp
from dreamer_jax.dynamics import Carry

ENVS = 3
OFFSET = 1000  # x = OFFSET + write count, so unwritten (zero) slots can never pass for written ones


def _step(i, envs=ENVS):
    """The step written at write count i (traceable): per env, x, env id and a uint8 image made of both."""
    env = jnp.arange(envs, dtype=jnp.int32)
    image = ((i * 7 + env * 50) % 256).astype(jnp.uint8)[:, None, None, None] * jnp.ones((1, 2, 2, 3), jnp.uint8)
    image = image.at[:, 0, 0, 0].set(env.astype(jnp.uint8))
    return {"x": jnp.full((envs,), OFFSET + i, jnp.int32), "env": env, "image": image}


def _carry(i, envs=ENVS):
    """The carry stored with step i: never zero; its state has a scalar leaf and a 2-D leaf per env."""
    env = jnp.arange(envs, dtype=jnp.float32)
    i = jnp.full((envs,), i, jnp.float32)
    m = jnp.stack([jnp.stack([i + 1, env + 1], -1), jnp.stack([-i - 1, env], -1)], 1)  # (envs, 2, 2)
    return Carry({"c": i + 0.5, "m": m}, jnp.stack([i, env], -1))


def _example():
    return jax.tree.map(lambda x: x[0], _step(0)), jax.tree.map(lambda x: x[0], _carry(0))


@functools.partial(jax.jit, static_argnums=(0, 1))
def _fill(capacity, writes):
    replay = rp.init(ENVS, capacity, *_example())
    return jax.lax.fori_loop(0, writes, lambda i, r: rp.add(r, _step(i), _carry(i)), replay)


_sample = jax.jit(rp.sample, static_argnums=(2, 3, 4))


def _check_sequences(steps, carry, writes, capacity, length):
    """Every check that does not depend on randomness; returns the write counts the sequences start at."""
    x, env, image = (np.asarray(steps[k]) for k in ("x", "env", "image"))
    batch = x.shape[0]
    assert x.shape == (batch, length) and image.shape == (batch, length, 2, 2, 3)
    assert image.dtype == np.uint8 and x.dtype == np.int32
    count = x - OFFSET
    first = count[:, 0]
    oldest = max(0, writes - capacity)
    # Written, still stored, contiguous in time: a straddle of the write head would jump back by capacity.
    assert count.min() >= oldest and count.max() < writes
    np.testing.assert_array_equal(count, first[:, None] + np.arange(length))
    # One env per sequence, and the image was written with the same step and env.
    np.testing.assert_array_equal(env, np.broadcast_to(env[:, :1], env.shape))
    expect_image = ((count * 7 + env * 50) % 256).astype(np.uint8)
    np.testing.assert_array_equal(image[:, :, 1, 1, 2], expect_image)
    np.testing.assert_array_equal(image[:, :, 0, 0, 0], env.astype(np.uint8))
    # Context: the carry stored with the step before the start, zero when the start is the oldest step.
    has_context = first > oldest
    e = env[:, 0].astype(np.float32)
    prev = (first - 1).astype(np.float32)
    expect_c = np.where(has_context, prev + 0.5, 0.0)
    expect_m = np.stack([np.stack([prev + 1, e + 1], -1), np.stack([-prev - 1, e], -1)], 1)
    expect_m = expect_m * has_context[:, None, None]
    np.testing.assert_array_equal(carry.state["c"], expect_c.astype(np.float32))
    np.testing.assert_array_equal(carry.state["m"], expect_m.astype(np.float32))
    np.testing.assert_array_equal(carry.action, np.stack([prev, e], -1) * has_context[:, None])
    assert carry.state["c"].dtype == jnp.float32 and carry.state["m"].shape == (batch, 2, 2)
    return first, env[:, 0]


def test_buffer_layout_and_dtypes():
    replay = _fill(8, 5)
    assert int(replay.count) == 5 and rp.capacity(replay) == 8
    assert replay.steps["image"].dtype == jnp.uint8 and replay.steps["image"].shape == (ENVS, 8, 2, 2, 3)
    assert replay.steps["x"].dtype == jnp.int32 and replay.carry.state["m"].shape == (ENVS, 8, 2, 2)
    x = np.asarray(replay.steps["x"])
    np.testing.assert_array_equal(x[:, :5], np.broadcast_to(OFFSET + np.arange(5), (ENVS, 5)))
    assert not np.any(x[:, 5:])  # nothing written past the head
    # After wrapping, slot j holds the latest write count congruent to j.
    wrapped = _fill(8, 19)
    np.testing.assert_array_equal(np.asarray(wrapped.steps["x"])[0], OFFSET + np.array([16, 17, 18, 11, 12, 13, 14,
                                                                                        15]))
    np.testing.assert_array_equal(np.asarray(wrapped.carry.state["c"])[2],
                                  np.array([16, 17, 18, 11, 12, 13, 14, 15]) + 0.5)


def test_add_casts_to_buffer_dtype():
    """Images given as int32 (or any dtype) are stored as the buffer's uint8."""
    replay = rp.init(1, 4, {"image": jnp.zeros((2,), jnp.uint8)}, jnp.zeros((), jnp.float32))
    replay = rp.add(replay, {"image": jnp.array([[200, 7]], jnp.int32)}, jnp.array([1.5]))
    assert replay.steps["image"].dtype == jnp.uint8
    np.testing.assert_array_equal(replay.steps["image"][0, 0], np.array([200, 7], np.uint8))


@pytest.mark.parametrize(
    "capacity,writes,length",
    [(16, 10, 4), (16, 16, 4), (16, 37, 4), (16, 32, 5), (8, 8, 8), (8, 21, 8), (7, 10, 3)],
    ids=["partial", "full", "wrapped", "wrapped_twice", "exactly_one", "wrapped_one", "odd_capacity"],
)
def test_sampled_sequences(capacity, writes, length):
    replay = _fill(capacity, writes)
    _, steps, carry, where = _sample(replay, jax.random.PRNGKey(writes), 512, length, False)
    first, env = _check_sequences(steps, carry, writes, capacity, length)
    np.testing.assert_array_equal(where.start, first)
    np.testing.assert_array_equal(where.env, env)
    assert not where.online.any()
    oldest = max(0, writes - capacity)
    last_start = writes - length
    # Both ends of the valid start range are reached, and every env is used.
    assert first.min() == oldest and first.max() == last_start
    assert set(env.tolist()) == set(range(ENVS))


@pytest.mark.parametrize("capacity,writes", [(16, 12), (16, 45)], ids=["partial", "wrapped"])
def test_sampling_is_uniform(capacity, writes):
    length, batch = 4, 30_000
    replay = _fill(capacity, writes)
    _, steps, carry, _ = _sample(replay, jax.random.PRNGKey(123), batch, length, False)
    first, env = _check_sequences(steps, carry, writes, capacity, length)
    oldest = max(0, writes - capacity)
    starts = min(writes, capacity) - length + 1
    counts = np.bincount(first - oldest, minlength=starts)
    assert counts.shape == (starts,) and counts.min() > 0
    # Chi-square goodness of fit to uniform, starts x envs cells; fails by chance with probability 1e-6.
    cells = np.bincount((first - oldest) * ENVS + env, minlength=starts * ENVS)
    chi2 = ((cells - batch / cells.size) ** 2 / (batch / cells.size)).sum()
    assert chi2 < stats.chi2.ppf(1 - 1e-6, cells.size - 1), (chi2, cells)


def test_samples_depend_on_key():
    replay = _fill(16, 30)
    a = _sample(replay, jax.random.PRNGKey(0), 64, 4, False)[1]
    b = _sample(replay, jax.random.PRNGKey(0), 64, 4, False)[1]
    c = _sample(replay, jax.random.PRNGKey(1), 64, 4, False)[1]
    np.testing.assert_array_equal(a["x"], b["x"])
    assert not np.array_equal(a["x"], c["x"])


def test_online_queue_hands_out_each_completed_sequence_once_in_order():
    """The official online queue: env e's sequences [k L, (k + 1) L) in order of completion, each once; the rest
    of a batch, and later batches once the queue is empty, are uniform samples."""
    length, capacity, batch = 4, 64, 5
    replay = _fill(capacity, 4 * length + 2)  # 4 completed sequences per env: 12 in the queue
    seen = []
    for i in range(3):
        replay, steps, carry, where = _sample(replay, jax.random.PRNGKey(i), batch, length, True)
        first, env = _check_sequences(steps, carry, 4 * length + 2, capacity, length)
        online = np.asarray(where.online)
        seen += list(zip(first[online].tolist(), env[online].tolist()))
        if i < 2:
            assert online.all()
    assert online.tolist() == [True, True, False, False, False]  # the queue ran out after 12
    assert seen == [(k * length, e) for k in range(4) for e in range(ENVS)]
    assert int(replay.queued) == 12
    # One more completed sequence per env joins the queue.
    replay = jax.jit(lambda r: jax.lax.fori_loop(18, 20, lambda i, r: rp.add(r, _step(i), _carry(i)), r))(replay)
    replay, steps, _, where = _sample(replay, jax.random.PRNGKey(9), batch, length, True)
    assert np.asarray(where.online).tolist() == [True, True, True, False, False]
    np.testing.assert_array_equal(np.asarray(where.start)[:3], 16)
    np.testing.assert_array_equal(np.asarray(steps["x"])[:3, 0], OFFSET + 16)


def test_online_queue_passes_over_overwritten_sequences():
    length, capacity = 4, 8
    replay = _fill(capacity, 22)  # steps 14..21 stored: of the queued sequences only [16, 20) remains
    replay, steps, carry, where = _sample(replay, jax.random.PRNGKey(0), 2 * ENVS, length, True)
    first, env = _check_sequences(steps, carry, 22, capacity, length)
    online = np.asarray(where.online)
    assert online.sum() == 0 and int(replay.queued) == 2 * ENVS  # sequences 0 and 1 of each env: overwritten
    replay = _sample(replay, jax.random.PRNGKey(1), 3 * ENVS, length, True)[0]
    assert int(replay.queued) == 5 * ENVS  # then 2, 3 (overwritten) and 4 = [16, 20), handed out
    assert int(_sample(replay, jax.random.PRNGKey(2), 1, length, True)[3].online.sum()) == 0


def test_refresh_writes_states_where_the_batch_came_from():
    """The posterior states of a batch replace the stored carries' states at those steps (official replay.update):
    a later sequence that starts right after them takes the new latent as its context; actions stay."""
    length, capacity, writes = 4, 16, 30
    replay = _fill(capacity, writes)
    replay, steps, _, where = _sample(replay, jax.random.PRNGKey(3), 6, length, False)
    new = {"c": -1.0 - steps["x"].astype(jnp.float32), "m": jnp.zeros((6, length, 2, 2))}
    refreshed = jax.jit(rp.refresh)(replay, where, new)
    c = np.asarray(refreshed.carry.state["c"])
    expect = np.asarray(replay.carry.state["c"]).copy()
    for e, a in zip(np.asarray(where.env), np.asarray(where.start)):
        expect[e, (a + np.arange(length)) % capacity] = -1.0 - (OFFSET + a + np.arange(length))
    np.testing.assert_array_equal(c, expect)
    np.testing.assert_array_equal(refreshed.carry.action, replay.carry.action)
    np.testing.assert_array_equal(refreshed.steps["x"], replay.steps["x"])
