"""What the RSSM and the VTA dynamics share: the carry, episode resets, latents, action scaling, the time axis,
imagination and DreamerV3's balanced KL.

Both dynamics take batch-major sequences (B, T, ...) and scan over time; the carry holds the previous
action, so `action[:, t]` is the action taken after observing step t.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from dreamer_jax import distributions as dists
from dreamer_jax.distributions import sg


class Carry(NamedTuple):
    """What a dynamics carries between steps: the latest state and the action taken after it."""

    state: Any
    action: jax.Array


def swap_time(tree):
    """Batch-major (B, T, ...) <-> time-major (T, B, ...) for every leaf of at least two axes (scalars pass)."""
    return jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1) if jnp.ndim(x) >= 2 else x, tree)


def flat(latent):
    """(..., S, C) latents -> (..., S * C)."""
    return latent.reshape(latent.shape[:-2] + (-1,))


def scale_action(action):
    """The action scaled to at most unit magnitude (no gradient through the scale), as DreamerV3 does."""
    return action / sg(jnp.maximum(1.0, jnp.abs(action)))


def latent_logits(out, x, stoch: int, classes: int, unimix: float, scale: float = 1.0):
    """Unimix logits (..., S, C) of a linear layer `out` on `x`, its output times `scale` first (1: the official).
    Scale 1 multiplies nothing, so the default traces the official program and its compile caches stay valid."""
    logits = out(x).reshape(x.shape[:-1] + (stoch, classes))
    return dists.unimix_logits(logits if scale == 1 else scale * logits, unimix)


def reset(initial: Carry, carry: Carry, is_first):
    """(state, previous action) of the step: the initial state and a zero action where an episode starts."""
    first = lambda x: is_first.reshape(is_first.shape + (1,) * (x.ndim - 1))  # noqa: E731
    state = jax.tree.map(lambda s, c: jnp.where(first(c), s, c), initial.state, carry.state)
    return state, jnp.where(first(carry.action), 0.0, carry.action)


def scan_time(step: Callable, carry, xs, key, unroll: int = 1):
    """`lax.scan` of `step(carry, x_t, key_t)` over the time axis of batch-major inputs `xs` (a tuple), a key
    per step, `unroll` steps per loop iteration; batch-major outputs."""
    keys = jax.random.split(key, jax.tree.leaves(xs)[0].shape[1])
    carry, ys = jax.lax.scan(lambda c, inputs: step(c, *inputs), carry, (swap_time(xs), keys), unroll=unroll)
    return carry, swap_time(ys)


def imagine(dynamics, start, policy: Callable, horizon: int, key, unroll: int = 1):
    """Roll `dynamics.img_step` forward `horizon` steps from `start` (B, ...) with actions from `policy`, `unroll`
    steps per loop iteration.

    `policy(features, key)` returns a one-hot action and sees stop-gradient features. Returns the
    states (B, H + 1, ...) with the start first, and the actions taken at each of them (B, H + 1, A).
    """

    def step(state, key):
        act_key, img_key = jax.random.split(key)
        action = policy(sg(dynamics.features(state)), act_key)
        return dynamics.img_step(state, action, img_key), (state, action)

    keys = jax.random.split(key, horizon + 1)
    last, (states, actions) = jax.lax.scan(step, start, keys[:-1], unroll=unroll)
    last_action = policy(sg(dynamics.features(last)), keys[-1])
    states = jax.tree.map(lambda xs, x: jnp.concatenate([xs, x[None]], 0), states, last)
    actions = jnp.concatenate([actions, last_action[None]], 0)
    return swap_time((states, actions))


def balanced_kl(post_logits, prior_logits, free_nats: float):
    """DreamerV3's KL pair summed over latents: (dyn, rep) with free nats, and the raw KL(post || prior)."""
    cat = dists.categorical
    dyn_kl = cat(sg(post_logits)).kl_divergence(cat(prior_logits)).sum(-1)
    rep_kl = cat(post_logits).kl_divergence(cat(sg(prior_logits))).sum(-1)
    return jnp.maximum(free_nats, dyn_kl), jnp.maximum(free_nats, rep_kl), dyn_kl
