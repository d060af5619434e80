"""The DreamerV3 agent: world model, actor and critic as one NNX module, and their losses.

The losses read as the algorithm does: the world-model loss on a replayed batch, the imagination
loss (actor and critic on trajectories imagined from every posterior state) and the replay loss
(the critic on the replayed states themselves). They are pure functions of the merged module, a
batch and a key; `dreamer_jax.train` differentiates their sum with one optimiser. The dynamics
(RSSM or VTA) is used only through its interface, so nothing here branches on which one it is.
"""

from __future__ import annotations

from typing import NamedTuple

import distrax
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from dreamer_jax import distributions as dists, hierarchy
from dreamer_jax.config import Config
from dreamer_jax.distributions import sg
from dreamer_jax.dynamics import swap_time
from dreamer_jax.networks import Decoder, Encoder, Head
from dreamer_jax.returns import lambda_returns, percentile_scale, percentile_update, PercentileState
from dreamer_jax.rssm import RSSM
from dreamer_jax.vta import VTA


def compute_dtype(config: Config):
    return jnp.bfloat16 if config.precision == "bf16" else jnp.float32


def make_dynamics(config: Config, action_dim: int, embed_dim: int, rngs: nnx.Rngs):
    """The dynamics module the configuration names: RSSM or VTA."""
    common = dict(deter=config.deter, hidden=config.hidden, stoch=config.stoch, classes=config.classes,
                  blocks=config.blocks, action_dim=action_dim, embed_dim=embed_dim, unimix=config.unimix,
                  free_nats=config.free_nats, dyn_scale=config.dyn_scale, rep_scale=config.rep_scale,
                  dtype=compute_dtype(config), rngs=rngs, unroll=config.scan_unroll,
                  logit_scale=config.latent_logit_scale)
    if config.dynamics == "vta":
        return VTA(core=config.core, **common, **vta_options(config))
    return RSSM(core=config.core, initial=config.initial, **common)


def vta_options(config: Config) -> dict:
    """The VTA's own arguments from the configuration's `vta_` fields."""
    return dict(max_seg_len=config.vta_max_seg_len, max_seg_num=config.vta_max_seg_num,
                logit_clip=config.vta_boundary_logit_clip, lookahead=config.vta_lookahead,
                reward_input=config.vta_boundary_reward_input, rate=config.vta_boundary_rate,
                rate_scale=config.vta_boundary_scale, rate_mode=config.vta_rate_mode,
                boundary_dyn_scale=config.vta_boundary_dyn_scale, boundary_rep_scale=config.vta_boundary_rep_scale,
                force_scale=config.vta_boundary_force_scale, force_final=config.vta_force_final,
                temp=config.vta_boundary_temp, temp_final=config.vta_temp_final,
                schedule_steps=config.vta_schedule_steps)


class Agent(nnx.Module):
    """Encoder, dynamics, decoder, reward and continue heads (the world model), actor and critic."""

    def __init__(self, config: Config, action_dim: int, rngs: nnx.Rngs):
        dtype = compute_dtype(config)
        self.action_dim = action_dim
        self.encoder = Encoder(config.enc_depth or config.depth, config.size, dtype=dtype, rngs=rngs,
                               kernel=config.enc_kernel)
        self.dynamics = make_dynamics(config, action_dim, self.encoder.out_dim, rngs)
        deter_dim, stoch_dim = self.dynamics.decoder_dims
        self.decoder = Decoder(deter_dim, stoch_dim, config.depth, config.units, config.blocks, config.size,
                               dtype=dtype, rngs=rngs)
        feat = self.dynamics.feature_dim
        head = dict(dtype=dtype, rngs=rngs)
        self.reward = Head(feat, config.bins, config.units, config.head_layers, outscale=0.0, **head)
        self.cont = Head(feat, 1, config.units, config.head_layers, **head)
        self.actor = Head(feat, action_dim, config.units, config.mlp_layers, outscale=config.actor_outscale, **head)
        self.critic = Head(feat, config.bins, config.units, config.mlp_layers, outscale=0.0, **head)
        self.num_bins, self.actor_unimix = config.bins, config.actor_unimix
        # VTA's abstract model, built last (the other modules' initial parameters do not depend on it), and only
        # when the critic mixes in its return.
        self.abstract = hierarchy.AbstractModel(
            feat, config.deter, config.stoch, config.classes, action_dim, config.vta_max_seg_len, config.bins,
            config.units, config.mlp_layers, **head) if config.vta_value_mix < 1 else None

    def twohot(self, logits) -> dists.TwoHot:
        """A two-hot distribution over the configured bins (reward head, critic)."""
        return dists.TwoHot(logits=logits, bins=dists.twohot_bins(self.num_bins))

    def policy_logits(self, feat):
        """Normalised log-probabilities of the categorical policy (a uniform mixture only if actor_unimix > 0)."""
        return dists.unimix_logits(self.actor(feat), self.actor_unimix)

    def policy(self, feat) -> distrax.OneHotCategorical:
        """The categorical policy over one-hot float32 actions."""
        return policy_from_logits(self.actor(feat), self.actor_unimix)

    def sample_action(self, feat, key):
        """One-hot action sampled from the policy (no gradient: REINFORCE uses log-probabilities)."""
        return self.policy(feat).sample(seed=key)

    def value(self, critic: Head, feat):
        """The expected return a critic (this one or the slow one) predicts from features."""
        return self.twohot(critic(feat)).mean()


