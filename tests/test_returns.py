"""Lambda-returns against a plain loop, and the percentile return normaliser against numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dreamer_jax import returns as R

RNG = np.random.default_rng(0)


def _loop_returns(reward, cont, value, lam):
    """R_H = v_H; R_t = r_{t+1} + c_{t+1} ((1 - l_{t+1}) v_{t+1} + l_{t+1} R_{t+1}), in float64."""
    reward, cont, value = (np.asarray(x, np.float64) for x in (reward, cont, value))
    horizon = value.shape[0] - 1
    lam = np.broadcast_to(np.asarray(lam, np.float64), value.shape)
    out = np.zeros_like(value[:-1])
    next_return = value[horizon]
    for t in reversed(range(horizon)):
        next_return = reward[t + 1] + cont[t + 1] * ((1 - lam[t + 1]) * value[t + 1] + lam[t + 1] * next_return)
        out[t] = next_return
    return out


def _inputs(shape):
    reward = RNG.standard_normal(shape).astype(np.float32)
    cont = ((1 - 1 / 333) * RNG.uniform(0.5, 1.0, shape)).astype(np.float32)
    value = (3 * RNG.standard_normal(shape)).astype(np.float32)
    return reward, cont, value


@pytest.mark.parametrize("wrap", [pytest.param(lambda f: f, id="nojit"), pytest.param(jax.jit, id="jit")])
@pytest.mark.parametrize("shape", [(2,), (16,), (16, 5), (4, 3, 7)])
@pytest.mark.parametrize("lam", [0.0, 0.95, 1.0])
def test_lambda_returns_match_loop(wrap, shape, lam):
    reward, cont, value = _inputs(shape)
    returns = wrap(lambda r, c, v: R.lambda_returns(r, c, v, lam))(reward, cont, value)
    assert returns.shape == (shape[0] - 1, *shape[1:]) and returns.dtype == np.float32
    np.testing.assert_allclose(returns, _loop_returns(reward, cont, value, lam), rtol=1e-5, atol=1e-5)


def test_lambda_returns_per_step_lambda():
    reward, cont, value = _inputs((12, 4))
    lam = np.where(RNG.uniform(size=(12, 4)) < 0.2, 0.0, 0.95).astype(np.float32)  # 0 where an episode ends
    returns = jax.jit(R.lambda_returns)(reward, cont, value, lam)
    np.testing.assert_allclose(returns, _loop_returns(reward, cont, value, lam), rtol=1e-5, atol=1e-5)


def test_lambda_returns_limits():
    reward, cont, value = _inputs((16, 3))
    td, mc, mc_ones = jax.jit(
        lambda r, c, v: (
            R.lambda_returns(r, c, v, 0.0),
            R.lambda_returns(r, c, v, 1.0),
            R.lambda_returns(r, jnp.ones_like(c), v, 1.0),
        )
    )(reward, cont, value)
    # lam = 0: one-step TD targets.
    np.testing.assert_allclose(td, reward[1:] + cont[1:] * value[1:], rtol=1e-6, atol=1e-6)
    # lam = 1, cont = 1: undiscounted sum of the remaining rewards plus the final value.
    tail_sums = np.cumsum(reward[1:][::-1], axis=0)[::-1]
    np.testing.assert_allclose(mc_ones, tail_sums + value[-1], rtol=1e-5, atol=1e-5)
    # lam = 1 in general: the discounted Monte-Carlo return bootstrapped at H.
    discounts = np.cumprod(cont[1:], axis=0)
    expect0 = reward[1] + np.sum(discounts[:-1] * reward[2:], axis=0) + discounts[-1] * value[-1]
    np.testing.assert_allclose(mc[0], expect0, rtol=1e-5)


def test_lambda_returns_rejects_mismatched_shapes():
    reward, cont, value = _inputs((5, 2))
    with pytest.raises(AssertionError):
        R.lambda_returns(reward, cont[:, :1], value)


def test_percentile_normaliser_matches_numpy_ema():
    rate = 0.01
    state = R.percentile_init()
    assert float(state.lo) == 0.0 and float(state.hi) == 0.0
    update = jax.jit(lambda s, x: R.percentile_update(s, x, rate=rate))
    lo = hi = 0.0
    for i in range(5):
        x = (10 * RNG.standard_normal((8, 16)) + i).astype(np.float32)
        state = update(state, x)
        lo = (1 - rate) * lo + rate * np.percentile(x, 5)
        hi = (1 - rate) * hi + rate * np.percentile(x, 95)
        np.testing.assert_allclose([state.lo, state.hi], [lo, hi], rtol=1e-5)
        assert state.lo.dtype == np.float32 and state.hi.dtype == np.float32
    np.testing.assert_allclose(R.percentile_scale(state), max(1.0, hi - lo), rtol=1e-5)


def test_percentile_normaliser_custom_percentiles_and_scale():
    x = np.arange(101, dtype=np.float32)
    state = R.percentile_update(R.percentile_init(), x, rate=1.0, lo_pct=10, hi_pct=80)
    np.testing.assert_allclose([state.lo, state.hi], [10.0, 80.0], rtol=1e-6)
    assert float(R.percentile_scale(state)) == pytest.approx(70.0)
    # A small spread never amplifies advantages: the scale is exactly 1.
    small = R.percentile_update(R.percentile_init(), np.linspace(-0.2, 0.3, 50, dtype=np.float32), rate=1.0)
    assert float(R.percentile_scale(small)) == 1.0
    assert float(R.percentile_scale(R.percentile_init())) == 1.0
