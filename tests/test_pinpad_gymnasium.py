"""The gymnasium adapters: registered ids, the env checker, vector autoreset, bad actions."""

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import pinpad


def test_every_task_is_registered():
    assert set(pinpad.GYM_IDS) == set(pinpad.TASKS)
    for task, env_id in pinpad.GYM_IDS.items():
        assert gymnasium.spec(env_id).kwargs["task"] == task


@pytest.mark.parametrize("env_id", ["PinpadThree-v0", "PinpadEight-v0"])
def test_passes_gymnasium_env_checker(env_id):
    env = gymnasium.make(env_id, length=30)
    check_env(env.unwrapped, skip_render_check=False)


def test_episode_truncates_then_requires_reset():
    env = gymnasium.make("PinpadFour-v0", length=5)
    image, info = env.reset(seed=3)
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8 and info["is_first"]
    for t in range(5):
        image, reward, terminated, truncated, info = env.step(3)
        assert not terminated and truncated == (t == 4)
    with pytest.raises(RuntimeError, match="call reset"):
        env.unwrapped.step(0)


def test_same_seed_same_episode():
    a, b = gymnasium.make("PinpadFive-v0"), gymnasium.make("PinpadFive-v0")
    for env in (a, b):
        env.reset(seed=11)
    for action in [1, 3, 3, 2, 4, 0, 1]:
        np.testing.assert_array_equal(a.step(action)[0], b.step(action)[0])


@pytest.mark.parametrize("action", [5, -1, 1.0, "left", np.array([1, 2])])
def test_invalid_action_is_a_clear_error(action):
    env = gymnasium.make("PinpadThree-v0").unwrapped
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"invalid pinpad action .*integer in \[0, 5\)"):
        env.step(action)


def test_vector_env_autoresets_on_next_step():
    envs = gymnasium.make_vec("PinpadSix-v0", num_envs=4, vectorization_mode="vector_entry_point", length=3)
    images, info = envs.reset(seed=0)
    assert images.shape == (4, 64, 64, 3) and info["is_first"].all()
    truncations = []
    for _ in range(4):
        images, rewards, terminations, truncated, info = envs.step(np.array([1, 2, 3, 4]))
        truncations.append(truncated.copy())
        assert rewards.shape == (4,) and not terminations.any()
    assert [t.all() for t in truncations] == [False, False, True, False]
    assert info["is_first"].all()  # the step after the last is a reset step
    with pytest.raises(ValueError, match="give 4 integers"):
        envs.step(np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="give 4 integers"):
        envs.step(np.array([0, 1, 2, 7]))
