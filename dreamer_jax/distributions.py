"""Distributions used by the world model and the actor-critic, all maths in float32.

Symlog/symexp squashing, soft clipping, the two-hot distribution of the reward and critic heads and
unimix logits are ours; the categorical latents (one-hot, straight-through samples) and the Bernoulli
of the continue head and VTA boundaries are distrax distributions built in float32 here.
"""

from __future__ import annotations

import dataclasses
import functools

import chex
import distrax
import jax
import jax.numpy as jnp
import numpy as np

f32 = jnp.float32
sg = jax.lax.stop_gradient  # the papers' sg(.)


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
        encoding = sg(twohot_encode(target, self.bins))
        return jnp.sum(encoding * jax.nn.log_softmax(self.logits.astype(f32), axis=-1), axis=-1)


# ---------------------------------------------------------------------------
# Categorical latents (S latents x C classes, one-hot samples).


def unimix_logits(logits: jax.Array, unimix: float = 0.01) -> jax.Array:
    """Normalised log-probs of (1 - unimix) * softmax(logits) + unimix / C; keeps every class >= unimix / C."""
    logits = logits.astype(f32)
    # In log space: log((1 - u) p + u / C) = logaddexp(log(1 - u) + log p, log(u / C)); exact log_softmax at u = 0.
    uniform = jnp.log(jnp.asarray(unimix, f32)) - jnp.log(jnp.float32(logits.shape[-1]))
    return jnp.logaddexp(jnp.log1p(-jnp.asarray(unimix, f32)) + jax.nn.log_softmax(logits, axis=-1), uniform)


# distrax's straight-through wrapper adds probs - sg(probs) to the exact one-hot sample: the forward value is
# exactly one-hot (the bracket is exactly 0) and the gradient is that of the probabilities.
_OneHotStraightThrough = distrax.straight_through_wrapper(distrax.OneHotCategorical)


def categorical(logits: jax.Array) -> distrax.OneHotCategorical:
    """One-hot categorical over the last axis in float32 (latents pass their unimix logits): `kl_divergence`,
    `entropy`, and `sample(seed=key)`, exactly one-hot with the straight-through gradient onehot + (probs - sg(probs)).
    """
    return _OneHotStraightThrough(logits=jnp.asarray(logits, f32), dtype=f32)


# ---------------------------------------------------------------------------
# Bernoulli (continue head, VTA boundaries).


def bernoulli(logit: jax.Array) -> distrax.Bernoulli:
    """Bern(sigmoid(logit)) in float32. distrax works in log space (log p = -softplus(-logit), log(1 - p) =
    -softplus(logit)), so `log_prob` (soft targets in [0, 1] allowed), `entropy` and `kl_divergence` stay finite and
    accurate, with finite gradients, for |logit| up to 1e4."""
    return distrax.Bernoulli(logits=jnp.asarray(logit, f32))
