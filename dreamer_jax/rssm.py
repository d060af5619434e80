"""The RSSM of DreamerV3 (2024): a block GRU core with categorical latents, run under `lax.scan`.

Interface shared with the VTA dynamics: `initial(batch)`, `observe(carry, embed, action,
is_first, key)`, `imagine(carry, policy, horizon, key)`, `loss(post, prior)` and
`features(state)`. Sequences are batch-major (B, T, ...); the carry holds the previous
action, so `action[:, t]` is the action taken after observing step t.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from dreamer_jax import distributions as dists
from dreamer_jax.networks import BlockLinear, Dense, MLP

sg = jax.lax.stop_gradient


class RSSMState(NamedTuple):
    """deter h (B, D), stoch z (B, S, C) one-hot, and the latent logits that produced z (B, S, C)."""

    deter: jax.Array
    stoch: jax.Array
    logits: jax.Array


class Carry(NamedTuple):
    """What the RSSM carries between steps: the latest state and the action taken after it."""

    state: RSSMState
    action: jax.Array


class GRUCell(nnx.Module):
    """h' = sig(u - 1) tanh(sig(r) c) + (1 - sig(u - 1)) h from h and a list of flat inputs.

    `blockgru` (2024): a Linear -> RMSNorm -> SiLU branch per input and on h, concatenated;
    each of `blocks` groups gets that plus its slice of h; block-diagonal layers give the
    gates. `gru2023`: one input layer, then a LayerNorm GRU over all of h.
    """

    def __init__(self, deter: int, hidden: int, blocks: int, input_dims: tuple[int, ...], kind: str, *, dtype,
                 rngs: nnx.Rngs):
        if deter % blocks:
            raise ValueError(f"deter={deter} must divide by blocks={blocks}")
        if kind not in ("blockgru", "gru2023"):
            raise ValueError(f"unknown GRU cell {kind!r}; use blockgru or gru2023")
        self.deter, self.blocks, self.kind = deter, blocks, kind
        if kind == "blockgru":
            self.in_deter = Dense(deter, hidden, dtype=dtype, rngs=rngs)
            self.in_inputs = nnx.List([Dense(d, hidden, dtype=dtype, rngs=rngs) for d in input_dims])
            group = deter // blocks
            width = (1 + len(input_dims)) * hidden + group
            self.hidden_block = BlockLinear(width, group, blocks, dtype=dtype, rngs=rngs)
            self.hidden_norm = nnx.RMSNorm(deter, dtype=dtype, rngs=rngs)
            self.gates = BlockLinear(group, 3 * group, blocks, dtype=dtype, rngs=rngs)
        else:
            self.gru_in = Dense(sum(input_dims), hidden, dtype=dtype, rngs=rngs)
            self.gru = nnx.Linear(hidden + deter, 3 * deter, use_bias=False, dtype=dtype, rngs=rngs)
            self.gru_norm = nnx.LayerNorm(3 * deter, dtype=dtype, rngs=rngs)

    def __call__(self, deter, inputs):
        lead = deter.shape[:-1]
        if self.kind == "gru2023":
            x = self.gru_in(jnp.concatenate(inputs, -1))
            gates = self.gru_norm(self.gru(jnp.concatenate([x, deter.astype(x.dtype)], -1)))
            grouped = deter
        else:
            x = jnp.concatenate([self.in_deter(deter)] + [f(v) for f, v in zip(self.in_inputs, inputs)], -1)
            grouped = deter.reshape(lead + (self.blocks, -1))
            x = jnp.concatenate([jnp.broadcast_to(x[..., None, :], lead + (self.blocks, x.shape[-1])),
                                 grouped.astype(x.dtype)], -1)
            x = self.hidden_block(x).reshape(lead + (self.deter,))
            gates = self.gates(jax.nn.silu(self.hidden_norm(x)).reshape(lead + (self.blocks, -1)))
        reset, cand, update = jnp.split(gates.astype(jnp.float32), 3, axis=-1)
        update = jax.nn.sigmoid(update - 1.0)
        new = update * jnp.tanh(jax.nn.sigmoid(reset) * cand) + (1 - update) * grouped
        return new.reshape(lead + (self.deter,))


def imagine(dynamics, start, policy: Callable, horizon: int, key):
    """Roll `dynamics.img_step` forward `horizon` steps from `start` (B, ...) with actions from `policy`.

    `policy(features, key)` returns a one-hot action and sees stop-gradient features. Returns the
    states (B, H + 1, ...) with the start first, and the actions taken at each of them (B, H + 1, A).
    """

    def step(state, key):
        act_key, img_key = jax.random.split(key)
        action = policy(sg(dynamics.features(state)), act_key)
        return dynamics.img_step(state, action, img_key), (state, action)

    keys = jax.random.split(key, horizon + 1)
    last, (states, actions) = jax.lax.scan(step, start, keys[:-1])
    last_action = policy(sg(dynamics.features(last)), keys[-1])
    states = jax.tree.map(lambda xs, x: jnp.concatenate([xs, x[None]], 0), states, last)
    actions = jnp.concatenate([actions, last_action[None]], 0)
    swap = lambda x: jnp.swapaxes(x, 0, 1)  # noqa: E731
    return jax.tree.map(swap, states), swap(actions)


def balanced_kl(post_logits, prior_logits, free_nats: float):
    """DreamerV3's KL pair summed over latents: (dyn, rep) with free nats, and the raw KL(post || prior)."""
    dyn_kl = dists.categorical_kl(sg(post_logits), prior_logits).sum(-1)
    rep_kl = dists.categorical_kl(post_logits, sg(prior_logits)).sum(-1)
    return jnp.maximum(free_nats, dyn_kl), jnp.maximum(free_nats, rep_kl), dyn_kl


