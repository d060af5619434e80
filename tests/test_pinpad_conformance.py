"""Pinpad against trajectories recorded from the reference: every file, every step, every pixel."""

import json

import jax
import numpy as np
import pytest

import pinpad
from pinpad import layouts

from conftest import FIXTURES_ENV, fixtures_root

KINDS = ("scripted", "short")
FOLDER = fixtures_root() / "pinpad_reference"


def _index() -> list[dict]:
    """The recordings that index.json lists; a clear failure when the folder is missing."""
    path = FOLDER / "index.json"
    if not path.exists():
        raise FileNotFoundError(f"no pinpad reference recordings at {FOLDER}; they ship in tests/data, or set "
                                f"{FIXTURES_ENV} to a folder holding pinpad_reference/")
    return json.loads(path.read_text())


ENTRIES = _index()


def _state(env, rec, t, when):
    length = rec[f"seq_len_{when}"][t]
    return env.state_from(
        pos=rec[f"pos_{when}"][t],
        history=rec[f"seq_{when}"][t][:length],
        countdown=rec[f"countdown_{when}"][t],
        steps=rec[f"steps_{when}"][t],
    )


def _stack(states):
    return jax.tree.map(lambda *xs: np.stack(xs), *states)


def test_index_lists_every_file_and_covers_every_task_and_kind():
    files = [e["file"] for e in ENTRIES]
    assert len(files) == len(set(files))
    assert set(files) == {p.name for p in FOLDER.glob("*.npz")}
    covered = {(e["task"], kind) for e in ENTRIES for kind in KINDS if e["file"].startswith(f"{e['task']}_{kind}")}
    assert covered == {(t, k) for t in pinpad.TASKS for k in KINDS}


@pytest.mark.parametrize("entry", ENTRIES, ids=[e["file"].removesuffix(".npz") for e in ENTRIES])
def test_replay_matches_reference(entry):
    rec = dict(np.load(FOLDER / entry["file"]))
    task = entry["task"]
    env = pinpad.make(task, length=entry["length"])
    steps = len(rec["action"])
    assert steps == entry["steps"]
    assert rec["reset"][0], "a recording starts with a reset step"

    # The renderer draws every recorded state exactly as the reference did.
    after = _stack([_state(env, rec, t, "after") for t in range(steps)])
    images = np.asarray(jax.jit(jax.vmap(env.render))(after))
    bad = np.nonzero((images != rec["image"]).any(axis=(1, 2, 3)))[0]
    assert bad.size == 0, f"image differs from the reference at steps {bad[:10]}"

    # Step every recorded transition from its recorded state. A reset step starts from the
    # previous step's state (whose episode has ended); the first one is env.reset.
    first_state, first_obs = jax.jit(env.reset)(jax.random.key(0))
    before = _stack([_state(env, rec, t - 1, "after") if rec["reset"][t] else _state(env, rec, t, "before")
                     for t in range(1, steps)])
    keys = jax.random.split(jax.random.key(1), steps - 1)
    states, obs = jax.jit(jax.vmap(env.step))(before, rec["action"][1:], keys)
    states = jax.tree.map(lambda a, b: np.concatenate([np.asarray(a)[None], np.asarray(b)]), first_state, states)
    obs = jax.tree.map(lambda a, b: np.concatenate([np.asarray(a)[None], np.asarray(b)]), first_obs, obs)

    np.testing.assert_array_equal(obs["reward"], rec["reward"].astype(np.float32))
    for flag in ("is_first", "is_last", "is_terminal"):
        np.testing.assert_array_equal(obs[flag], rec[flag], err_msg=flag)
    np.testing.assert_array_equal(obs["is_first"], rec["reset"])
    np.testing.assert_array_equal(states.countdown, rec["countdown_after"])
    np.testing.assert_array_equal(states.steps, rec["steps_after"])
    np.testing.assert_array_equal(obs["event_reward"], rec["reward"] > 0)
    np.testing.assert_array_equal(obs["event_respawn"], rec["teleport"])
    np.testing.assert_array_equal(obs["history_len"], states.history_len)

    random_placement = rec["reset"] | rec["teleport"]
    fixed = ~random_placement
    np.testing.assert_array_equal(states.pos[fixed], rec["pos_after"][fixed])
    np.testing.assert_array_equal(states.history[fixed], rec["seq_after"][fixed])
    np.testing.assert_array_equal(states.history_len[fixed], rec["seq_len_after"][fixed])
    bad = np.nonzero(fixed & (obs["image"] != rec["image"]).any(axis=(1, 2, 3)))[0]
    assert bad.size == 0, f"stepped image differs from the reference at steps {bad[:10]}"
    appended = (rec["seq_after"] != rec["seq_before"]).any(axis=1) | (rec["seq_len_after"] != rec["seq_len_before"])
    np.testing.assert_array_equal(obs["event_pad"][fixed & ~rec["reset"]], appended[fixed & ~rec["reset"]])

    # Random placements: a non-wall cell, and a history cleared before the move (it may
    # hold the one pad the agent stands on after moving).
    grid = layouts.grid(task)
    for t in np.nonzero(random_placement)[0]:
        x, y = states.pos[t]
        assert grid[y, x] != layouts.WALL, f"step {t}: placed on a wall at {(x, y)}"
        length = states.history_len[t]
        assert length == 0 or (length == 1 and states.history[t][0] == max(grid[y, x], 0) > 0), (
            f"step {t}: history {states.history[t][:length]} after a placement on cell {(x, y)}"
        )
        if rec["reset"][t]:
            assert length == 0 and states.countdown[t] == 0 and states.steps[t] == 0
