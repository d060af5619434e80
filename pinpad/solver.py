"""A scripted pinpad solver: shortest paths to the next pad of the sequence, pure JAX.

It reads the environment state (agent cell and pad history), so it serves as an oracle
policy that fills episodes with pad and reward events for boundary evaluation.
"""

from __future__ import annotations

import dataclasses
import functools
import heapq

import jax
import jax.numpy as jnp
import numpy as np

from pinpad import layouts
from pinpad.env import HEIGHT, MOVES, NUM_ACTIONS, WIDTH, Pinpad, PinpadState, progress

DETOUR = 1000  # path cost of entering a pad cell other than the target


def _distances(grid: np.ndarray, target: int) -> np.ndarray:
    """Cost-to-go to pad `target` (Dijkstra); entering another pad's cell costs DETOUR."""
    enter = np.where((grid > 0) & (grid != target), DETOUR, 1)
    dist = np.full(grid.shape, np.inf)
    frontier = [(0, y, x) for y, x in zip(*np.nonzero(grid == target))]
    for _, y, x in frontier:
        dist[y, x] = 0
    heapq.heapify(frontier)
    while frontier:
        d, y, x = heapq.heappop(frontier)
        if d > dist[y, x]:
            continue
        for dx, dy in MOVES[1:]:
            # Walk backwards: a step from (px, py) into (x, y) costs enter[y, x].
            px, py = x - dx, y - dy
            if 0 <= px < WIDTH and 0 <= py < HEIGHT and grid[py, px] != layouts.WALL:
                nd = d + enter[y, x]
                if nd < dist[py, px]:
                    dist[py, px] = nd
                    heapq.heappush(frontier, (nd, py, px))
    return dist


@functools.lru_cache(maxsize=None)
def action_table(task: str) -> np.ndarray:
    """(N + 1, 14, 16) int32: the greedy shortest-path action towards pad k from cell [y, x].

    Each action's value is the cost of the cell it leads to plus that cell's cost-to-go
    (a blocked move or a no-op leads to the current cell); ties go to the lowest action,
    so on the target pad the solver waits (no-op), which appends the pad if needed.
    """
    grid = layouts.grid(task)
    num_pads = int(grid.max())
    table = np.zeros((num_pads + 1, HEIGHT, WIDTH), np.int32)
    for pad in range(1, num_pads + 1):
        dist = _distances(grid, pad)
        enter = np.where((grid > 0) & (grid != pad), DETOUR, 1)
        for y, x in zip(*np.nonzero(grid != layouts.WALL)):
            values = []
            for dx, dy in MOVES:
                nx = min(max(x + dx, 0), WIDTH - 1)
                ny = min(max(y + dy, 0), HEIGHT - 1)
                if grid[ny, nx] == layouts.WALL:
                    nx, ny = x, y
                values.append(enter[ny, nx] + dist[ny, nx])
            table[pad, y, x] = int(np.argmin(values))
    return table


def next_pad(state: PinpadState, num_pads: int) -> jax.Array:
    """The pad to visit next: one past the target's `progress`; once the whole target is in the history (the
    countdown after a reward), the solver heads for pad 1 again."""
    done = progress(state.history, state.history_len)
    return jnp.where(done >= num_pads, 1, done + 1)


def scripted_action(env: Pinpad, state: PinpadState, key: jax.Array, random_rate=0.0) -> jax.Array:
    """The solver's action for one state; with probability `random_rate` a uniform random one."""
    table = jnp.asarray(action_table(env.task))
    greedy = table[next_pad(state, env.num_pads), state.pos[1], state.pos[0]]
    explore_key, action_key = jax.random.split(key)
    explore = jax.random.uniform(explore_key) < random_rate
    return jnp.where(explore, jax.random.randint(action_key, (), 0, NUM_ACTIONS), greedy).astype(jnp.int32)


@dataclasses.dataclass(frozen=True)
class ScriptedPolicy:
    """The solver as a policy `(state, key) -> action` for one env, equal by value: jitted code that takes a policy
    as a static argument compiles once per env and rate, where a fresh `functools.partial` compiled at every call."""

    env: Pinpad
    random_rate: float = 0.0

    def __call__(self, state: PinpadState, key: jax.Array) -> jax.Array:
        return scripted_action(self.env, state, key, self.random_rate)


def scripted_rollout(env: Pinpad, state: PinpadState, key: jax.Array, steps: int, random_rate=0.0):
    """Run the solver for `steps` steps from `state` under `lax.scan`.

    Returns the final state and the stacked observations (leading axis: time).
    """

    def body(state, key):
        act_key, step_key = jax.random.split(key)
        state, obs = env.step(state, scripted_action(env, state, act_key, random_rate), step_key)
        return state, obs

    return jax.lax.scan(body, state, jax.random.split(key, steps))


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def baseline_return(env: Pinpad, policy: str, episodes: int, key: jax.Array) -> jax.Array:
    """Mean return of `episodes` whole episodes of uniform random actions (`policy` "random") or of the scripted
    solver ("scripted"): the floor and the ceiling an agent's return is read against."""
    if policy not in ("random", "scripted"):
        raise ValueError(f"policy {policy!r}: give 'random' or 'scripted'")
    reset_key, key = jax.random.split(key)
    state, _ = jax.vmap(env.reset)(jax.random.split(reset_key, episodes))

    def step(carry, key):
        state, ret = carry
        act_key, env_key = jax.random.split(key)
        if policy == "random":
            action = jax.random.randint(act_key, (episodes,), 0, NUM_ACTIONS)
        else:
            action = jax.vmap(lambda s, k: scripted_action(env, s, k))(state, jax.random.split(act_key, episodes))
        state, obs = jax.vmap(env.step)(state, action, jax.random.split(env_key, episodes))
        return (state, ret + obs["reward"]), None

    (_, ret), _ = jax.lax.scan(step, (state, jnp.zeros(episodes)), jax.random.split(key, env.length))
    return ret.mean()