class RSSM(nnx.Module):
    """h' = core(h, z, a); prior p(z | h'); posterior q(z | h', embed)."""

    def __init__(self, *, deter: int, hidden: int, stoch: int, classes: int, blocks: int, action_dim: int,
                 embed_dim: int, unimix: float, free_nats: float, dyn_scale: float, rep_scale: float, dtype,
                 rngs: nnx.Rngs, core: str = "blockgru", initial: str = "zeros"):
        if initial not in ("zeros", "learned"):
            raise ValueError(f"unknown initial state {initial!r}; use zeros or learned")
        self.deter, self.stoch, self.classes, self.initial_kind = deter, stoch, classes, initial
        self.action_dim, self.unimix, self.free_nats = action_dim, unimix, free_nats
        self.dyn_scale, self.rep_scale = dyn_scale, rep_scale
        flat = stoch * classes
        self.cell = GRUCell(deter, hidden, blocks, (flat, action_dim), core, dtype=dtype, rngs=rngs)
        if initial == "learned":
            self.init_deter = nnx.Param(jnp.zeros(deter, jnp.float32))
        self.prior_mlp = MLP(deter, hidden, 2, dtype=dtype, rngs=rngs)
        self.prior_out = nnx.Linear(hidden, flat, dtype=jnp.float32, rngs=rngs)
        self.post_mlp = MLP(deter + embed_dim, hidden, 1, dtype=dtype, rngs=rngs)
        self.post_out = nnx.Linear(hidden, flat, dtype=jnp.float32, rngs=rngs)

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
        return state.deter, state.stoch.reshape(state.stoch.shape[:-2] + (-1,))

    def features(self, state: RSSMState) -> jax.Array:
        """concat(h, flatten(z)): the input of every head."""
        return jnp.concatenate(self.decoder_inputs(state), -1)

    def core(self, deter, stoch, action):
        """h' from h, z and the action (scaled to at most unit magnitude, as DreamerV3 does)."""
        action = action / sg(jnp.maximum(1.0, jnp.abs(action)))
        return self.cell(deter, [stoch.reshape(stoch.shape[:-2] + (-1,)), action])

    def _latent(self, out, x):
        """Unimix logits (B, S, C) from a linear output."""
        return dists.unimix_logits(out(x).reshape(x.shape[:-1] + (self.stoch, self.classes)), self.unimix)

    def prior_logits(self, deter):
        return self._latent(self.prior_out, self.prior_mlp(deter))

    def post_logits(self, deter, embed):
        return self._latent(self.post_out, self.post_mlp(jnp.concatenate([deter, embed.astype(deter.dtype)], -1)))

    def obs_step(self, carry: Carry, embed, action, is_first, key, reward=None):
        """One filtering step: reset on `is_first`, advance the core, sample the posterior (`reward` unused)."""
        start = self.initial(is_first.shape[0])
        first = lambda x: is_first.reshape(is_first.shape + (1,) * (x.ndim - 1))  # noqa: E731
        state = jax.tree.map(lambda s, c: jnp.where(first(c), s, c), start.state, carry.state)
        prev_action = jnp.where(first(carry.action), 0.0, carry.action)
        deter = self.core(state.deter, state.stoch, prev_action)
        post = self.post_logits(deter, embed)
        prior = self.prior_logits(deter)
        stoch = dists.sample_onehot_st(key, post)
        post_state = RSSMState(deter, stoch, post)
        return Carry(post_state, action), (post_state, prior)

    def img_step(self, state: RSSMState, action, key) -> RSSMState:
        """One imagined step: advance the core, sample the prior."""
        deter = self.core(state.deter, state.stoch, action)
        prior = self.prior_logits(deter)
        return RSSMState(deter, dists.sample_onehot_st(key, prior), prior)

    def observe(self, carry: Carry, embed, action, is_first, key, reward=None, training=False, update=0,
                constrain=None, mode=False):
        """Posterior states over a sequence (B, T, ...); returns (carry, posterior states, prior logits).

        `reward`, `training`, `update`, `constrain` and `mode` are part of the shared interface (VTA's boundaries);
        the RSSM needs none of them.
        """
        keys = jax.random.split(key, embed.shape[1])
        swap = lambda x: jnp.swapaxes(x, 0, 1)  # noqa: E731
        step = lambda c, xs: self.obs_step(c, *xs)  # noqa: E731
        carry, (post, prior) = jax.lax.scan(step, carry, (swap(embed), swap(action), swap(is_first), keys))
        return carry, jax.tree.map(swap, post), swap(prior)

    def imagine(self, start: RSSMState, policy: Callable, horizon: int, key):
        """Roll the prior forward from `start` (B, ...); see `imagine`."""
        return imagine(self, start, policy, horizon, key)

    def diagnostics(self, post: RSSMState, prior_logits, key, mode: bool = False) -> dict:
        """Per-step (B, T) quantities for analysis: KL(post || prior), the surprise baseline of boundaries."""
        return {"kl_obs": dists.categorical_kl(post.logits, prior_logits).sum(-1)}

    def loss(self, post: RSSMState, prior_logits):
        """DreamerV3's KL balance with free nats (after summing over latents): the scaled loss and metrics."""
        dyn, rep, kl = balanced_kl(post.logits, prior_logits, self.free_nats)
        metrics = {
            "loss_dyn": dyn.mean(), "loss_rep": rep.mean(), "kl_obs": kl.mean(),
            "post_entropy": dists.categorical_entropy(post.logits).sum(-1).mean(),
            "prior_entropy": dists.categorical_entropy(prior_logits).sum(-1).mean(),
        }
        return self.dyn_scale * dyn.mean() + self.rep_scale * rep.mean(), metrics