def policy_from_logits(logits, unimix: float) -> distrax.OneHotCategorical:
    """The categorical policy over one-hot float32 actions from the actor's raw outputs."""
    return distrax.OneHotCategorical(logits=dists.unimix_logits(logits, unimix), dtype=jnp.float32)


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
    reward_dist = agent.twohot(agent.reward(feat))
    rew = -reward_dist.log_prob(data["reward"])
    cont = -dists.bernoulli(agent.cont(feat)[..., 0]).log_prob(continue_target(data["is_terminal"], config))
    dyn_loss, metrics = agent.dynamics.loss(post, prior)
    terms = {"rec": (rec, config.rec_scale), "rew": (rew, config.rew_scale), "con": (cont, config.con_scale)}
    loss = dyn_loss + sum(scale * value.mean() for value, scale in terms.values())
    metrics.update({f"loss_{k}": value.mean() for k, (value, _) in terms.items()})
    metrics.update(reward_head_metrics(sg(reward_dist.mean()), data["reward"]))
    if agent.abstract is not None:
        abstract_loss, abstract_metrics = segment_loss(agent, post, action, data, config, jax.random.fold_in(key, 1))
        loss = loss + abstract_loss
        metrics.update(abstract_metrics)
    return loss, WorldModelOut(post, carry, metrics)


def reward_head_metrics(predicted, reward) -> dict:
    """What the reward head predicts where reward came and elsewhere (B, T): before the first earned reward it must
    say where reward is for the critic to point the actor there. The prediction at reward steps is a sum with its
    count (`reward_events`), so a log window averages it over the events rather than over batches."""
    event = (reward > 0).astype(jnp.float32)
    other = 1.0 - event
    return {"reward_events": event.sum(), "rew_pred_event_sum": (event * predicted).sum(),
            "rew_pred_other": (other * predicted).sum() / jnp.maximum(other.sum(), 1.0)}


def segment_loss(agent: Agent, post, action, data: dict, config: Config, key):
    """The abstract model on the posterior segments of a replayed batch: every state's segment ahead, read off the
    posterior boundaries, with the rewards and discounts the critic's returns use. One prediction per state serves
    the loss and the jump to the next READ, whose match with the posterior's is `abstract_next_z_match`: the share
    of the next READ's latents whose class (the prior's mode after the predicted summary) is the posterior's, beside
    `abstract_next_z_carry`, the share the state's own latent already matches (the copy baseline)."""
    disc = continue_target(data["is_terminal"], config)
    targets = hierarchy.training_targets(sg(post.read), data["reward"].astype(jnp.float32), disc, data["is_first"])
    batch, steps = targets["valid"].shape
    flat = lambda x: x.reshape((batch * steps,) + x.shape[2:])  # noqa: E731
    following, pred = hierarchy.next_read(agent.dynamics, agent.abstract, jax.tree.map(lambda x: sg(flat(x)), post),
                                          key)
    end = targets["end"]
    loss, metrics = agent.abstract.loss(pred, jax.tree.map(flat, targets), flat(hierarchy.at_steps(post.h, end)),
                                        flat(hierarchy.at_steps(post.s, end)), flat(hierarchy.at_steps(action, end)))
    match, carry = hierarchy.next_z_shares(following.z_logits, flat(post.z),
                                           flat(hierarchy.at_steps(post.z, targets["next"])), flat(targets["valid"]))
    metrics["abstract_next_z_match"], metrics["abstract_next_z_carry"] = sg(match), sg(carry)
    return loss, metrics


