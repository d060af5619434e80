"""Distributions used by the world model and the actor-critic, all maths in float32.

Symlog/symexp squashing, the two-hot distribution of the reward and critic heads,
unimix categorical latents with straight-through samples, and log-space Bernoulli
helpers (stable for logits up to |1e4|) for the continue head and VTA boundaries.
"""

from __future__ import annotations

import dataclasses
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np

f32 = jnp.float32


def symlog(x: jax.Array) -> jax.Array:
    """sign(x) * log(1 + |x|): compresses large magnitudes, identity-like near 0."""
    return jnp.sign(x) * jnp.log1p(jnp.abs(x))


def symexp(x: jax.Array) -> jax.Array:
    """sign(x) * (exp(|x|) - 1): the inverse of `symlog`."""
    return jnp.sign(x) * jnp.expm1(jnp.abs(x))


def soft_clip(x: jax.Array, c: float) -> jax.Array:
    """c * tanh(x / c): a smooth clip to (-c, c) that keeps gradients everywhere."""
    return c * jnp.tanh(x / c)


# ---------------------------------------------------------------------------
# Two-hot over symexp-spaced bins (reward head, critic).


@functools.lru_cache(maxsize=None)
def _twohot_bins_np(num_bins: int) -> np.ndarray:
    """The bins as a float32 numpy array, computed in float64 once per size."""
    if num_bins < 3 or num_bins % 2 == 0:
        raise ValueError(f"two-hot needs an odd number of bins >= 3 (one exactly at 0), got num_bins={num_bins}")
    neg = -np.expm1(-np.linspace(-20.0, 0.0, num_bins // 2 + 1)).astype(np.float32)
    bins = np.concatenate([neg, -neg[-2::-1]])
    bins.flags.writeable = False
    return bins


def twohot_bins(num_bins: int = 255) -> jax.Array:
    """DreamerV3 bins: symexp(linspace(-20, 0, n//2 + 1)) mirrored; exactly antisymmetric, 0 at the centre."""
    return jnp.asarray(_twohot_bins_np(num_bins))


def twohot_encode(x: jax.Array, bins: jax.Array) -> jax.Array:
    """Two-hot encoding of raw values x (...) over sorted bins (K,) -> (..., K), weights linear between neighbours.

    Values outside [bins[0], bins[-1]] put all weight on the nearest edge bin; a NaN value gives a NaN
    encoding, so a broken target makes the loss NaN and the update is skipped rather than hidden.
    """
    chex.assert_rank(bins, 1)
    x = jnp.asarray(x, f32)
    bins = jnp.asarray(bins, f32)
    num = bins.shape[0]
    # below: index of the largest bin <= x (-1 when x is under the first bin).
    below = jnp.searchsorted(bins, x, side="right", method="compare_all") - 1
    lo = jnp.clip(below, 0, num - 1)
    hi = jnp.clip(below + 1, 0, num - 1)
    edge = lo == hi
    b_lo, b_hi = bins[lo], bins[hi]
    w_hi = jnp.where(edge, 0.0, (x - b_lo) / jnp.where(edge, 1.0, b_hi - b_lo))
    weight_lo = jax.nn.one_hot(lo, num, dtype=f32) * (1.0 - w_hi)[..., None]
    encoding = weight_lo + jax.nn.one_hot(hi, num, dtype=f32) * w_hi[..., None]
    return jnp.where(jnp.isnan(x)[..., None], jnp.nan, encoding)


@chex.dataclass(frozen=True)
class TwoHot:
    """Categorical over `bins` read as a real value: mean is the expectation, log_prob the two-hot cross-entropy."""

    logits: jax.Array
    bins: jax.Array = dataclasses.field(default_factory=twohot_bins)

    def mean(self) -> jax.Array:
        """Expectation of the bins, paired from the centre outward: uniform probabilities give exactly 0."""
        chex.assert_axis_dimension(self.logits, -1, self.bins.shape[0])
        probs = jax.nn.softmax(self.logits.astype(f32), axis=-1)
        mid = self.bins.shape[0] // 2
        pos_probs = probs[..., mid + 1 :]
        neg_probs = probs[..., :mid][..., ::-1]
        # bins[mid + k] == -bins[mid - k], so the mean is sum_k b_k (p_+k - p_-k); equal mirrored probs cancel exactly.
        return jnp.sum((pos_probs - neg_probs) * self.bins[mid + 1 :].astype(f32), axis=-1)

    def log_prob(self, target: jax.Array) -> jax.Array:
        """Log-likelihood of raw targets (no gradient to them): sum of two-hot(target) * log_softmax(logits)."""
        chex.assert_axis_dimension(self.logits, -1, self.bins.shape[0])
        chex.assert_shape(target, self.logits.shape[:-1])
        encoding = jax.lax.stop_gradient(twohot_encode(target, self.bins))
        return jnp.sum(encoding * jax.nn.log_softmax(self.logits.astype(f32), axis=-1), axis=-1)


# ---------------------------------------------------------------------------
# Categorical latents (S latents x C classes, one-hot samples).


def unimix_logits(logits: jax.Array, unimix: float = 0.01) -> jax.Array:
    """Normalised log-probs of (1 - unimix) * softmax(logits) + unimix / C; keeps every class >= unimix / C."""
    logits = logits.astype(f32)
    # In log space: log((1 - u) p + u / C) = logaddexp(log(1 - u) + log p, log(u / C)); exact log_softmax at u = 0.
    uniform = jnp.log(jnp.asarray(unimix, f32)) - jnp.log(jnp.float32(logits.shape[-1]))
    return jnp.logaddexp(jnp.log1p(-jnp.asarray(unimix, f32)) + jax.nn.log_softmax(logits, axis=-1), uniform)


def sample_onehot_st(key: jax.Array, logits: jax.Array) -> jax.Array:
    """One-hot sample over the last axis with straight-through gradient onehot + (probs - stop_grad(probs))."""
    logits = logits.astype(f32)
    probs = jax.nn.softmax(logits, axis=-1)
    onehot = jax.nn.one_hot(jax.random.categorical(key, logits, axis=-1), logits.shape[-1], dtype=f32)
    # Parenthesised so the forward value is exactly the one-hot vector (the bracket is exactly 0).
    return onehot + (probs - jax.lax.stop_gradient(probs))


def categorical_kl(p_logits: jax.Array, q_logits: jax.Array) -> jax.Array:
    """KL(p || q) of categoricals over the last axis (classes); callers sum over latents."""
    chex.assert_equal_shape([p_logits, q_logits])
    log_p = jax.nn.log_softmax(p_logits.astype(f32), axis=-1)
    log_q = jax.nn.log_softmax(q_logits.astype(f32), axis=-1)
    return jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1)


def categorical_entropy(logits: jax.Array) -> jax.Array:
    """Entropy of a categorical over the last axis."""
    log_p = jax.nn.log_softmax(logits.astype(f32), axis=-1)
    return -jnp.sum(jnp.exp(log_p) * log_p, axis=-1)


# ---------------------------------------------------------------------------
# Bernoulli in log space: log p = log_sigmoid(a), log (1 - p) = log_sigmoid(-a).


def bernoulli_kl(p_logit: jax.Array, q_logit: jax.Array) -> jax.Array:
    """KL(Bern(sigmoid p) || Bern(sigmoid q)) from log-sigmoids only; finite and accurate for |logit| up to 1e4."""
    chex.assert_equal_shape([p_logit, q_logit])
    p_logit, q_logit = p_logit.astype(f32), q_logit.astype(f32)
    log_p1, log_p0 = jax.nn.log_sigmoid(p_logit), jax.nn.log_sigmoid(-p_logit)
    log_q1, log_q0 = jax.nn.log_sigmoid(q_logit), jax.nn.log_sigmoid(-q_logit)
    return jnp.exp(log_p1) * (log_p1 - log_q1) + jnp.exp(log_p0) * (log_p0 - log_q0)


def bernoulli_entropy(logit: jax.Array) -> jax.Array:
    """Entropy of Bern(sigmoid(logit)) from log-sigmoids."""
    logit = logit.astype(f32)
    log_p1, log_p0 = jax.nn.log_sigmoid(logit), jax.nn.log_sigmoid(-logit)
    return -(jnp.exp(log_p1) * log_p1 + jnp.exp(log_p0) * log_p0)


def bernoulli_log_prob(logit: jax.Array, x: jax.Array) -> jax.Array:
    """x log p + (1 - x) log(1 - p) for Bern(sigmoid(logit)); soft targets x in [0, 1] allowed."""
    logit = logit.astype(f32)
    x = jnp.asarray(x, f32)
    return x * jax.nn.log_sigmoid(logit) + (1.0 - x) * jax.nn.log_sigmoid(-logit)
