"""VTA dynamics (variational temporal abstraction) with the RSSM's interface, DreamerV3-style, for an acting agent.

Two levels: abstract (c, z) and observation (h, s). A boundary m_t (READ = 1 starts a new
segment at t, COPY = 0) is sampled from a causal posterior q(m_t | h_{t-1}, s_{t-1}, e_t[, r_t])
while filtering and from the learned prior p(m_t | h_{t-1}, s_{t-1}, a_{t-1}) in imagination.
READ: c_t = GRU_c(c_{t-1}, [z_{t-1}, h_{t-1}, s_{t-1}, a_{t-1}]), the abstract transition taking the
observation-level state that ends the segment and the last action (as THICK's high level does),
and z_t is sampled anew; the observation level restarts from the abstract features. So a READ in
imagination keeps what the actions of the ended segment did (the original VTA was action-free).
COPY: (c, z) are carried bit for bit. Heads read concat(h, s, c, z). The boundary is sampled
with logistic noise and a straight-through estimator whose temperature shapes only the
gradient, or taken as its mode (READ where q > 0.5) for evaluation. Length and count
constraints force the prior (READ wins); `boundary_force_scale` also forces the posterior.
The state carries the segment length (steps since the last READ, across training sequences
through the replay context) and the segment count (READs since the training sequence, or the
episode, began).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import distrax
import jax
import jax.numpy as jnp
from flax import nnx

from dreamer_jax import distributions as dists
from dreamer_jax.config import linear_schedule
from dreamer_jax.distributions import sg
from dreamer_jax.dynamics import Carry, balanced_kl, flat, imagine, latent_logits, reset, scale_action, scan_time
from dreamer_jax.networks import MLP, Dense, GRUCell


class VTAState(NamedTuple):
    """Both levels, their latent logits, the boundary at this step and the segment counters (all (B, ...))."""

    h: jax.Array
    s: jax.Array
    s_logits: jax.Array
    c: jax.Array
    z: jax.Array
    z_logits: jax.Array
    read: jax.Array  # hard boundary in {0, 1}, float32 (the straight-through value while training)
    read_logit: jax.Array  # logit of the distribution it was sampled from (posterior or prior)
    forced: jax.Array  # the boundary used was forced: an episode start, or a constraint with posterior forcing
    seg_len: jax.Array  # steps since the last READ, this one included (1 at a READ)
    seg_num: jax.Array  # READs since the training sequence (or, outside training, the episode) began


class VTAPrior(NamedTuple):
    s_logits: jax.Array
    z_logits: jax.Array
    read_logit: jax.Array


class VTA(nnx.Module):
    """Two-level dynamics with learned boundaries; see the module docstring."""

    def __init__(self, *, deter: int, hidden: int, stoch: int, classes: int, blocks: int, action_dim: int,
                 embed_dim: int, unimix: float, free_nats: float, dyn_scale: float, rep_scale: float,
                 max_seg_len: int, max_seg_num: int, logit_clip: float, lookahead: int, reward_input: bool,
                 rate: float, rate_scale: float, rate_mode: str, boundary_dyn_scale: float, boundary_rep_scale: float,
                 force_scale: float, force_final: float, temp: float, temp_final: float, schedule_steps: int,
                 dtype, rngs: nnx.Rngs, core: str = "blockgru", unroll: int = 1, logit_scale: float = 1.0):
        self.deter, self.stoch, self.classes, self.action_dim = deter, stoch, classes, action_dim
        self.unroll = unroll  # time steps per loop iteration of the observe and imagine scans
        self.unimix, self.free_nats, self.dyn_scale, self.rep_scale = unimix, free_nats, dyn_scale, rep_scale
        self.logit_scale = logit_scale  # the latent heads' outputs times this (see dynamics.latent_logits)
        self.max_seg_len, self.max_seg_num = max_seg_len, max_seg_num
        self.clip, self.lookahead, self.reward_input = logit_clip, lookahead, reward_input
        self.rate, self.rate_scale, self.rate_mode = rate, rate_scale, rate_mode
        self.boundary_dyn, self.boundary_rep = boundary_dyn_scale, boundary_rep_scale
        # (start, final, updates) of the posterior force scale and the boundary temperature: linear, then held
        self.force_schedule = (force_scale, force_final, schedule_steps)
        self.temp_schedule = (temp, temp_final, schedule_steps)
        latent = stoch * classes
        abstract = deter + latent
        self.abstract_cell = GRUCell(deter, hidden, blocks, (latent, deter, latent, action_dim), core, dtype=dtype,
                                     rngs=rngs)
        self.z_prior = MLP(deter, hidden, 2, dtype=dtype, rngs=rngs)
        self.z_prior_out = nnx.Linear(hidden, latent, dtype=jnp.float32, rngs=rngs)
        self.z_post = MLP(deter + embed_dim, hidden, 1, dtype=dtype, rngs=rngs)
        self.z_post_out = nnx.Linear(hidden, latent, dtype=jnp.float32, rngs=rngs)
        self.restart = Dense(abstract, deter, dtype=dtype, rngs=rngs)
        self.obs_cell = GRUCell(deter, hidden, blocks, (latent, action_dim, abstract), core, dtype=dtype, rngs=rngs)
        self.s_prior = MLP(deter, hidden, 2, dtype=dtype, rngs=rngs)
        self.s_prior_out = nnx.Linear(hidden, latent, dtype=jnp.float32, rngs=rngs)
        self.s_post = MLP(deter + embed_dim, hidden, 1, dtype=dtype, rngs=rngs)
        self.s_post_out = nnx.Linear(hidden, latent, dtype=jnp.float32, rngs=rngs)
        self.read_prior = nnx.Linear(deter + latent + action_dim, 1, dtype=jnp.float32, rngs=rngs)
        detector_in = deter + latent + embed_dim * (1 + self.lookahead) + int(self.reward_input)
        self.read_post = nnx.Sequential(Dense(detector_in, hidden, dtype=dtype, rngs=rngs),
                                        nnx.Linear(hidden, 1, dtype=jnp.float32, rngs=rngs))

    # -- shapes and features ----------------------------------------------------------------------
    @property
    def feature_dim(self) -> int:
        return 2 * (self.deter + self.stoch * self.classes)

    @property
    def decoder_dims(self) -> tuple[int, int]:
        return 2 * self.deter, 2 * self.stoch * self.classes

    def decoder_inputs(self, state: VTAState):
        """(concat(h, c), concat(s, z) flat): deterministic and stochastic decoder inputs."""
        return jnp.concatenate([state.h, state.c], -1), jnp.concatenate([flat(state.s), flat(state.z)], -1)

    def features(self, state: VTAState):
        """concat(h, s, c, z): the input of every head."""
        return jnp.concatenate(self.decoder_inputs(state), -1)

    def initial(self, batch: int) -> Carry:
        zeros = lambda *shape: jnp.zeros((batch,) + shape, jnp.float32)  # noqa: E731
        latent = (self.stoch, self.classes)
        count = jnp.zeros((batch,), jnp.int32)
        state = VTAState(zeros(self.deter), zeros(*latent), zeros(*latent), zeros(self.deter), zeros(*latent),
                         zeros(*latent), zeros(), zeros(), jnp.zeros((batch,), bool), count, count)
        return Carry(state, zeros(self.action_dim))

    # -- pieces -----------------------------------------------------------------------------------
    def _latent(self, out, x):
        """Unimix logits (B, S, C) from a linear output."""
        return latent_logits(out, x, self.stoch, self.classes, self.unimix, self.logit_scale)

    def _z_prior(self, c):
        """Logits of the abstract prior p(z | c)."""
        return self._latent(self.z_prior_out, self.z_prior(c))

    def _s_prior(self, h):
        """Logits of the observation-level prior p(s | h)."""
        return self._latent(self.s_prior_out, self.s_prior(h))

    def _obs_input(self, state: VTAState):
        return jnp.concatenate([state.h, flat(state.s)], -1)

    def prior_read_logit(self, state: VTAState, action):
        """Logit of p(m_t = READ) from the previous observation-level state and the action taken after it (which
        decides, in pinpad, whether step t enters a pad), soft-clipped, float32."""
        inputs = jnp.concatenate([self._obs_input(state).astype(jnp.float32), action.astype(jnp.float32)], -1)
        return dists.soft_clip(self.read_prior(inputs)[..., 0], self.clip)

    def post_read_logit(self, state: VTAState, context, reward):
        """Logit of q(m_t = READ) from the previous state, this step's embedding(s) and optionally its reward."""
        parts = [self._obs_input(state), context.astype(state.h.dtype)]
        if self.reward_input:
            parts.append(dists.symlog(reward)[..., None])
        return dists.soft_clip(self.read_post(jnp.concatenate(parts, -1))[..., 0].astype(jnp.float32), self.clip)

    def constraints(self, state: VTAState, is_first, constrain: bool):
        """(force READ, force COPY) this step from the previous state's counters: episode start always; segment
        limits only when `constrain`."""
        force_read = is_first
        force_copy = jnp.zeros_like(is_first)
        if constrain:
            force_read = force_read | (state.seg_len >= self.max_seg_len)
            force_copy = (state.seg_num >= self.max_seg_num) & ~force_read
        return force_read, force_copy

    def _forced(self, logit, force_read, force_copy, value):
        return jnp.where(force_read, value, jnp.where(force_copy, -value, logit))

    def sample_read(self, logit, key, temp, mode: bool = False):
        """Hard READ in {0, 1} with a straight-through gradient sigmoid((logit + noise) / temp); with `mode` the
        deterministic boundary, READ where the probability exceeds one half (no noise)."""
        noisy = logit if mode else logit + jax.random.logistic(key, logit.shape, jnp.float32)
        soft = jax.nn.sigmoid(noisy / temp)
        hard = (noisy > 0).astype(jnp.float32)
        return hard + (soft - sg(soft))

    def _advance(self, prev: VTAState, read, action, z_logits_fn, s_logits_fn, keys):
        """Both levels given the boundary and the previous action: update (c, z) on READ from the abstract state,
        the observation-level state that ends the segment and the action; carry them on COPY; then (h, s)."""
        z_key, s_key = keys
        action = scale_action(action)
        c_read = self.abstract_cell(prev.c, [flat(prev.z), prev.h, flat(prev.s), action])
        z_logits_read = z_logits_fn(c_read)
        z_read = dists.categorical(z_logits_read).sample(seed=z_key)
        m = read[:, None]
        c = m * c_read + (1 - m) * prev.c
        z = m[..., None] * z_read + (1 - m[..., None]) * prev.z
        z_logits = m[..., None] * z_logits_read + (1 - m[..., None]) * prev.z_logits
        abstract = jnp.concatenate([c, flat(z)], -1)
        h_base = m * self.restart(abstract).astype(jnp.float32) + (1 - m) * prev.h
        s_base = (1 - m[..., None]) * prev.s
        h = self.obs_cell(h_base, [flat(s_base), action, abstract])
        s_logits = s_logits_fn(h)
        return c, z, z_logits, z_logits_read, h, s_logits, dists.categorical(s_logits).sample(seed=s_key)

    @staticmethod
    def _counters(prev: VTAState, read):
        """(segment length, segment count) after this step's boundary."""
        hard = sg(read) > 0.5
        return jnp.where(hard, 1, prev.seg_len + 1), prev.seg_num + hard.astype(jnp.int32)

    # -- filtering --------------------------------------------------------------------------------
    def obs_step(self, carry: Carry, embed, action, is_first, key, reward=None, context=None,
                 constrain=False, force_scale=0.0, temp=1.0, mode=False):
        """One filtering step: reset on `is_first`, boundary from the causal posterior (sampled, or its mode), both
        levels. Acting calls it with the defaults: no constraints, no posterior forcing, temperature 1.
        """
        state, prev_action = reset(self.initial(is_first.shape[0]), carry, is_first)
        read_key, z_key, s_key = jax.random.split(key, 3)
        force_read, force_copy = self.constraints(state, is_first, constrain)
        prior_logit = self._forced(self.prior_read_logit(state, prev_action), force_read, force_copy, self.clip)
        post_logit = self.post_read_logit(state, embed if context is None else context,
                                          jnp.zeros(is_first.shape) if reward is None else reward)
        post_logit = jnp.where(is_first, self.clip, post_logit)
        forcing = jnp.asarray(force_scale) > 0
        post_logit = jnp.where(forcing, self._forced(post_logit, force_read, force_copy, force_scale), post_logit)
        read = self.sample_read(post_logit, read_key, temp, mode)
        read = jnp.where(is_first, 1.0, read)  # an episode always starts a segment
        z_post = lambda c: self._latent(self.z_post_out, self.z_post(jnp.concatenate([c, embed.astype(c.dtype)], -1)))
        s_post = lambda h: self._latent(self.s_post_out, self.s_post(jnp.concatenate([h, embed.astype(h.dtype)], -1)))
        c, z, z_logits, _, h, s_logits, s = self._advance(state, read, prev_action, z_post, s_post, (z_key, s_key))
        forced = is_first | (forcing & (force_read | force_copy))  # the boundary used was the constraint's
        post = VTAState(h, s, s_logits, c, z, z_logits, read, post_logit, forced, *self._counters(state, read))
        prior = VTAPrior(self._s_prior(h), self._z_prior(c), prior_logit)
        return Carry(post, action), (post, prior)

    def observe(self, carry: Carry, embed, action, is_first, key, reward=None, training=False, update=0,
                constrain=None, mode=False):
        """Posterior states over a sequence (B, T, ...); returns (carry, posterior states, priors).

        While `training` the segment constraints apply and the posterior forcing scale and the temperature
        follow their schedules at `update`. The segment length goes on from the carry (the replay context), so a
        `max_seg_len` longer than the sequence still binds; the segment count starts at zero with every training
        sequence (`max_seg_num` limits the segments of one sequence, as in the original VTA). `constrain`
        (default: `training`) asks for the constraints and forcing at `update` outside training, for analysis;
        both counters then run from each episode start. `mode` takes the deterministic boundary (READ where
        q > 0.5) instead of a sample, for evaluation.
        """
        constrain = training if constrain is None else constrain
        force_scale = linear_schedule(*self.force_schedule, update) if constrain else 0.0
        temp = linear_schedule(*self.temp_schedule, update) if training else 1.0
        if training:
            carry = carry._replace(state=carry.state._replace(seg_num=jnp.zeros_like(carry.state.seg_num)))
        length = embed.shape[1]
        context = embed
        if self.lookahead:
            padded = jnp.pad(embed, ((0, 0), (0, self.lookahead), (0, 0)))
            context = jnp.concatenate([padded[:, k:k + length] for k in range(self.lookahead + 1)], -1)
        reward = jnp.zeros(embed.shape[:2]) if reward is None else reward

        def step(c, xs, k):
            e, a, f, r, ctx = xs
            return self.obs_step(c, e, a, f, k, r, ctx, constrain, force_scale, temp, mode)

        carry, (post, prior) = scan_time(step, carry, (embed, action, is_first, reward, context), key, self.unroll)
        return carry, post, prior

    # -- imagination ------------------------------------------------------------------------------
    def img_step(self, state: VTAState, action, key) -> VTAState:
        """One imagined step after `action`: boundary from the prior, z and s from their priors."""
        read_key, z_key, s_key = jax.random.split(key, 3)
        logit = self.prior_read_logit(state, action)
        read = sg(self.sample_read(logit, read_key, 1.0))
        c, z, z_logits, _, h, s_logits, s = self._advance(state, read, action, self._z_prior, self._s_prior,
                                                             (z_key, s_key))
        return VTAState(h, s, s_logits, c, z, z_logits, read, logit, jnp.zeros_like(read, bool),
                        *self._counters(state, read))

    def jump(self, state: VTAState, h_end, s_end, action, key) -> VTAState:
        """The READ that ends the segment of `state`, given the observation-level state that ends it (h_end, s_end)
        and the action after it: the abstract level updates from them and z, s come from their priors. The
        abstract model's next state: no step of the segment is needed."""
        z_key, s_key = jax.random.split(key)
        read = jnp.ones(state.read.shape, jnp.float32)
        end = state._replace(h=h_end, s=s_end)
        c, z, z_logits, _, h, s_logits, s = self._advance(end, read, action, self._z_prior, self._s_prior,
                                                             (z_key, s_key))
        return VTAState(h, s, s_logits, c, z, z_logits, read, jnp.full_like(read, self.clip),
                        jnp.zeros_like(read, bool), *self._counters(state, read))

    def imagine(self, start: VTAState, policy: Callable, horizon: int, key):
        """Roll the priors (boundary, z, s) forward from `start`; see `dynamics.imagine`."""
        return imagine(self, start, policy, horizon, key, self.unroll)

    def diagnostics(self, post: VTAState, prior: VTAPrior, key, mode: bool = False) -> dict:
        """Per-step (B, T) quantities for analysis: both boundaries (the prior's sampled here, or its mode), forcing,
        KLs."""
        read_prior = self.sample_read(prior.read_logit, key, 1.0, mode) > 0.5
        read = post.read > 0.5
        cat = dists.categorical
        return {
            "read": read, "read_prob": jax.nn.sigmoid(post.read_logit), "read_prior": read_prior,
            "read_prob_prior": jax.nn.sigmoid(prior.read_logit), "forced": post.forced,
            "kl_obs": cat(post.s_logits).kl_divergence(cat(prior.s_logits)).sum(-1),
            "kl_abstract": jnp.where(read, cat(post.z_logits).kl_divergence(cat(prior.z_logits)).sum(-1), 0.0),
        }

    # -- losses -----------------------------------------------------------------------------------
    def rate_penalty(self, post_logit):
        """KL to a fixed-hazard Bernoulli(rate): per step (the prototype's) or of the batch-mean READ probability."""
        if self.rate_mode == "step":
            rate_logit = jnp.log(self.rate) - jnp.log1p(-self.rate)
            return dists.bernoulli(post_logit).kl_divergence(dists.bernoulli(rate_logit)).mean()
        q = jax.nn.sigmoid(post_logit).mean()
        return distrax.Bernoulli(probs=q).kl_divergence(distrax.Bernoulli(probs=jnp.float32(self.rate)))

    def loss(self, post: VTAState, prior: VTAPrior):
        """KL_s every step, KL_z at READs (mask detached), both-way boundary KL, rate regulariser; and metrics."""
        s_dyn, s_rep, s_kl = balanced_kl(post.s_logits, prior.s_logits, self.free_nats)
        z_dyn, z_rep, z_kl = balanced_kl(post.z_logits, prior.z_logits, self.free_nats)
        read = sg(post.read)
        reads = jnp.maximum(read.sum(), 1.0)
        bern = dists.bernoulli
        m_dyn = bern(sg(post.read_logit)).kl_divergence(bern(prior.read_logit))
        m_rep = bern(post.read_logit).kl_divergence(bern(sg(prior.read_logit)))
        loss = (self.dyn_scale * (s_dyn.mean() + (read * z_dyn).mean())
                + self.rep_scale * (s_rep.mean() + (read * z_rep).mean())
                + self.boundary_dyn * m_dyn.mean() + self.boundary_rep * m_rep.mean())
        rate = self.rate_penalty(post.read_logit) if self.rate_scale > 0 else jnp.float32(0)
        loss = loss + self.rate_scale * rate
        hard = read > 0.5
        forced = post.forced
        metrics = {
            "loss_dyn": s_dyn.mean(), "loss_rep": s_rep.mean(), "kl_obs": s_kl.mean(),
            "kl_abstract": (read * z_kl).sum() / reads, "kl_boundary": m_rep.mean(), "loss_rate": rate,
            "boundary_ratio": read.mean(), "boundary_ratio_free": (hard & ~forced).mean(),
            "forced_ratio": forced.mean(),
            "boundary_entropy_post": bern(post.read_logit).entropy().mean(),
            "boundary_entropy_prior": bern(prior.read_logit).entropy().mean(),
            "mean_segment_length": read.size / reads,
            "no_read_share": (~hard.any(-1)).mean(), "all_read_share": hard.all(-1).mean(),
            "post_entropy": dists.categorical(post.s_logits).entropy().sum(-1).mean(),
            "prior_entropy": dists.categorical(prior.s_logits).entropy().sum(-1).mean(),
        }
        return loss, metrics
