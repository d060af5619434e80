"""The benchmarks: the env rollout steps the real env, the CLI prints its table; bad scale flags are refused."""

import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import pinpad
from benchmarks import env_throughput

REPO = Path(__file__).resolve().parents[1]


def test_scan_rollout_stores_the_observations_of_env_step():
    env = pinpad.make("pinpad_three", length=4)
    batch, horizon = 3, 6
    rollout, carry = env_throughput.scan_rollout(env, batch, horizon, store=True)
    state0 = jax.tree.map(jnp.copy, carry[0])
    key = jax.random.key(5)
    state, last_obs, trajectory, t = rollout(carry, key)

    def step(state, key):  # the same draws, one env step at a time
        action_key, step_key = jax.random.split(key)
        actions = jax.random.randint(action_key, (batch,), 0, pinpad.NUM_ACTIONS)
        return jax.vmap(env.step)(state, actions, jax.random.split(step_key, batch))

    expected_state, expected = jax.lax.scan(step, state0, jax.random.split(key, horizon))
    assert int(t) == horizon
    for name in expected:
        np.testing.assert_array_equal(trajectory[name], expected[name], err_msg=name)
        np.testing.assert_array_equal(last_obs[name], expected[name][-1], err_msg=name)
    jax.tree.map(np.testing.assert_array_equal, state, expected_state)
    assert trajectory["is_first"][4].all()  # length 4: step 5 is a reset step, so it ran through one


def test_cli_prints_every_row_with_its_ratio():
    out = subprocess.run([sys.executable, "-m", "benchmarks.env_throughput", "--task", "pinpad_three",
                          "--seconds", "0.05", "--batches", "2", "8"],
                         cwd=REPO, capture_output=True, text=True, timeout=600, check=True).stdout
    rows = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith("| ")][1:]
    assert [(name.strip(), int(batch)) for name, batch, _, _ in rows] == [
        ("gymnasium adapter, one env at a time", 1), ("gymnasium vector env (vmap)", 1024),
        ("jit + vmap + scan", 2), ("jit + vmap + scan", 8),
        ("jit + vmap + scan, trajectory stored", 2), ("jit + vmap + scan, trajectory stored", 8)]
    rates = [float(rate.replace(",", "")) for _, _, rate, _ in rows]
    ratios = [float(ratio.strip().rstrip("x").replace(",", "")) for _, _, _, ratio in rows]
    assert all(rate > 0 for rate in rates) and ratios[0] == 1.0
    np.testing.assert_allclose(ratios, np.array(rates) / rates[0], rtol=0.06, atol=0.06)


def test_scale_benchmark_refuses_a_batch_the_devices_cannot_split():
    done = subprocess.run([sys.executable, "-m", "benchmarks.scale_throughput", "--batch_size", "6", "--devices", "4"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert "--batch_size 6 must be divisible by --devices 4" in done.stderr
