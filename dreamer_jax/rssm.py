"""The RSSM of DreamerV3 (2024): a block GRU core with categorical latents, run under `lax.scan`.

Interface shared with the VTA dynamics: `initial(batch)`, `observe(carry, embed, action,
is_first, key)`, `imagine(carry, policy, horizon, key)`, `loss(post, prior)` and
`features(state)`; the pieces both use are in `dreamer_jax.dynamics`.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from dreamer_jax import distributions as dists
from dreamer_jax.dynamics import Carry, balanced_kl, flat, imagine, latent_logits, reset, scale_action, scan_time
from dreamer_jax.networks import MLP, GRUCell


class RSSMState(NamedTuple):
    """deter h (B, D), stoch z (B, S, C) one-hot, and the latent logits that produced z (B, S, C)."""

    deter: jax.Array
    stoch: jax.Array
    logits: jax.Array


class RSSM(nnx.Module):
    """h' = core(h, z, a); prior p(z | h'); posterior q(z | h', embed)."""

    def __init__(self, *, deter: int, hidden: int, stoch: int, classes: int, blocks: int, action_dim: int,
                 embed_dim: int, unimix: float, free_nats: float, dyn_scale: float, rep_scale: float, dtype,
                 rngs: nnx.Rngs, core: str = "blockgru", initial: str = "zeros", unroll: int = 1,
                 logit_scale: float = 1.0):
        if initial not in ("zeros", "learned"):
            raise ValueError(f"unknown initial state {initial!r}; use zeros or learned")
        self.deter, self.stoch, self.classes, self.initial_kind = deter, stoch, classes, initial
        self.unroll = unroll  # time steps per loop iteration of the observe and imagine scans
        self.action_dim, self.unimix, self.free_nats = action_dim, unimix, free_nats
        self.dyn_scale, self.rep_scale = dyn_scale, rep_scale
        self.logit_scale = logit_scale  # the latent heads' outputs times this (see dynamics.latent_logits)
        latent = stoch * classes
        self.cell = GRUCell(deter, hidden, blocks, (latent, action_dim), core, dtype=dtype, rngs=rngs)
        if initial == "learned":
            self.init_deter = nnx.Param(jnp.zeros(deter, jnp.float32))
        self.prior_mlp = MLP(deter, hidden, 2, dtype=dtype, rngs=rngs)
        self.prior_out = nnx.Linear(hidden, latent, dtype=jnp.float32, rngs=rngs)
        self.post_mlp = MLP(deter + embed_dim, hidden, 1, dtype=dtype, rngs=rngs)
        self.post_out = nnx.Linear(hidden, latent, dtype=jnp.float32, rngs=rngs)

    @property
    def feature_dim(self) -> int:
        return self.deter + self.stoch * self.classes

    def initial(self, batch: int) -> Carry:
        """The start of every episode and zero previous action.

        Zeros (2024), or the 2023 learned state: h0 = tanh(w) and z0 the mode of the prior at h0.
        """
        zeros = jnp.zeros((batch, self.stoch, self.classes), jnp.float32)
        state = RSSMState(jnp.zeros((batch, self.deter), jnp.float32), zeros, zeros)
        if self.initial_kind == "learned":
            deter = jnp.broadcast_to(jnp.tanh(self.init_deter[...]), (batch, self.deter))
            logits = self.prior_logits(deter)
            stoch = jax.nn.one_hot(jnp.argmax(logits, -1), self.classes, dtype=jnp.float32)
            state = RSSMState(deter, stoch, logits)
        return Carry(state, jnp.zeros((batch, self.action_dim), jnp.float32))

    @property
    def decoder_dims(self) -> tuple[int, int]:
        return self.deter, self.stoch * self.classes

    def decoder_inputs(self, state: RSSMState) -> tuple[jax.Array, jax.Array]:
        """(h, flatten(z)): the decoder's deterministic and stochastic inputs."""
        return state.deter, flat(state.stoch)

    def features(self, state: RSSMState) -> jax.Array:
        """concat(h, flatten(z)): the input of every head."""
        return jnp.concatenate(self.decoder_inputs(state), -1)

    def core(self, deter, stoch, action):
        """h' from h, z and the action (scaled to at most unit magnitude)."""
        return self.cell(deter, [flat(stoch), scale_action(action)])

    def _latent(self, out, x):
        """Unimix logits (B, S, C) from a linear output."""
        return latent_logits(out, x, self.stoch, self.classes, self.unimix, self.logit_scale)

    def prior_logits(self, deter):
        return self._latent(self.prior_out, self.prior_mlp(deter))

    def post_logits(self, deter, embed):
        return self._latent(self.post_out, self.post_mlp(jnp.concatenate([deter, embed.astype(deter.dtype)], -1)))

    def obs_step(self, carry: Carry, embed, action, is_first, key, reward=None):
        """One filtering step: reset on `is_first`, advance the core, sample the posterior (`reward` unused)."""
        state, prev_action = reset(self.initial(is_first.shape[0]), carry, is_first)
        deter = self.core(state.deter, state.stoch, prev_action)
        post = self.post_logits(deter, embed)
        prior = self.prior_logits(deter)
        stoch = dists.categorical(post).sample(seed=key)
        post_state = RSSMState(deter, stoch, post)
        return Carry(post_state, action), (post_state, prior)

    def img_step(self, state: RSSMState, action, key) -> RSSMState:
        """One imagined step: advance the core, sample the prior."""
        deter = self.core(state.deter, state.stoch, action)
        prior = self.prior_logits(deter)
        return RSSMState(deter, dists.categorical(prior).sample(seed=key), prior)

    def observe(self, carry: Carry, embed, action, is_first, key, reward=None, training=False, update=0,
                constrain=None, mode=False):
        """Posterior states over a sequence (B, T, ...); returns (carry, posterior states, prior logits).

        `reward`, `training`, `update`, `constrain` and `mode` are part of the shared interface (VTA's boundaries);
        the RSSM needs none of them.
        """
        step = lambda c, xs, k: self.obs_step(c, *xs, k)  # noqa: E731
        carry, (post, prior) = scan_time(step, carry, (embed, action, is_first), key, self.unroll)
        return carry, post, prior

    def imagine(self, start: RSSMState, policy: Callable, horizon: int, key):
        """Roll the prior forward from `start` (B, ...); see `dynamics.imagine`."""
        return imagine(self, start, policy, horizon, key, self.unroll)

    def diagnostics(self, post: RSSMState, prior_logits, key, mode: bool = False) -> dict:
        """Per-step (B, T) quantities for analysis: KL(post || prior), the surprise baseline of boundaries."""
        return {"kl_obs": dists.categorical(post.logits).kl_divergence(dists.categorical(prior_logits)).sum(-1)}

    def loss(self, post: RSSMState, prior_logits):
        """DreamerV3's KL balance with free nats (after summing over latents): the scaled loss and metrics."""
        dyn, rep, kl = balanced_kl(post.logits, prior_logits, self.free_nats)
        metrics = {
            "loss_dyn": dyn.mean(), "loss_rep": rep.mean(), "kl_obs": kl.mean(),
            "post_entropy": dists.categorical(post.logits).entropy().sum(-1).mean(),
            "prior_entropy": dists.categorical(prior_logits).entropy().sum(-1).mean(),
        }
        return self.dyn_scale * dyn.mean() + self.rep_scale * rep.mean(), metrics
