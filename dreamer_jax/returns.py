"""Return targets for the actor-critic: lambda-returns over imagined trajectories and the percentile normaliser."""

from __future__ import annotations

from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp

f32 = jnp.float32


def lambda_returns(
    reward: jax.Array, cont: jax.Array, value: jax.Array, lam: float | jax.Array = 0.95
) -> jax.Array:
    """DreamerV3 lambda-returns over an imagined trajectory, time on axis 0; inputs (H+1, ...), output (H, ...).

    Index convention: index t is state s_t (t = 0 is the start state); reward[t] and cont[t] are the
    predictions at s_t, i.e. the outcome of the step s_{t-1} -> s_t, so reward[0] and cont[0] are unused.
    `cont` already includes the discount (continue probability times 1 - 1/333). Bootstrapped from the critic:

        R_H = value_H,
        R_t = reward_{t+1} + cont_{t+1} * ((1 - lam) * value_{t+1} + lam * R_{t+1})   for t = 0 .. H-1,

    and R_0 .. R_{H-1} are returned. lam = 0 gives one-step TD targets, lam = 1 discounted Monte-Carlo sums.
    `lam` is a scalar or, like the other inputs, shaped (H+1, ...) with lam[t+1] used for R_t (0 cuts the
    return at an episode boundary).
    """
    chex.assert_equal_shape([reward, cont, value])
    chex.assert_axis_dimension_gt(value, 0, 1)
    reward, cont, value = reward.astype(f32), cont.astype(f32), value.astype(f32)
    lam = jnp.broadcast_to(jnp.asarray(lam, f32), value.shape)

    def step(next_return, inputs):
        rew, con, val, lam_t = inputs
        ret = rew + con * ((1.0 - lam_t) * val + lam_t * next_return)
        return ret, ret

    _, returns = jax.lax.scan(step, value[-1], (reward[1:], cont[1:], value[1:], lam[1:]), reverse=True)
    return returns


class PercentileState(NamedTuple):
    """EMAs of the low and high return percentiles (float32 scalars)."""

    lo: jax.Array
    hi: jax.Array


def percentile_init() -> PercentileState:
    """Both EMAs start at 0, as in DreamerV3 (no bias correction, so early scales stay at the floor of 1)."""
    return PercentileState(lo=jnp.zeros((), f32), hi=jnp.zeros((), f32))


def percentile_update(
    state: PercentileState, x: jax.Array, rate: float = 0.01, lo_pct: float = 5.0, hi_pct: float = 95.0
) -> PercentileState:
    """Move the EMAs towards the lo_pct / hi_pct percentiles of all of x (linear interpolation, as numpy)."""
    x = jax.lax.stop_gradient(x).astype(f32)
    lo, hi = jnp.percentile(x, jnp.array([lo_pct, hi_pct], f32))
    return PercentileState(lo=(1.0 - rate) * state.lo + rate * lo, hi=(1.0 - rate) * state.hi + rate * hi)


def percentile_scale(state: PercentileState) -> jax.Array:
    """max(1, hi - lo): advantages are divided by this, so small return spreads are never amplified."""
    return jnp.maximum(1.0, state.hi - state.lo)
