"""VTA's abstract level as a model of its own: what a segment holds, and the critic target that uses it.

From any state, the segment ahead runs to the next READ. `segment_targets` reads it off a replayed batch's posterior
boundaries: how many steps until the next READ (Δt), the reward summed over them with the discount folded in as the
lambda-returns fold it, and that discount's product. `mixed_return` is THICK Dreamer's critic target (Gumbsch et al.,
ICLR 2024): psi * lambda-return + (1 - psi) * [segment reward + discount * V(next READ state)].
"""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from dreamer_jax import distributions as dists
from dreamer_jax.distributions import sg
from dreamer_jax.networks import Head


def segment_targets(read: jax.Array, reward: jax.Array, disc: jax.Array) -> dict:
    """The segment ahead of every step t of sequences (B, T): the next READ after t and what lies before it.

    `read` (B, T) is the hard boundary (READ at t starts a segment at t); `reward[t]` and `disc[t]` are the outcome of
    the step into t (as in `returns.lambda_returns`: the continue probability times the discount). With n the first
    READ after t:

        length[t] = n - t,   reward[t] = sum_{j=1}^{n-t} (prod_{i<j} disc[t+i]) reward[t+j],
        disc[t] = prod_{j=1}^{n-t} disc[t+j],   next[t] = n,   valid[t] = such an n exists in the sequence,

    so that reward[t] + disc[t] * V(state n) bootstraps from t to the next READ as the one-step target does from t to
    t + 1. Where `valid` is False the other entries are 0 (length, next) or partial sums, and must be masked.
    """
    chex.assert_equal_shape([read, reward, disc])
    steps = read.shape[1]

    def back(after, inputs):
        """The targets of step t from those of t + 1 and the values at t + 1."""
        length, seg_reward, seg_disc, nxt, valid = after
        read_next, reward_next, disc_next, t_next = inputs
        ends = read_next > 0.5  # the next step starts a new segment: the segment ahead of t is one step long
        out = (jnp.where(ends, 1, length + 1),
               reward_next + disc_next * jnp.where(ends, 0.0, seg_reward),
               disc_next * jnp.where(ends, 1.0, seg_disc),
               jnp.where(ends, t_next, nxt),
               ends | valid)
        return out, out

    batch = read.shape[0]
    last = (jnp.zeros(batch, jnp.int32), jnp.zeros(batch, jnp.float32), jnp.ones(batch, jnp.float32),
            jnp.zeros(batch, jnp.int32), jnp.zeros(batch, bool))
    shifted = [jnp.swapaxes(x[:, 1:], 0, 1).astype(jnp.float32) for x in (read, reward, disc)]
    t_next = jnp.broadcast_to(jnp.arange(1, steps, dtype=jnp.int32)[:, None], (steps - 1, batch))
    _, ahead = jax.lax.scan(back, last, (*shifted, t_next), reverse=True)
    ahead = [jnp.concatenate([jnp.swapaxes(x, 0, 1), end[:, None]], 1) for x, end in zip(ahead, last)]
    return dict(zip(("length", "reward", "disc", "next", "valid"), ahead))


def mixed_return(ret: jax.Array, seg_reward: jax.Array, seg_disc: jax.Array, next_value: jax.Array,
                 psi: float) -> jax.Array:
    """THICK Dreamer's critic target: psi * ret + (1 - psi) * (seg_reward + seg_disc * next_value), elementwise.
    psi = 1 returns `ret` itself (the flat lambda-return), bit for bit."""
    if psi == 1.0:
        return ret
    return psi * ret + (1.0 - psi) * (seg_reward + seg_disc * next_value)


