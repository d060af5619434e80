"""Reading the agent's cell off an image: exact on true frames at every size, nothing where the agent is erased."""

import jax
import numpy as np
import pytest

import pinpad
from pinpad import layouts


def every_cell_frames(size: int, task: str = "pinpad_eight", countdown: int = 0):
    """(frames, agent cells, frames with the agent erased) with the agent on each walkable cell in turn."""
    env = pinpad.make(task, length=50, size=size)
    grid = layouts.grid(task)
    cells = [(x, y) for y, x in zip(*np.nonzero(grid != layouts.WALL))]
    states = [env.state_from((x, y), countdown=countdown) for x, y in cells]
    stacked = jax.tree.map(lambda *xs: np.stack(xs), *states)
    frames = np.asarray(jax.vmap(env.render)(stacked))
    truth = np.array([y * 16 + x for x, y in cells])
    # Erased: the cell drawn as it is without the agent (the same frame of a state whose agent stands elsewhere).
    erased = frames.copy()
    pixel = size // 16
    away = {pos: np.asarray(env.render(env.state_from(pos, countdown=countdown))) for pos in ((7, 6), (8, 6))}
    for i, (x, y) in enumerate(cells):
        rows, cols = slice(y * pixel, (y + 1) * pixel), slice(x * pixel, (x + 1) * pixel)
        erased[i, rows, cols] = away[(8, 6) if (x, y) == (7, 6) else (7, 6)][rows, cols]
    return frames, truth, erased


@pytest.mark.parametrize("size", pinpad.SIZES)
@pytest.mark.parametrize("countdown", [0, 5])  # white, and the light green of the countdown
def test_true_frames_read_their_cell_and_erased_frames_read_none(size, countdown):
    frames, truth, erased = every_cell_frames(size, countdown=countdown)
    assert len(truth) == 168
    np.testing.assert_array_equal(pinpad.agent_cell(frames), truth)
    assert pinpad.agent_tracking(frames, truth) == 1.0
    assert (pinpad.agent_cell(erased) == pinpad.NO_AGENT).all()
    assert pinpad.agent_tracking(erased, truth) == 0.0
    # The same as a decoder's float output in [0, 1].
    np.testing.assert_array_equal(pinpad.agent_cell(frames / 255.0), truth)


def test_observations_carry_the_agent_cell_that_the_frame_draws():
    env = pinpad.make("pinpad_three", length=50, size=16)
    state, obs = env.reset(jax.random.key(3))
    for key in jax.random.split(jax.random.key(4), 20):
        x, y = np.asarray(state.pos)
        assert int(obs["agent_cell"]) == y * 16 + x == int(pinpad.agent_cell(np.asarray(obs["image"])))
        state, obs = env.step(state, jax.random.randint(key, (), 0, 5), key)


@pytest.mark.parametrize("value, read", [(0.2, True), (0.3, False)])
def test_a_dark_grey_agent_is_read_and_a_faint_one_is_not(value, read):
    """Below a quarter (darker than any other colour of the field, 1/3 at the darkest) a cell reads as the agent."""
    frames, truth, _ = every_cell_frames(16, task="pinpad_three")
    grey = frames.astype(np.float64) / 255.0
    for i, c in enumerate(truth):
        grey[i, c // 16, c % 16] = value
    np.testing.assert_array_equal(pinpad.agent_cell(grey), truth if read else pinpad.NO_AGENT)


def test_images_of_the_wrong_shape_are_refused():
    with pytest.raises(ValueError, match="multiple of 16"):
        pinpad.agent_cell(np.zeros((20, 20, 3), np.uint8))


def scripted_episodes(episodes: int, length: int):
    """Images and agent cells (E, T, ...) of scripted episodes with 10% random moves, from their resets."""
    env = pinpad.make("pinpad_three", length=length, size=16)
    keys = jax.random.split(jax.random.key(5), episodes)

    def episode(key):
        state, first = env.reset(key)
        _, obs = pinpad.scripted_rollout(env, state, key, length - 1, 0.1)
        return jax.tree.map(lambda a, b: np.concatenate([a[None], b]), first, obs)

    obs = [episode(key) for key in keys]
    return np.stack([o["image"] for o in obs]), np.stack([o["agent_cell"] for o in obs])


def test_open_loop_tracking_reads_observed_and_imagined_steps_at_their_frames():
    from experiments.tracking import flat, tracking

    images, cells = scripted_episodes(3, 50)
    perfect = tracking(images / 255.0, cells, context=5)
    assert perfect == {"posterior": 1.0, "imagined": {"1": 1.0, "5": 1.0, "15": 1.0, "45": 1.0}}
    assert flat(perfect) == {"tracking_posterior": 1.0, "tracking_imagined_1": 1.0, "tracking_imagined_5": 1.0,
                             "tracking_imagined_15": 1.0, "tracking_imagined_45": 1.0}
    # Erase the agent from imagined step 5 (frame 9) only: that share alone drops to 0.
    erased = images.copy()
    erased[:, 9] = 255
    result = tracking(erased, cells, context=5)
    assert result["imagined"]["5"] == 0.0 and result["imagined"]["1"] == result["imagined"]["15"] == 1.0
    # Frames one step late (a model that lags the agent) track only where the agent stood still.
    late = np.concatenate([images[:, :1], images[:, :-1]], axis=1)
    stood = np.mean(cells[:, 1:5] == cells[:, :4])
    assert tracking(late, cells, context=5)["posterior"] == pytest.approx((3 + 3 * 4 * stood) / 15)
