"""Gymnasium adapters for pinpad: a single env and a `vmap`-backed vector env.

Observations are the (size, size, 3) uint8 image (size 64 unless 32 or 16 is asked for); reward,
`terminated` (never true) and `truncated` (the episode length reached) come from the JAX env; the ground-truth events,
the pad under the agent and the history length are in `info`.
"""

from __future__ import annotations

import gymnasium
import jax
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv

from pinpad.env import DEFAULT_LENGTH, DEFAULT_SIZE, EVENTS, NUM_ACTIONS, make
from pinpad.layouts import TASKS

GYM_IDS = {task: "Pinpad" + task.removeprefix("pinpad_").capitalize() + "-v0" for task in TASKS}
INFO_KEYS = ("is_first",) + EVENTS + ("pad", "history_len")


def _check_action(action) -> int:
    """The action as an int, or a ValueError that says what pinpad accepts."""
    value = np.asarray(action)
    if value.shape != () or not np.issubdtype(value.dtype, np.integer) or not 0 <= value < NUM_ACTIONS:
        raise ValueError(
            f"invalid pinpad action {action!r}: give an integer in [0, {NUM_ACTIONS}) "
            "(0 no-op, 1 down, 2 up, 3 right, 4 left)"
        )
    return int(value)


def _seed_key(np_random: np.random.Generator) -> jax.Array:
    return jax.random.key(int(np_random.integers(2**32, dtype=np.uint64)))


def _jitted(env, num_envs=None):
    """Jitted reset and step of one env, or of `num_envs` under `vmap`; both advance the key."""

    def keys(key):
        key, sub = jax.random.split(key)
        return key, (sub if num_envs is None else jax.random.split(sub, num_envs))

    def reset(key):
        key, sub = keys(key)
        state, obs = (env.reset if num_envs is None else jax.vmap(env.reset))(sub)
        return state, obs, key

    def step(state, action, key):
        key, sub = keys(key)
        state, obs = (env.step if num_envs is None else jax.vmap(env.step))(state, action, sub)
        return state, obs, key

    return jax.jit(reset), jax.jit(step)


def _split_obs(obs: dict):
    obs = jax.device_get(obs)
    info = {k: obs[k] for k in INFO_KEYS}
    return obs["image"], obs["reward"], obs["is_terminal"], obs["is_last"], info


class PinpadGymEnv(gymnasium.Env):
    """One pinpad env with the gymnasium API."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, task: str = "pinpad_eight", length: int = DEFAULT_LENGTH, render_mode=None,
                 size: int = DEFAULT_SIZE):
        self.env = make(task, length, size)
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode {render_mode!r} is not supported; use None or 'rgb_array'")
        self.render_mode = render_mode
        self.observation_space = spaces.Box(0, 255, self.env.image_shape, np.uint8)
        self.action_space = spaces.Discrete(NUM_ACTIONS)
        self._reset_fn, self._step_fn = _jitted(self.env)
        self._state = self._key = self._image = None
        self._ended = True

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._state, obs, self._key = self._reset_fn(_seed_key(self.np_random))
        self._image, _, _, _, info = _split_obs(obs)
        self._ended = False
        return self._image, info

    def step(self, action):
        action = _check_action(action)
        if self._ended:
            raise RuntimeError("the episode has ended (or never started); call reset() first")
        self._state, obs, self._key = self._step_fn(self._state, action, self._key)
        self._image, reward, terminated, truncated, info = _split_obs(obs)
        self._ended = bool(terminated or truncated)
        return self._image, float(reward), bool(terminated), bool(truncated), info

    def render(self):
        return None if self.render_mode is None else self._image


class PinpadVectorEnv(VectorEnv):
    """`num_envs` pinpad envs stepped in one jitted `vmap` call; autoreset on the next step."""

    metadata = {"render_modes": ["rgb_array"], "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(self, num_envs: int, task: str = "pinpad_eight", length: int = DEFAULT_LENGTH, render_mode=None,
                 size: int = DEFAULT_SIZE):
        if num_envs < 1:
            raise ValueError(f"num_envs must be positive, got {num_envs}")
        self.env = make(task, length, size)
        self.num_envs = num_envs
        self.render_mode = render_mode
        self.single_observation_space = spaces.Box(0, 255, self.env.image_shape, np.uint8)
        self.single_action_space = spaces.Discrete(NUM_ACTIONS)
        self.observation_space = spaces.Box(0, 255, (num_envs,) + self.env.image_shape, np.uint8)
        self.action_space = spaces.MultiDiscrete(np.full(num_envs, NUM_ACTIONS))
        self._reset_fn, self._step_fn = _jitted(self.env, num_envs)
        self._state = self._key = self._images = None

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._state, obs, self._key = self._reset_fn(_seed_key(self.np_random))
        self._images, _, _, _, info = _split_obs(obs)
        return self._images, info

    def step(self, actions):
        actions = np.asarray(actions)
        if actions.shape != (self.num_envs,) or not np.issubdtype(actions.dtype, np.integer) or (
            actions.min() < 0 or actions.max() >= NUM_ACTIONS
        ):
            raise ValueError(
                f"invalid pinpad actions {actions!r}: give {self.num_envs} integers in [0, {NUM_ACTIONS})"
            )
        if self._state is None:
            raise RuntimeError("call reset() before step()")
        self._state, obs, self._key = self._step_fn(self._state, actions, self._key)
        self._images, reward, terminated, truncated, info = _split_obs(obs)
        return self._images, reward, terminated, truncated, info

    def render(self):
        return None if self.render_mode is None else self._images


for _task, _id in GYM_IDS.items():
    if _id not in gymnasium.registry:
        gymnasium.register(
            id=_id,
            entry_point="pinpad.gymnasium_env:PinpadGymEnv",
            vector_entry_point="pinpad.gymnasium_env:PinpadVectorEnv",
            kwargs={"task": _task},
        )