class AbstractModel(nnx.Module):
    """From a VTA state, the segment ahead (to the next READ): its length Δt in 1..max_len, its reward and discount
    (as `segment_targets` sums them), and the summary that ends it, the observation-level state (h, s) and the action
    that the next READ's transition takes; `VTA.jump` turns the summary into the next READ state. Closed: it reads a
    state's features and yields a state, so segments chain without observations. It reads stop-gradient features, so
    it learns beside the world model without changing it."""

    def __init__(self, feature_dim: int, deter: int, stoch: int, classes: int, action_dim: int, max_len: int,
                 bins: int, units: int, layers: int, *, dtype, rngs: nnx.Rngs):
        self.stoch, self.classes, self.bins = stoch, classes, bins
        head = dict(dtype=dtype, rngs=rngs)
        self.length = Head(feature_dim, max_len, units, layers, **head)
        self.reward = Head(feature_dim, bins, units, layers, outscale=0.0, **head)
        self.disc = Head(feature_dim, 1, units, layers, **head)
        self.h_end = Head(feature_dim, deter, units, layers, **head)
        self.s_end = Head(feature_dim, stoch * classes, units, layers, **head)
        self.action = Head(feature_dim, action_dim, units, layers, **head)

    def __call__(self, feat) -> dict:
        """The predicted distributions of the segment ahead of each state (..., F)."""
        s_logits = self.s_end(feat).reshape(feat.shape[:-1] + (self.stoch, self.classes))
        return {"length": dists.categorical(self.length(feat)),
                "reward": dists.TwoHot(logits=self.reward(feat), bins=dists.twohot_bins(self.bins)),
                "disc": dists.bernoulli(self.disc(feat)[..., 0]), "h_end": self.h_end(feat),
                "s_end": dists.categorical(s_logits), "action": dists.categorical(self.action(feat))}

    def loss(self, pred: dict, targets: dict, h_end, s_end, action) -> tuple[jax.Array, dict]:
        """Negative log-likelihood of each segment's targets under the model's predictions `pred` (masked by
        `valid`, and by segments no longer than max_len) and squared error of h_end. (loss, metrics)."""
        max_len = pred["length"].event_shape[-1]
        length = targets["length"]
        mask = (targets["valid"] & (length <= max_len)).astype(jnp.float32)
        terms = {
            "length": -pred["length"].log_prob(jax.nn.one_hot(length - 1, max_len)),
            "reward": -pred["reward"].log_prob(targets["reward"]),
            "disc": -pred["disc"].log_prob(targets["disc"]),
            "h_end": jnp.square(pred["h_end"] - sg(h_end).astype(jnp.float32)).sum(-1),
            "s_end": -pred["s_end"].log_prob(sg(s_end)).sum(-1),
            "action": -pred["action"].log_prob(action),
        }
        count = jnp.maximum(mask.sum(), 1.0)
        means = {name: (mask * value).sum() / count for name, value in terms.items()}
        length_hit = (pred["length"].mode().argmax(-1) + 1 == length).astype(jnp.float32)
        metrics = {f"loss_abstract_{name}": value for name, value in means.items()}
        metrics["abstract_length_accuracy"] = (mask * length_hit).sum() / count
        metrics["abstract_segments"] = mask.sum()
        return sum(means.values()), metrics


def training_targets(read, reward, disc, is_first) -> dict:
    """`segment_targets` of replayed sequences (B, T) and `end`, the index of each segment's last step (the state and
    action the next READ's transition takes); a segment that ends where an episode starts is not valid (its next
    state belongs to another episode)."""
    targets = segment_targets(read, reward, disc)
    starts = jnp.take_along_axis(is_first, targets["next"], axis=1)
    return {**targets, "valid": targets["valid"] & ~starts, "end": jnp.maximum(targets["next"] - 1, 0)}


