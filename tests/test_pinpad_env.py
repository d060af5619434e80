"""Pinpad's functional API: transforms, episode boundaries, events, drawing and bad input."""


import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pinpad
from pinpad import layouts

DOWN, UP, RIGHT, LEFT = 1, 2, 3, 4


@pytest.fixture(scope="module")
def env():
    return pinpad.make("pinpad_three", length=50)


@pytest.fixture(scope="module")
def step(env):
    return jax.jit(env.step)


def test_unknown_task_lists_valid_names():
    with pytest.raises(ValueError, match="unknown pinpad task 'pinpad_nine'.*pinpad_three, pinpad_four.*pinpad_eight"):
        pinpad.make("pinpad_nine")


@pytest.mark.parametrize("length", [0, -3, 2.5])
def test_bad_length_is_refused(length):
    with pytest.raises(ValueError, match="episode length must be a positive integer"):
        pinpad.make("pinpad_three", length=length)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(pos=(0, 5)), "not a non-wall cell"),
        (dict(pos=(5, 13)), "not a non-wall cell"),
        (dict(pos=(5, 5), history=[1, 4]), "pads numbered 1..3"),
        (dict(pos=(5, 5), history=[1, 2, 3, 1]), "at most 3 pads"),
        (dict(pos=(5, 5), countdown=11), "countdown 11"),
        (dict(pos=(5, 5), steps=51), "steps 51"),
    ],
)
def test_state_from_rejects_bad_values(env, kwargs, message):
    with pytest.raises(ValueError, match=message):
        env.state_from(**kwargs)


def test_env_is_static_and_hashable():
    assert pinpad.make("pinpad_four", 100) == pinpad.make("pinpad_four", 100)
    assert hash(pinpad.make("pinpad_four", 100)) == hash(pinpad.make("pinpad_four", 100))
    assert pinpad.make("pinpad_four", 100) != pinpad.make("pinpad_four", 99)


def test_observation_shapes_and_dtypes(env):
    _, obs = env.reset(jax.random.key(0))
    assert obs["image"].shape == (64, 64, 3) and obs["image"].dtype == jnp.uint8
    assert obs["reward"].dtype == jnp.float32
    for key in ("is_first", "is_last", "is_terminal") + pinpad.EVENTS:
        assert obs[key].dtype == jnp.bool_, key
    assert obs["pad"].dtype == jnp.int32 and obs["history_len"].dtype == jnp.int32
    assert bool(obs["is_first"]) and not bool(obs["is_last"]) and float(obs["reward"]) == 0


def test_reset_places_uniformly_on_non_wall_cells(env):
    states, _ = jax.jit(jax.vmap(env.reset))(jax.random.split(jax.random.key(0), 16_800))
    grid = layouts.grid(env.task)
    x, y = np.asarray(states.pos).T
    assert (grid[y, x] != layouts.WALL).all()
    counts = np.bincount(y * 16 + x, minlength=16 * 14)[(grid != layouts.WALL).ravel()]
    assert counts.size == 168 and counts.min() > 50 and counts.max() < 160  # mean 100


def test_moves_and_walls(env, step):
    key = jax.random.key(0)
    for action, expected in [(0, (1, 5)), (DOWN, (1, 6)), (UP, (1, 4)), (RIGHT, (2, 5)), (LEFT, (1, 5))]:
        state, _ = step(env.state_from((1, 5)), action, key)
        assert tuple(np.asarray(state.pos)) == expected, action


