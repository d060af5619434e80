"""Pinpad as a pure-JAX environment: a static env object and a pytree state.

Behaviour and drawing follow the reference exactly (see README, "Pinpad").
Works under `jax.jit`, `jax.vmap` and `jax.lax.scan`; no host callbacks.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from pinpad import layouts

DEFAULT_LENGTH = 2000  # steps per episode, as in Director
NUM_ACTIONS = 5
REWARD = 10.0
COUNTDOWN = 10  # steps after a reward during which no reward can be earned
WIDTH, HEIGHT = 16, 14  # layout cells; the image adds two status-bar rows
GRID = 16  # the image is GRID x GRID cells, each a block of one colour
SIZES = (16, 32, 64)  # image sides: 1, 2 or 4 pixels per cell, the same information
DEFAULT_SIZE = 64  # the reference's 64x64
# (dx, dy) of actions 0 no-op, 1 down, 2 up, 3 right, 4 left.
MOVES = np.array([(0, 0), (0, 1), (0, -1), (1, 0), (-1, 0)], np.int32)
# Pad entries (event_pad) in four classes that flash alike within each: event_progress (the right next pad of the
# target) and event_distractor (any other pad), both unrewarded and outside the countdown; event_reward (the entry that
# completes the target turns the background green); event_countdown_pad (during the countdown, when a solver's way
# back to pad 1 shifts every status slot).
EVENTS = ("event_pad", "event_progress", "event_distractor", "event_reward", "event_countdown_pad", "event_respawn",
          "event_pad_visual")


def progress(history: jax.Array, history_len: jax.Array) -> jax.Array:
    """How much of the target (pads 1..N) the history has begun: the length of its longest suffix that is a prefix
    of the target. Such a suffix ends in the newest entry v and reads 1..v, so the length is v or 0."""
    newest = jnp.where(history_len > 0, history[jnp.maximum(history_len - 1, 0)], 0)
    offsets = jnp.arange(history.shape[-1])
    index = history_len - 1 - offsets
    matches = jnp.where(offsets < newest, (index >= 0) & (history[jnp.maximum(index, 0)] == newest - offsets), True)
    return jnp.where(jnp.all(matches), newest, 0)


class PinpadState(NamedTuple):
    """Agent cell (x, y), pad history (oldest first, 0-padded), countdown, step counter."""

    pos: jax.Array
    history: jax.Array
    history_len: jax.Array
    countdown: jax.Array
    steps: jax.Array


class _Tables(NamedTuple):
    grid: np.ndarray  # (14, 16) cell codes [y, x]
    spawns: np.ndarray  # (168, 2) non-wall cells (x, y)
    cells: np.ndarray  # (2, N + 1, GRID, GRID, 3) cell colours by countdown > 0 and active pad
    status: np.ndarray  # (N + 1, 3) status-bar colour of a history entry (0: empty slot)


@functools.lru_cache(maxsize=None)
def _tables(task: str) -> _Tables:
    """Precomputed lookup tables of one task (numpy, built once per task)."""
    grid = layouts.grid(task)
    num_pads = int(grid.max())
    ys, xs = np.nonzero(grid != layouts.WALL)
    spawns = np.stack([xs, ys], axis=1).astype(np.int32)
    cells = np.zeros((2, num_pads + 1, GRID, GRID, 3), np.uint8)
    for ticking, background in enumerate((layouts.WHITE, layouts.LIGHT_GREEN)):
        for active in range(num_pads + 1):
            canvas = cells[ticking, active]
            canvas[:] = background
            canvas[:HEIGHT][grid == layouts.WALL] = layouts.GREY
            for pad in range(1, num_pads + 1):
                colour = layouts.PAD_COLOURS[pad]
                canvas[:HEIGHT][grid == pad] = colour if pad == active else layouts.pale(colour)
            canvas[HEIGHT:] = layouts.GREY
    status = layouts.PAD_COLOURS[: num_pads + 1].copy()
    status[0] = layouts.GREY
    return _Tables(grid, spawns, cells, status)


@dataclasses.dataclass(frozen=True)
class Pinpad:
    """One pinpad task. Static and hashable; pass it to jitted functions as a static argument.

    `reset(key)` and `step(state, action, key)` return `(state, obs)`. The step after an
    `is_last` observation is a reset step: its action is ignored and `is_first` is true.
    Actions are integers in [0, 5); JAX indexing clamps others, so check them on the host.
    `size` is the image side: 64 as the reference draws it, or 32 and 16, the same cells at
    2 and 1 pixels each (exactly the 64x64 image taken every 2nd or 4th pixel).
    """

    task: str
    length: int = DEFAULT_LENGTH
    size: int = DEFAULT_SIZE

    def __post_init__(self):
        if self.task not in layouts.LAYOUTS:
            raise ValueError(
                f"unknown pinpad task {self.task!r}; valid tasks: {', '.join(layouts.TASKS)}"
            )
        if not isinstance(self.length, (int, np.integer)) or self.length < 1:
            raise ValueError(f"episode length must be a positive integer, got {self.length!r}")
        if self.size not in SIZES:
            raise ValueError(f"image size {self.size!r} is not supported; use one of {', '.join(map(str, SIZES))}")

    @property
    def num_pads(self) -> int:
        return int(_tables(self.task).grid.max())

    @property
    def num_actions(self) -> int:
        return NUM_ACTIONS

    @property
    def target(self) -> np.ndarray:
        """The rewarded history: pads 1..N in order."""
        return np.arange(1, self.num_pads + 1, dtype=np.int32)

    def reset(self, key: jax.Array) -> tuple[PinpadState, dict]:
        """Start an episode: the agent on a uniformly random non-wall cell, nothing else."""
        state = self._spawn(key)
        return state, self._observe(state, jnp.float32(0), jnp.bool_(True), _no_events())

    def step(self, state: PinpadState, action: jax.Array, key: jax.Array) -> tuple[PinpadState, dict]:
        """One step, or a reset step if the episode has ended (`key` places the agent)."""
        ended = state.steps >= self.length
        moved, reward, events = self._transition(state, action, key)
        state = jax.tree.map(functools.partial(jnp.where, ended), self._spawn(key), moved)
        reward = jnp.where(ended, 0.0, reward).astype(jnp.float32)
        events = {k: jnp.where(ended, False, v) for k, v in events.items()}
        return state, self._observe(state, reward, ended, events)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.size, self.size, 3)

    def render(self, state: PinpadState) -> jax.Array:
        """The (size, size, 3) uint8 image of a state."""
        tables = _tables(self.task)
        x, y = state.pos[0], state.pos[1]
        cells = jnp.asarray(tables.cells)[(state.countdown > 0).astype(jnp.int32), self._pad_at(state.pos)]
        rows, cols = jnp.arange(GRID)[:, None], jnp.arange(GRID)[None, :]
        cells = jnp.where(((rows == y) & (cols == x))[..., None], jnp.uint8(0), cells)
        slots = jnp.arange(self.num_pads)
        entries = jnp.where(slots < state.history_len, state.history, 0)
        status_row = cells[HEIGHT].at[2 * slots + 1].set(jnp.asarray(tables.status)[entries])
        cells = cells.at[HEIGHT].set(status_row)
        cell = self.size // GRID
        return jnp.repeat(jnp.repeat(cells, cell, axis=0), cell, axis=1)

    def state_from(
        self,
        pos: Sequence[int],
        history: Sequence[int] = (),
        countdown: int = 0,
        steps: int = 0,
    ) -> PinpadState:
        """Build a state from plain values (checked on the host), for tests and notebooks."""
        grid = _tables(self.task).grid
        x, y = (int(v) for v in pos)
        if not (0 <= x < WIDTH and 0 <= y < HEIGHT) or grid[y, x] == layouts.WALL:
            raise ValueError(f"pos {(x, y)} is not a non-wall cell; x in 1..14, y in 1..12")
        history = [int(p) for p in history]
        if len(history) > self.num_pads or not all(1 <= p <= self.num_pads for p in history):
            raise ValueError(
                f"history {history} must hold at most {self.num_pads} pads numbered 1..{self.num_pads}"
            )
        if not 0 <= countdown <= COUNTDOWN:
            raise ValueError(f"countdown {countdown} must be in 0..{COUNTDOWN}")
        if not 0 <= steps <= self.length:
            raise ValueError(f"steps {steps} must be in 0..{self.length} (the episode length)")
        padded = np.zeros(self.num_pads, np.int32)
        padded[: len(history)] = history
        return PinpadState(
            pos=jnp.array([x, y], jnp.int32),
            history=jnp.asarray(padded),
            history_len=jnp.int32(len(history)),
            countdown=jnp.int32(countdown),
            steps=jnp.int32(steps),
        )

    def _pad_at(self, pos: jax.Array) -> jax.Array:
        """Pad number under cell (x, y), 0 for floor."""
        return jnp.maximum(jnp.asarray(_tables(self.task).grid)[pos[1], pos[0]], 0).astype(jnp.int32)

    def _spawn(self, key: jax.Array) -> PinpadState:
        spawns = jnp.asarray(_tables(self.task).spawns)
        pos = spawns[jax.random.randint(key, (), 0, spawns.shape[0])]
        zero = jnp.int32(0)
        return PinpadState(pos, jnp.zeros(self.num_pads, jnp.int32), zero, zero, zero)

    def _transition(self, state: PinpadState, action: jax.Array, key: jax.Array):
        """The reference's normal step: countdown, move, history, reward, step counter."""
        num_pads = self.num_pads
        ticking = state.countdown > 0
        countdown = state.countdown - ticking.astype(jnp.int32)
        respawn = ticking & (countdown == 0)
        spawned = self._spawn(key)
        pos = jnp.where(respawn, spawned.pos, state.pos)
        history = jnp.where(respawn, spawned.history, state.history)
        history_len = jnp.where(respawn, 0, state.history_len)
        before = progress(history, history_len)

        grid = jnp.asarray(_tables(self.task).grid)
        target = jnp.clip(pos + jnp.asarray(MOVES)[action], 0, jnp.array([WIDTH - 1, HEIGHT - 1]))
        pos = jnp.where(grid[target[1], target[0]] == layouts.WALL, pos, target)

        # The history reads the tile of the move's target, not of the cell the agent ends on: a move
        # into a wall appends nothing, even from a pad (spawns include pads, with an empty history).
        pad = self._pad_at(target)
        newest = jnp.where(history_len > 0, history[jnp.maximum(history_len - 1, 0)], 0)
        append = (pad > 0) & (pad != newest)
        slots = jnp.arange(num_pads)
        full = history_len == num_pads
        shifted = jnp.where(full, jnp.roll(history, -1), history)
        write_at = jnp.where(full, num_pads - 1, history_len)
        history = jnp.where(append & (slots == write_at), pad, jnp.where(append, shifted, history))
        history_len = jnp.where(append, jnp.minimum(history_len + 1, num_pads), history_len)

        advanced = progress(history, history_len) > before  # the entry is the right next pad
        complete = (history_len == num_pads) & jnp.all(history == jnp.asarray(self.target))
        counting = countdown > 0  # the countdown of an earlier reward runs
        rewarded = complete & ~counting
        countdown = jnp.where(rewarded, COUNTDOWN, countdown)
        plain = append & ~counting & ~rewarded
        events = {
            "event_pad": append,
            "event_progress": plain & advanced,
            "event_distractor": plain & ~advanced,
            "event_reward": rewarded,
            "event_countdown_pad": append & counting,
            "event_respawn": respawn,
            "event_pad_visual": self._pad_at(pos) != self._pad_at(state.pos),
        }
        new = PinpadState(pos, history, history_len, countdown, state.steps + 1)
        return new, jnp.where(rewarded, REWARD, 0.0), events

    def _observe(self, state: PinpadState, reward, is_first, events) -> dict:
        return {
            "image": self.render(state),
            "reward": reward,
            "is_first": is_first,
            "is_last": state.steps >= self.length,
            "is_terminal": jnp.bool_(False),
            **events,
            "pad": self._pad_at(state.pos),
            "history_len": state.history_len,
            "agent_cell": state.pos[1] * GRID + state.pos[0],  # where the agent stands, y * 16 + x
        }


def _no_events() -> dict:
    return {k: jnp.bool_(False) for k in EVENTS}


def make(task: str, length: int = DEFAULT_LENGTH, size: int = DEFAULT_SIZE) -> Pinpad:
    """The environment of `task` (one of `pinpad.TASKS`) with episodes of `length` steps and size x size images."""
    return Pinpad(task, length, size)