def next_z_shares(predicted_logits, current, actual, valid) -> tuple[jax.Array, jax.Array]:
    """Over the `valid` states (N,): the share of the next READ's latents (N, L, classes; `actual` one-hot) whose class
    the predicted logits' mode gets right, and the share the state's own latent (`current`) already has: what
    copying it to the next READ scores, the baseline the first share must beat."""
    chex.assert_equal_shape([predicted_logits, current, actual])
    target = actual.argmax(-1)
    weight = valid.astype(jnp.float32)
    share = lambda hit: (weight * hit.astype(jnp.float32).mean(-1)).sum() / jnp.maximum(weight.sum(), 1.0)  # noqa: E731
    return share(predicted_logits.argmax(-1) == target), share(current.argmax(-1) == target)


def at_steps(x, index):
    """x (B, T, ...) at index (B, T): x[b, index[b, t]]."""
    return jnp.take_along_axis(x, index.reshape(index.shape + (1,) * (x.ndim - 2)), axis=1)


def next_read(dynamics, model: AbstractModel, state, key):
    """The READ state that ends each state's segment, by the abstract model's summary (its modes) and the VTA's own
    READ transition; states (N, ...)."""
    pred = model(sg(dynamics.features(state)))
    s_end = pred["s_end"].mode()
    return dynamics.jump(state, pred["h_end"], s_end, pred["action"].mode(), key), pred


def jumpy_rollout(dynamics, model: AbstractModel, start, segments: int, key):
    """`segments` segments ahead of `start` (N, ...) with no observation-level step in between: each segment's
    predicted length (its mode), reward and discount, and the READ state that ends it. Returns (states (N, K, ...),
    lengths (N, K), rewards (N, K), discounts (N, K))."""

    def jump(state, k):
        following, pred = next_read(dynamics, model, state, k)
        length = pred["length"].mode().argmax(-1) + 1
        return following, (following, length, pred["reward"].mean(), jax.nn.sigmoid(pred["disc"].logits))

    _, out = jax.lax.scan(jump, start, jax.random.split(key, segments))
    return jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), out)


@functools.partial(jax.jit, static_argnums=(0, 4))
def jumpy_from_episodes(learner, params, data: dict, key, segments: int) -> dict:
    """Filter episodes (E, T) with the deterministic boundary, then, from the state at each episode's step
    `data["start"]` (E,), roll `segments` segments with the abstract model alone: the posterior's READs (E, T) and
    the predicted READ steps (E, K), start + the cumulative predicted lengths."""
    agent = nnx.merge(learner.graphdef, params)
    observe_key, jump_key = jax.random.split(key)
    episodes = data["action"].shape[0]
    action = jax.nn.one_hot(data["action"], agent.action_dim, dtype=jnp.float32)
    _, post, _ = agent.dynamics.observe(agent.dynamics.initial(episodes), agent.encoder(data["image"]), action,
                                        data["is_first"], observe_key, reward=data["reward"], mode=True)
    start = jax.tree.map(lambda x: x[jnp.arange(episodes), data["start"]], post)
    _, lengths, _, _ = jumpy_rollout(agent.dynamics, agent.abstract, start, segments, jump_key)
    return {"read": post.read > 0.5, "ends": data["start"][:, None] + jnp.cumsum(lengths, axis=1)}


def next_reads(read: np.ndarray, start: np.ndarray, count: int) -> np.ndarray:
    """The first `count` READ steps after each episode's `start` (E, count), -1 where the episode has no more."""
    out = np.full((len(read), count), -1)
    for e, (row, s) in enumerate(zip(read, start)):
        found = np.flatnonzero(row[s + 1:])[:count] + s + 1
        out[e, :len(found)] = found
    return out


def read_errors(predicted: np.ndarray, actual: np.ndarray) -> list[float | None]:
    """Mean absolute error, in steps, of the k-th predicted READ (E, K) against the k-th actual one (-1: none), over
    the episodes that have it; None for a k that no episode reaches."""
    defined = actual >= 0
    error = np.where(defined, np.abs(predicted - actual), 0)
    return [float(error[:, k].sum() / defined[:, k].sum()) if defined[:, k].any() else None
            for k in range(actual.shape[1])]