def test_pad_events_history_and_reward(env, step):
    key = jax.random.key(0)
    # Entering pad 1 from the floor: a pad event and a visual event.
    state, obs = step(env.state_from((1, 5)), UP, key)
    assert obs["event_pad"] and obs["event_pad_visual"] and int(obs["pad"]) == 1
    assert list(np.asarray(state.history)) == [1, 0, 0]
    # Moving inside the pad: nothing new.
    state, obs = step(state, RIGHT, key)
    assert not obs["event_pad"] and not obs["event_pad_visual"] and int(state.history_len) == 1
    # Leaving it: only the pixels change.
    state, obs = step(env.state_from((4, 4), [1]), DOWN, key)
    assert not obs["event_pad"] and obs["event_pad_visual"] and int(obs["pad"]) == 0
    # Completing 1, 2, 3 pays 10 and starts the countdown.
    state, obs = step(env.state_from((11, 5), [1, 2]), UP, key)
    assert float(obs["reward"]) == 10.0 and obs["event_reward"] and obs["event_pad"]
    assert int(state.countdown) == 10
    # A full history slides: the oldest entry drops out.
    state, obs = step(env.state_from((5, 8), [3, 1, 2]), 0, key)
    assert not obs["event_pad"]
    state, obs = step(env.state_from((2, 5), [3, 2, 3]), UP, key)
    assert list(np.asarray(state.history)) == [2, 3, 1] and obs["event_pad"] and float(obs["reward"]) == 0


# Moves that enter each pad of pinpad_three from the floor: (cell, action).
CLASSES = ("progress", "distractor", "reward", "countdown_pad")  # the classes of a pad entry
ENTER = {1: ((1, 5), UP), 2: ((6, 8), DOWN), 3: ((11, 5), UP)}


@pytest.mark.parametrize("history, pad, countdown, kind", [
    ([3, 1], 2, 0, "progress"),  # pinpad.md's examples (target 1-2-3): the suffix [1, 2] starts the target
    ([1], 3, 0, "distractor"),  # the suffix [] starts nothing
    ([], 1, 0, "progress"),
    ([], 2, 0, "distractor"),
    ([2], 1, 0, "progress"),  # a fresh start after a wrong pad
    ([3, 2, 3], 1, 0, "progress"),  # a full history slides: [2, 3, 1]
    ([1, 2], 1, 0, "distractor"),
    ([1, 2], 3, 0, "reward"),  # the entry that completes the target pays: a class of its own
    ([1, 2, 3], 1, 5, "countdown_pad"),  # the solver's way back to pad 1 after a reward, every slot shifting
    ([3, 1], 2, 2, "countdown_pad"),  # the right next pad, but during the countdown
])
def test_a_pad_entry_is_in_exactly_one_class(env, step, history, pad, countdown, kind):
    """Progress and distractor entries are unrewarded and outside the countdown; the rewarded entry and entries
    during the countdown are classes of their own (pinpad.md, 2026-12-07)."""
    cell, action = ENTER[pad]
    _, obs = step(env.state_from(cell, history, countdown), action, jax.random.key(0))
    assert obs["event_pad"]
    assert {k for k in CLASSES if obs[f"event_{k}"]} == {kind}, kind


def test_progress_is_the_longest_history_suffix_that_starts_the_target():
    target = [1, 2, 3, 4]
    for length in range(5):
        for history in itertools.product(target, repeat=length):
            expected = max(k for k in range(len(history) + 1) if list(history[len(history) - k:]) == target[:k])
            padded = jnp.array(list(history) + [0] * (4 - length), jnp.int32)
            assert int(pinpad.env.progress(padded, jnp.int32(length))) == expected, history


def test_every_pad_entry_is_in_exactly_one_class():
    env = pinpad.make("pinpad_four", length=300)
    keys = jax.random.split(jax.random.key(3), 8)
    _, obs = jax.jit(jax.vmap(lambda k: pinpad.scripted_rollout(env, env.reset(k)[0], k, 300, random_rate=0.2)))(keys)
    pad = np.asarray(obs["event_pad"])
    classes = np.stack([np.asarray(obs[f"event_{k}"]) for k in CLASSES])
    assert (classes.sum(axis=0) == pad).all()  # each entry in one class, nothing else in any
    assert all(c.sum() > 5 for c in classes), classes.sum(axis=(1, 2))  # every class happens under a noisy solver
    assert (np.asarray(obs["reward"] > 0) == classes[2]).all()


