"""The scripted solver: it completes every task from every start cell."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pinpad
from pinpad import layouts

BOUND_PER_PAD = 14  # steps; the worst start needs 91 steps on pinpad_seven (13 per pad)


def _rollout(env, state, key, steps, random_rate=0.0):
    """Per-step rewards and pad events of a solver rollout."""
    obs = pinpad.scripted_rollout(env, state, key, steps, random_rate)[1]
    return obs["reward"], obs["event_pad"]


@pytest.mark.parametrize("task", pinpad.TASKS)
def test_solver_rewards_from_every_start(task):
    env = pinpad.make(task, length=10_000)
    grid = layouts.grid(task)
    ys, xs = np.nonzero(grid != layouts.WALL)
    starts = jax.tree.map(lambda *v: np.stack(v), *[env.state_from((x, y)) for x, y in zip(xs, ys)])
    bound = BOUND_PER_PAD * env.num_pads
    rollout = jax.jit(jax.vmap(functools.partial(_rollout, env, steps=bound)))
    rewards, pads = jax.device_get(rollout(starts, jax.random.split(jax.random.key(0), len(xs))))
    first = np.argmax(rewards > 0, axis=1)
    assert (rewards > 0).any(axis=1).all(), "some start never earned the reward"
    # Without random moves, no pad outside the sequence is visited: exactly N pad events
    # up to and including the reward (plus possibly the pad a start cell sits on).
    counts = np.array([pads[i, : first[i] + 1].sum() for i in range(len(xs))])
    on_pad = grid[ys, xs] > 0
    assert (counts[~on_pad] == env.num_pads).all()
    assert (counts[on_pad] <= env.num_pads + 1).all()


def test_next_pad_follows_longest_prefix_suffix():
    env = pinpad.make("pinpad_five")
    cases = {(): 1, (1,): 2, (3,): 1, (1, 2): 3, (2, 1): 2, (1, 2, 4): 1, (4, 1, 2, 3): 4, (1, 2, 3, 4, 5): 1}
    for history, expected in cases.items():
        state = env.state_from((5, 5), history)
        assert int(pinpad.next_pad(state, env.num_pads)) == expected, history


def test_random_rate_one_is_uniform_and_zero_is_greedy():
    env = pinpad.make("pinpad_four")
    state = env.state_from((7, 7))
    keys = jax.random.split(jax.random.key(3), 4000)
    act = jax.jit(jax.vmap(pinpad.scripted_action, in_axes=(None, None, 0, None)), static_argnums=0)
    greedy = np.asarray(act(env, state, keys, 0.0))
    assert (greedy == greedy[0]).all()
    uniform = np.bincount(np.asarray(act(env, state, keys, 1.0)), minlength=5) / len(keys)
    np.testing.assert_allclose(uniform, 0.2, atol=0.03)


def test_the_scripted_policy_acts_as_the_solver_and_compiles_once_per_env_and_rate():
    """Two policies built apart for the same env and rate are one static argument to jit (one program), and act as
    scripted_action does; another rate is another program."""
    env = pinpad.make("pinpad_four")
    state, key = env.state_from((7, 7)), jax.random.key(5)
    traces = []  # one entry per trace: jit traces once per distinct static argument

    @functools.partial(jax.jit, static_argnums=0)
    def act(policy, state, key):
        traces.append(policy)
        return policy(state, key)

    first, second = pinpad.ScriptedPolicy(env, 0.5), pinpad.ScriptedPolicy(env, 0.5)
    assert first == second and hash(first) == hash(second) and first is not second
    assert int(act(first, state, key)) == int(pinpad.scripted_action(env, state, key, 0.5))
    act(second, state, key)
    assert len(traces) == 1
    act(pinpad.ScriptedPolicy(env, 0.1), state, key)
    assert len(traces) == 2


def test_solver_with_random_moves_still_earns_reward():
    env = pinpad.make("pinpad_eight", length=5000)
    state, _ = env.reset(jax.random.key(0))
    rewards, _ = jax.jit(functools.partial(_rollout, env, steps=3000, random_rate=0.15))(state, jax.random.key(1))
    assert float(jnp.sum(rewards)) >= 10 * 5


def test_baseline_returns_put_random_play_below_the_solver_and_name_a_bad_policy():
    env = pinpad.make("pinpad_three", length=200)
    key = jax.random.PRNGKey(0)
    scripted, random = (float(pinpad.baseline_return(env, p, 8, key)) for p in ("scripted", "random"))
    assert scripted > random >= 0 and scripted == float(pinpad.baseline_return(env, "scripted", 8, key))
    with pytest.raises(ValueError, match="policy 'agent': give 'random' or 'scripted'"):
        pinpad.baseline_return(env, "agent", 8, key)
