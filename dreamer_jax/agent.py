"""The DreamerV3 agent: world model, actor and critic as one NNX module, and their losses.

The losses are pure functions of the merged module, a batch and a key; `dreamer_jax.train`
differentiates their sum with one optimiser. The dynamics (RSSM or VTA) is used only
through its interface, so nothing here branches on which one it is.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from dreamer_jax import distributions as dists
from dreamer_jax.config import Config
from dreamer_jax.networks import Decoder, Encoder, Head
from dreamer_jax.returns import lambda_returns, percentile_scale, percentile_update, PercentileState
from dreamer_jax.rssm import RSSM
from dreamer_jax.vta import VTA

sg = jax.lax.stop_gradient


def compute_dtype(config: Config):
    return jnp.bfloat16 if config.precision == "bf16" else jnp.float32


def make_dynamics(config: Config, action_dim: int, embed_dim: int, rngs: nnx.Rngs):
    """The dynamics module the configuration names: RSSM or VTA."""
    common = dict(deter=config.deter, hidden=config.hidden, stoch=config.stoch, classes=config.classes,
                  blocks=config.blocks, action_dim=action_dim, embed_dim=embed_dim, unimix=config.unimix,
                  free_nats=config.free_nats, dyn_scale=config.dyn_scale, rep_scale=config.rep_scale,
                  dtype=compute_dtype(config), rngs=rngs)
    if config.dynamics == "vta":
        return VTA(config=config, **common)
    return RSSM(core=config.core, initial=config.initial, **common)


class Agent(nnx.Module):
    """Encoder, dynamics, decoder, reward and continue heads (the world model), actor and critic."""

    def __init__(self, config: Config, action_dim: int, rngs: nnx.Rngs):
        dtype = compute_dtype(config)
        self.action_dim = action_dim
        self.encoder = Encoder(config.depth, dtype=dtype, rngs=rngs)
        self.dynamics = make_dynamics(config, action_dim, self.encoder.out_dim, rngs)
        deter_dim, stoch_dim = self.dynamics.decoder_dims
        self.decoder = Decoder(deter_dim, stoch_dim, config.depth, config.units, config.blocks, dtype=dtype, rngs=rngs)
        feat = self.dynamics.feature_dim
        self.reward = Head(feat, config.bins, config.units, config.head_layers, dtype=dtype, rngs=rngs, zero_init=True)
        self.cont = Head(feat, 1, config.units, config.head_layers, dtype=dtype, rngs=rngs)
        self.actor = Head(feat, action_dim, config.units, config.mlp_layers, dtype=dtype, rngs=rngs,
                          out_scale=config.actor_outscale)
        self.critic = Head(feat, config.bins, config.units, config.mlp_layers, dtype=dtype, rngs=rngs, zero_init=True)
        self.num_bins, self.unimix = config.bins, config.unimix

    def twohot(self, logits) -> dists.TwoHot:
        """A two-hot distribution over the configured bins (reward head, critic)."""
        return dists.TwoHot(logits=logits, bins=dists.twohot_bins(self.num_bins))

    def policy_logits(self, feat):
        return dists.unimix_logits(self.actor(feat), self.unimix)

    def sample_action(self, feat, key):
        """One-hot action sampled from the policy (no gradient: REINFORCE uses log-probabilities)."""
        logits = self.policy_logits(feat)
        return jax.nn.one_hot(jax.random.categorical(key, logits), self.action_dim, dtype=jnp.float32)


class WorldModelOut(NamedTuple):
    post: object  # posterior states (B, T, ...)
    carry: object  # the dynamics carry after the sequence
    metrics: dict


def world_model_loss(agent: Agent, config: Config, carry, data: dict, key, update=0):
    """Reconstruction, reward, continue and dynamics losses over a replayed batch (B, T): (loss, WorldModelOut).

    `update` (the update count) drives the dynamics' schedules, if it has any.
    """
    embed = agent.encoder(data["image"])
    action = jax.nn.one_hot(data["action"], agent.action_dim, dtype=jnp.float32)
    carry, post, prior = agent.dynamics.observe(carry, embed, action, data["is_first"], key,
                                                reward=data["reward"], training=True, update=update)
    deter, stoch = agent.dynamics.decoder_inputs(post)
    feat = agent.dynamics.features(post)
    recon = agent.decoder(deter, stoch)
    rec = jnp.square(recon - data["image"].astype(jnp.float32) / 255.0).sum((-3, -2, -1))
    rew = -agent.twohot(agent.reward(feat)).log_prob(data["reward"])
    cont_target = (1.0 - data["is_terminal"].astype(jnp.float32)) * (1.0 - 1.0 / config.discount_horizon)
    cont = -dists.bernoulli_log_prob(agent.cont(feat)[..., 0], cont_target)
    dyn_loss, metrics = agent.dynamics.loss(post, prior)
    terms = {"rec": (rec, config.rec_scale), "rew": (rew, config.rew_scale), "con": (cont, config.con_scale)}
    loss = dyn_loss + sum(scale * value.mean() for value, scale in terms.values())
    metrics.update({f"loss_{k}": value.mean() for k, (value, _) in terms.items()})
    return loss, WorldModelOut(post, carry, metrics)


def actor_critic_loss(agent: Agent, slow_critic: Head, config: Config, post, data: dict,
                      retnorm: PercentileState, key):
    """Imagination from every posterior state, REINFORCE actor, two-hot critic with slow regulariser, replay value.

    Returns (loss, (new return-normaliser state, metrics)).
    """
    batch, length = data["reward"].shape
    start = jax.tree.map(lambda x: sg(x.reshape((batch * length,) + x.shape[2:])), post)
    states, actions = agent.dynamics.imagine(start, agent.sample_action, config.horizon, key)
    states, actions = sg(states), sg(actions)
    feat = agent.dynamics.features(states)  # (N, H + 1, F)
    disc = 1.0 - 1.0 / config.discount_horizon
    reward = agent.twohot(agent.reward(feat)).mean()
    cont = jax.nn.sigmoid(agent.cont(feat)[..., 0])
    start_cont = (1.0 - data["is_terminal"].reshape(-1).astype(jnp.float32)) * disc
    cont = sg(cont.at[:, 0].set(start_cont))
    value_logits = agent.critic(feat)[:, :-1]
    target_value = sg(agent.twohot(slow_critic(feat)).mean())
    tm = lambda x: jnp.swapaxes(x, 0, 1)  # noqa: E731  batch-major <-> time-major
    ret = tm(lambda_returns(tm(sg(reward)), tm(cont), tm(target_value), config.return_lambda))  # (N, H)
    weight = sg(jnp.cumprod(cont, axis=1) / disc)[:, :-1]

    retnorm = percentile_update(retnorm, ret, config.retnorm_rate, config.retnorm_low, config.retnorm_high)
    scale = percentile_scale(retnorm)
    adv = sg((ret - target_value[:, :-1]) / scale)
    logits = agent.policy_logits(feat[:, :-1])
    logpi = jnp.sum(jax.nn.log_softmax(logits) * actions[:, :-1], -1)
    entropy = dists.categorical_entropy(logits)
    actor = -(weight * (logpi * adv + config.actor_entropy * entropy)).mean()

    value = agent.twohot(value_logits)
    critic = -(weight * (value.log_prob(sg(ret)) + config.slow_critic_reg * value.log_prob(target_value[:, :-1])))
    critic = critic.mean()

    # Replay value loss: the critic on replayed posterior states, lambda-returns over real rewards
    # and terminals, bootstrapped from the imagined return at each state.
    rep_feat = sg(agent.dynamics.features(post))
    rep_value = agent.twohot(agent.critic(rep_feat)[:, :-1])
    boot = ret[:, 0].reshape(batch, length)
    live = (1.0 - data["is_terminal"].astype(jnp.float32)) * disc
    lam = config.return_lambda * (1.0 - data["is_last"].astype(jnp.float32))
    rep_ret = tm(lambda_returns(tm(data["reward"].astype(jnp.float32)), tm(live), tm(sg(boot)), tm(lam)))
    rep_slow = sg(agent.twohot(slow_critic(rep_feat)).mean())[:, :-1]
    repval = -(rep_value.log_prob(rep_ret) + config.slow_critic_reg * rep_value.log_prob(rep_slow)).mean()

    loss = config.actor_scale * actor + config.critic_scale * critic + config.repval_scale * repval
    metrics = {
        "loss_actor": actor, "loss_critic": critic, "loss_repval": repval,
        "policy_entropy": entropy.mean(), "return_scale": scale, "imag_return": ret.mean(),
        "imag_value": value.mean().mean(), "adv_abs": jnp.abs(adv).mean(),
    }
    return loss, (retnorm, metrics)