def test_history_reads_the_move_target_not_the_cell_reached():
    """The reference's rule: a pad joins the history from the tile the move targets (pinpad.md, step 3)."""
    env = pinpad.make("pinpad_seven", length=50)
    step, key = jax.jit(env.step), jax.random.key(0)
    # The recorded case: on pad 1 at (1, 3) with an empty history (as after a spawn), moving left into the wall.
    state, obs = step(env.state_from((1, 3)), LEFT, key)
    assert int(state.history_len) == 0 and not obs["event_pad"] and not obs["event_pad_visual"]
    assert tuple(np.asarray(state.pos)) == (1, 3) and int(obs["pad"]) == 1
    assert (np.asarray(obs["image"])[56:60, 4:8] == layouts.GREY).all()  # no history mark drawn
    # At the grid's corner every move but two targets a wall (clipped or not): none appends.
    for action in (UP, LEFT):
        state, obs = step(env.state_from((1, 1)), action, key)
        assert int(state.history_len) == 0 and not obs["event_pad"], action
    # A no-op on a pad targets that pad: appended unless the history already ends with it.
    state, obs = step(env.state_from((1, 3)), 0, key)
    assert list(np.asarray(state.history)[:1]) == [1] and obs["event_pad"] and not obs["event_pad_visual"]
    state, obs = step(env.state_from((1, 3), [2, 1]), 0, key)
    assert int(state.history_len) == 2 and not obs["event_pad"]
    state, obs = step(env.state_from((1, 3), [1, 2]), 0, key)
    assert list(np.asarray(state.history)[:3]) == [1, 2, 1] and obs["event_pad"]
    # A move inside the pad targets the pad: the same rule.
    state, obs = step(env.state_from((1, 3), [2]), RIGHT, key)
    assert list(np.asarray(state.history)[:2]) == [2, 1] and obs["event_pad"]
    # A move from a pad to the floor targets the floor: nothing appended, the pixels change.
    state, obs = step(env.state_from((2, 3)), RIGHT, key)
    assert int(state.history_len) == 0 and not obs["event_pad"] and obs["event_pad_visual"]


def test_no_layout_has_touching_pads():
    """So a single move never goes from one pad onto another: that case of the history rule cannot arise."""
    for task in pinpad.TASKS:
        grid = layouts.grid(task)
        for a, b in ((grid[:, :-1], grid[:, 1:]), (grid[:-1], grid[1:])):
            assert not ((a > 0) & (b > 0) & (a != b)).any(), task


def test_countdown_blocks_reward_then_respawns(env, step):
    state = env.state_from((11, 5), [1, 2], steps=3)
    state, obs = step(state, UP, jax.random.key(0))
    assert float(obs["reward"]) == 10
    rewards, respawns = [], []
    for i in range(10):
        # Re-enter pad 3 from below each time: the history changes but pays nothing.
        state, obs = step(state, DOWN if i % 2 == 0 else UP, jax.random.key(i))
        rewards.append(float(obs["reward"]))
        respawns.append(bool(obs["event_respawn"]))
    assert rewards == [0.0] * 10
    assert respawns == [False] * 9 + [True]
    assert int(state.countdown) == 0 and int(state.history_len) <= 1 and int(state.steps) == 14


def test_step_after_last_is_a_reset_that_ignores_the_action(env, step):
    state = env.state_from((5, 5), [1], countdown=3, steps=49)
    state, obs = step(state, RIGHT, jax.random.key(0))
    assert bool(obs["is_last"]) and not bool(obs["is_first"]) and int(state.steps) == 50
    outcomes = [step(state, action, jax.random.key(7)) for action in range(5)]
    for new_state, new_obs in outcomes:
        assert bool(new_obs["is_first"]) and not bool(new_obs["is_last"])
        assert int(new_state.steps) == 0 and int(new_state.history_len) == 0 and int(new_state.countdown) == 0
        assert float(new_obs["reward"]) == 0 and not any(bool(new_obs[k]) for k in pinpad.EVENTS)
        np.testing.assert_array_equal(new_state.pos, outcomes[0][0].pos)