def continue_target(is_terminal, config: Config):
    """(1 - is_terminal) * (1 - 1 / H): the continue probability with the discount folded in."""
    return (1.0 - is_terminal.astype(jnp.float32)) * (1.0 - 1.0 / config.discount_horizon)


def last_steps(tree, config: Config):
    """The last `imag_last` steps of every replayed sequence (B, T, ...) -> (B, K, ...); all T when it is 0."""
    k = config.imag_last or config.batch_length
    return jax.tree.map(lambda x: x[:, -k:], tree)


def imagination_loss(agent: Agent, slow_critic: Head, config: Config, post, is_terminal,
                     retnorm: PercentileState, key):
    """Imagine `horizon` steps from the posterior states (the last `imag_last` of each sequence, or all); REINFORCE
    actor and two-hot critic on lambda-returns.

    Returns (loss, (return-normaliser state, imagined returns (N, H) for the replay loss, metrics)).
    Returns and the advantage baseline read the online critic (or the slow one with `slow_target`);
    the critic is also regularised towards the slow critic's prediction.
    """
    post, is_terminal = last_steps((post, is_terminal), config)
    start = jax.tree.map(lambda x: sg(x.reshape((-1,) + x.shape[2:])), post)
    states, actions = agent.dynamics.imagine(start, agent.sample_action, config.horizon, key)
    states, actions = sg(states), sg(actions)
    feat = agent.dynamics.features(states)  # (N, H + 1, F)
    disc = 1.0 - 1.0 / config.discount_horizon
    reward = sg(agent.twohot(agent.reward(feat)).mean())
    cont = jax.nn.sigmoid(agent.cont(feat)[..., 0])
    cont = sg(cont.at[:, 0].set(continue_target(is_terminal.reshape(-1), config)))
    critic_logits = agent.critic(feat)
    slow_value = sg(agent.value(slow_critic, feat))
    bootstrap = slow_critic if config.slow_target else agent.critic  # the one critic every target reads
    target_value = slow_value if config.slow_target else sg(agent.twohot(critic_logits).mean())  # bootstrap's values
    ret = batch_major(lambda_returns, reward, cont, target_value, config.return_lambda)  # (N, H)
    weight = sg(jnp.cumprod(cont, axis=1) / disc)[:, :-1]
    critic_target, abstract_metrics = ret, {}
    if agent.abstract is not None:
        critic_target, abstract_metrics = mixed_target(agent, bootstrap, config, states, ret, key)

    retnorm = percentile_update(retnorm, ret, config.retnorm_rate, config.retnorm_low, config.retnorm_high)
    scale = percentile_scale(retnorm)
    adv = sg((ret - target_value[:, :-1]) / scale)
    policy = agent.policy(feat[:, :-1])
    logpi = policy.log_prob(actions[:, :-1])
    entropy = policy.entropy()
    actor = -(weight * (logpi * adv + config.actor_entropy * entropy)).mean()
    drive = actor_drive(agent, feat[:, :-1], actions[:, :-1], adv, weight, config.actor_entropy)

    value = agent.twohot(critic_logits[:, :-1])
    critic = -(weight * (value.log_prob(sg(critic_target))
                         + config.slow_critic_reg * value.log_prob(slow_value[:, :-1])))
    loss = config.actor_scale * actor + config.critic_scale * critic.mean()
    metrics = {
        "loss_actor": actor, "loss_critic": critic.mean(), "policy_entropy": entropy.mean(), "return_scale": scale,
        # on the replayed posterior states imagination starts from: the states the agent acts in, where
        # policy_entropy averages over the dream too
        "policy_entropy_start": entropy[:, 0].mean(),
        "imag_return": ret.mean(), "imag_value": value.mean().mean(), "imag_reward": reward.mean(),
        "adv_abs": jnp.abs(adv).mean(), **drive, **abstract_metrics,
    }
    return loss, (retnorm, ret, metrics)