def test_render_draws_agent_and_history(env):
    image = np.asarray(env.render(env.state_from((6, 3), [2, 1], countdown=4)))
    assert (image[12:16, 24:28] == 0).all()  # agent cell (x=6, y=3)
    assert (image[0, 0] == layouts.GREY).all() and (image[20, 20] == layouts.LIGHT_GREEN).all()
    assert (image[56:60, 4:8] == (0, 255, 0)).all() and (image[56:60, 12:16] == (255, 0, 0)).all()
    assert (image[56:60, 20:24] == layouts.GREY).all() and (image[60:64] == layouts.GREY).all()


def test_jit_vmap_scan_agree_with_python_loop(env):
    """A scanned, vmapped rollout equals stepping each env one by one without jit."""
    batch, steps = 2, 54  # crosses an episode end (length 50); the loop without jit takes about 0.1 s a step
    keys = jax.random.split(jax.random.key(0), batch)
    actions = jax.random.randint(jax.random.key(1), (steps, batch), 0, 5)

    def rollout(key, actions):
        reset_key, key = jax.random.split(key)
        state, _ = env.reset(reset_key)

        def body(state, inputs):
            action, key = inputs
            state, obs = env.step(state, action, key)
            return state, obs

        return jax.lax.scan(body, state, (actions, jax.random.split(key, len(actions))))[1]

    scanned = jax.jit(jax.vmap(rollout, in_axes=(0, 1)))(keys, actions)
    for b in range(batch):
        with jax.disable_jit():
            reset_key, key = jax.random.split(keys[b])
            state, _ = env.reset(reset_key)
            for t, step_key in enumerate(jax.random.split(key, steps)):
                state, obs = env.step(state, actions[t, b], step_key)
                for name, value in obs.items():
                    np.testing.assert_array_equal(scanned[name][b, t], value, err_msg=f"{name} b={b} t={t}")
    assert np.asarray(scanned["is_first"]).sum() == batch  # one reset step each after step 50


@pytest.mark.parametrize("size", [16, 32])
def test_small_images_are_the_64_image_subsampled(size):
    """Cells are blocks of one colour: the size x size image is the 64x64 one taken every (64 / size)-th pixel."""
    big, small = pinpad.make("pinpad_three", 60), pinpad.make("pinpad_three", 60, size=size)
    step = 64 // size
    actions = jax.random.randint(jax.random.key(1), (150,), 0, 5)

    def rollout(env):
        state, obs = env.reset(jax.random.key(0))

        def body(state, inputs):
            action, key = inputs
            state, obs = env.step(state, action, key)
            return state, obs["image"]

        _, images = jax.lax.scan(body, state, (actions, jax.random.split(jax.random.key(2), len(actions))))
        return jnp.concatenate([obs["image"][None], images])

    images64, images = jax.jit(rollout, static_argnums=0)(big), jax.jit(rollout, static_argnums=0)(small)
    assert images.shape == (151, size, size, 3) and images.dtype == jnp.uint8
    np.testing.assert_array_equal(images, images64[:, ::step, ::step])
    # A rewarding step: the countdown's green background and a full history in the status bar.
    rewarded = [env.step(env.state_from((11, 5), [1, 2]), UP, jax.random.key(0))[1] for env in (big, small)]
    assert float(rewarded[0]["reward"]) == 10
    np.testing.assert_array_equal(rewarded[1]["image"], np.asarray(rewarded[0]["image"])[::step, ::step])


def test_unsupported_size_is_refused():
    with pytest.raises(ValueError, match="image size 48 is not supported; use one of 16, 32, 64"):
        pinpad.make("pinpad_three", size=48)