def actor_drive(agent: Agent, feat, actions, adv, weight, eta: float) -> dict:
    """The norms of the actor loss's two gradients with respect to the actor's parameters: the policy gradient
    (`actor_grad_adv`, from the advantages) and the entropy bonus (`actor_grad_ent`). Whichever is larger moves
    the actor; before any reward the advantages are the critic's and reward head's errors."""
    graphdef, params = nnx.split(agent.actor)

    def terms(p):
        policy = policy_from_logits(nnx.merge(graphdef, p)(feat), agent.actor_unimix)
        return -(weight * policy.log_prob(actions) * adv).mean(), -(weight * eta * policy.entropy()).mean()

    grad_adv, grad_ent = jax.jacrev(terms)(sg(params))
    return {"actor_grad_adv": optax.tree.norm(grad_adv), "actor_grad_ent": optax.tree.norm(grad_ent)}


def mixed_target(agent: Agent, critic: Head, config: Config, states, ret, key):
    """The critic's target with the hierarchy: psi * ret + (1 - psi) * [segment reward + segment discount *
    V(next READ state)], the abstract model's segment ahead of every imagined state (N, H), valued by `critic`, the
    one that bootstraps the lambda-returns `ret`. (target, metrics)."""
    n, steps = ret.shape
    flat_states = jax.tree.map(lambda x: x[:, :-1].reshape((n * steps,) + x.shape[2:]), states)
    following, pred = hierarchy.next_read(agent.dynamics, agent.abstract, flat_states, jax.random.fold_in(key, 1))
    next_value = agent.value(critic, agent.dynamics.features(following)).reshape(n, steps)
    seg_reward = pred["reward"].mean().reshape(n, steps)
    seg_disc = jax.nn.sigmoid(pred["disc"].logits).reshape(n, steps)
    target = hierarchy.mixed_return(ret, seg_reward, seg_disc, next_value, config.vta_value_mix)
    return sg(target), {"imag_abstract_return": (seg_reward + seg_disc * next_value).mean()}


def replay_loss(agent: Agent, slow_critic: Head, config: Config, post, data: dict, imagined_return):
    """The critic on the replayed posterior states (those imagination started from): lambda-returns over the real
    rewards and terminals, bootstrapped from the imagined return at each state, weighted by 1 - is_last.

    With `repval_grad` (official) the loss trains the world model through the features too.
    """
    post, data = last_steps((post, data), config)
    feat = agent.dynamics.features(post)
    feat = feat if config.repval_grad else sg(feat)
    batch, length = data["reward"].shape
    boot = sg(imagined_return[:, 0].reshape(batch, length))
    live = continue_target(data["is_terminal"], config)
    lam = config.return_lambda * (1.0 - data["is_last"].astype(jnp.float32))
    ret = batch_major(lambda_returns, data["reward"].astype(jnp.float32), live, boot, lam)  # (B, T - 1)
    value = agent.twohot(agent.critic(feat)[:, :-1])
    slow_value = sg(agent.value(slow_critic, feat))[:, :-1]
    weight = 1.0 - data["is_last"][:, :-1].astype(jnp.float32)
    repval = -(weight * (value.log_prob(ret) + config.slow_critic_reg * value.log_prob(slow_value))).mean()
    error = sg(value.mean()) - ret
    count = jnp.maximum(weight.sum(), 1.0)
    return config.repval_scale * repval, {"loss_repval": repval, "repval_bias": (weight * error).sum() / count,
                                          "repval_error": (weight * jnp.abs(error)).sum() / count}


def batch_major(fn, *args):
    """`fn` on time-major copies of batch-major (B, T, ...) arguments (scalars pass through), batch-major out."""
    return swap_time(fn(*swap_time(args)))
