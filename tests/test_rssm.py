"""The RSSM (dreamer_jax/rssm.py) against plain loops, closed forms and the spec's invariants.

One small RSSM per module; every function is jitted once over (params, inputs) and reused.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from dreamer_jax import config as cfg
from dreamer_jax.agent import make_dynamics
from dreamer_jax.distributions import unimix_logits
from dreamer_jax.dynamics import Carry
from dreamer_jax.rssm import RSSM, RSSMState

DETER, HIDDEN, STOCH, CLASSES, BLOCKS, ACT, EMBED = 16, 8, 3, 4, 4, 5, 7
UNIMIX, FREE_NATS, DYN_SCALE, REP_SCALE = 0.01, 1.0, 1.0, 0.1
B, T, H = 2, 6, 4


def _build(dtype=jnp.float32, **overrides):
    kwargs = dict(deter=DETER, hidden=HIDDEN, stoch=STOCH, classes=CLASSES, blocks=BLOCKS, action_dim=ACT,
                  embed_dim=EMBED, unimix=UNIMIX, free_nats=FREE_NATS, dyn_scale=DYN_SCALE, rep_scale=REP_SCALE,
                  dtype=dtype, rngs=nnx.Rngs(0))
    kwargs.update(overrides)
    return RSSM(**kwargs)


class Fns:
    """Jitted pure functions of (params, ...) over one graphdef."""

    def __init__(self, model):
        self.graphdef, self.params = nnx.split(model)
        m = lambda p: nnx.merge(self.graphdef, p)  # noqa: E731
        self.model = m
        self.observe = jax.jit(lambda p, c, e, a, f, k: m(p).observe(c, e, a, f, k))
        self.obs_step = jax.jit(lambda p, c, e, a, f, k: m(p).obs_step(c, e, a, f, k))
        self.img_step = jax.jit(lambda p, s, a, k: m(p).img_step(s, a, k))
        self.core = jax.jit(lambda p, h, z, a: m(p).core(h, z, a))

    def with_params(self, edit):
        """Params after `edit(module)` mutates a merged copy (same shapes, so no recompiles)."""
        model = self.model(jax.tree.map(jnp.copy, self.params))
        edit(model)
        return nnx.split(model)[1]


@pytest.fixture(scope="module")
def fns():
    return Fns(_build())


def _random_carry(seed, batch=B):
    rng = np.random.default_rng(seed)
    deter = rng.normal(size=(batch, DETER)).astype(np.float32)
    idx = rng.integers(0, CLASSES, size=(batch, STOCH))
    stoch = np.eye(CLASSES, dtype=np.float32)[idx]
    logits = rng.normal(size=(batch, STOCH, CLASSES)).astype(np.float32)
    action = np.eye(ACT, dtype=np.float32)[rng.integers(0, ACT, size=batch)]
    return Carry(RSSMState(jnp.asarray(deter), jnp.asarray(stoch), jnp.asarray(logits)), jnp.asarray(action))


def _inputs(seed=1, first_at=None):
    rng = np.random.default_rng(seed)
    embed = jnp.asarray(rng.normal(size=(B, T, EMBED)).astype(np.float32))
    action = jnp.asarray(np.eye(ACT, dtype=np.float32)[rng.integers(0, ACT, size=(B, T))])
    is_first = np.zeros((B, T), bool)
    if first_at is not None:
        is_first[:, first_at] = True
    return embed, action, jnp.asarray(is_first)


@pytest.fixture(scope="module")
def observed(fns):
    """observe() over a random (B, T) sequence from a random carry, first at step 0 of env 1 only."""
    embed, action, is_first = _inputs()
    is_first = is_first.at[1, 0].set(True)
    carry = _random_carry(5)
    key = jax.random.PRNGKey(42)
    out = fns.observe(fns.params, carry, embed, action, is_first, key)
    return (carry, embed, action, is_first, key), out


def test_observe_equals_obs_step_loop(fns, observed):
    (carry, embed, action, is_first, key), (last, post, prior) = observed
    keys = jax.random.split(key, T)
    c = carry
    for t in range(T):
        c, (p, pr) = fns.obs_step(fns.params, c, embed[:, t], action[:, t], is_first[:, t], keys[t])
        np.testing.assert_allclose(post.deter[:, t], p.deter, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(post.logits[:, t], p.logits, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(prior[:, t], pr, rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(post.stoch[:, t], p.stoch)
    np.testing.assert_allclose(last.state.deter, c.state.deter, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(last.state.stoch, c.state.stoch)
    # The returned carry holds the last posterior and the last action taken (the action after step T-1).
    np.testing.assert_array_equal(last.state.stoch, post.stoch[:, -1])
    np.testing.assert_array_equal(last.action, action[:, -1])
    assert post.deter.shape == (B, T, DETER) and post.stoch.shape == (B, T, STOCH, CLASSES)
    assert prior.shape == (B, T, STOCH, CLASSES)


def test_is_first_resets_whatever_the_carry(fns):
    t0 = 2
    embed, action, is_first = _inputs(seed=3, first_at=t0)
    key = jax.random.PRNGKey(7)
    _, post_a, prior_a = fns.observe(fns.params, _random_carry(10), embed, action, is_first, key)
    _, post_b, prior_b = fns.observe(fns.params, _random_carry(11), embed, action, is_first, key)
    # Before the reset the two carries give different states ...
    assert not np.allclose(post_a.deter[:, :t0], post_b.deter[:, :t0], atol=1e-3)
    # ... from the reset on they are identical, whatever came before.
    for x, y in [(post_a.deter, post_b.deter), (post_a.logits, post_b.logits), (prior_a, prior_b),
                 (post_a.stoch, post_b.stoch)]:
        np.testing.assert_array_equal(x[:, t0:], y[:, t0:])
    # The step at the reset equals a step from the initial (zero) carry without a reset, with the same key.
    init = fns.model(fns.params).initial(B)
    _, (p_z, prior_z) = fns.obs_step(fns.params, init, embed[:, t0], action[:, t0], jnp.zeros(B, bool),
                                     jax.random.split(key, T)[t0])
    np.testing.assert_allclose(post_a.deter[:, t0], p_z.deter, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(post_a.logits[:, t0], p_z.logits, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(prior_a[:, t0], prior_z, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(post_a.stoch[:, t0], p_z.stoch)


def test_zero_carry_equals_reset(fns):
    """initial(batch) is the zero state and zero action, so is_first on it changes nothing."""
    model = fns.model(fns.params)
    init = model.initial(B)
    for leaf in jax.tree.leaves(init):
        assert leaf.dtype == jnp.float32 and not np.any(np.asarray(leaf))
    embed, action, _ = _inputs(seed=4)
    key = jax.random.PRNGKey(1)
    on = jnp.ones((B, T), bool)
    off = on.at[:, 0].set(False)
    _, p_on, _ = fns.observe(fns.params, init, embed, action, on.at[:, 1:].set(False), key)
    _, p_off, _ = fns.observe(fns.params, init, embed, action, off.at[:, 1:].set(False), key)
    np.testing.assert_array_equal(p_on.deter, p_off.deter)


def _check_unimix(logits):
    logits = np.asarray(logits, np.float64)
    probs = np.exp(logits)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    assert probs.min() >= UNIMIX / CLASSES - 1e-6
    return probs


def test_logits_are_normalised_unimix(fns, observed):
    _, (_, post, prior) = observed
    _check_unimix(post.logits)
    _check_unimix(prior)
    assert post.logits.dtype == jnp.float32 and prior.dtype == jnp.float32


def test_logit_scale_multiplies_each_latent_heads_output_before_the_unimix(fns):
    """--latent_logit_scale s: prior and posterior logits are unimix(s * head output); s = 1 is the official head."""
    base, sharp = fns.model(fns.params), _build(logit_scale=3.0)  # the same initial parameters
    rng = np.random.default_rng(3)
    deter = jnp.asarray(rng.normal(size=(B, DETER)).astype(np.float32))
    embed = jnp.asarray(rng.normal(size=(B, EMBED)).astype(np.float32))
    raw_prior = base.prior_out(base.prior_mlp(deter)).reshape(B, STOCH, CLASSES)
    raw_post = base.post_out(base.post_mlp(jnp.concatenate([deter, embed], -1))).reshape(B, STOCH, CLASSES)
    for logits, raw in ((base.prior_logits(deter), raw_prior), (base.post_logits(deter, embed), raw_post)):
        np.testing.assert_allclose(logits, unimix_logits(raw, UNIMIX), rtol=1e-5, atol=1e-6)
    for logits, raw in ((sharp.prior_logits(deter), raw_prior), (sharp.post_logits(deter, embed), raw_post)):
        np.testing.assert_allclose(logits, unimix_logits(3.0 * raw, UNIMIX), rtol=1e-5, atol=1e-6)
    # The configuration reaches both dynamics.
    for dynamics in ("rssm", "vta"):
        config = cfg.make("debug", dynamics=dynamics, latent_logit_scale=3.0)
        assert nnx.eval_shape(lambda c=config: make_dynamics(c, ACT, EMBED, nnx.Rngs(0))).logit_scale == 3.0


def test_unimix_floor_is_reached_with_saturated_logits(fns, observed):
    """Blow up the output layers so softmax alone would put ~0 on most classes: the floor unimix/C holds."""

    def saturate(model):
        for out in (model.prior_out, model.post_out):
            out.kernel[...] = out.kernel[...] * 1e4

    params = fns.with_params(saturate)
    (carry, embed, action, is_first, key), _ = observed
    _, post, prior = fns.observe(params, carry, embed, action, is_first, key)
    for logits in (post.logits, prior):
        probs = _check_unimix(logits)
        # The smallest probability sits on the floor itself, and the largest at 1 - unimix + unimix/C.
        np.testing.assert_allclose(probs.min(), UNIMIX / CLASSES, rtol=1e-4)
        np.testing.assert_allclose(probs.max(), 1 - UNIMIX + UNIMIX / CLASSES, rtol=1e-4)


def _check_onehot(stoch):
    stoch = np.asarray(stoch)
    assert np.all((stoch == 0.0) | (stoch == 1.0))
    np.testing.assert_array_equal(stoch.sum(-1), 1.0)


def test_stoch_samples_are_exactly_onehot(fns, observed):
    _, (last, post, _) = observed
    _check_onehot(post.stoch)
    _check_onehot(last.state.stoch)
    state = jax.tree.map(lambda x: x[:, -1], post)
    nxt = fns.img_step(fns.params, state, jnp.eye(ACT)[jnp.array([0, 3])], jax.random.PRNGKey(3))
    _check_onehot(nxt.stoch)


def test_sample_follows_posterior_logits(fns):
    """Over many samples of one step, class frequencies match exp(post logits) (the sample uses the posterior)."""
    n = 4000
    carry = _random_carry(20, batch=n)
    carry = jax.tree.map(lambda x: jnp.broadcast_to(x[:1], x.shape), carry)  # the same state n times
    embed = jnp.broadcast_to(jnp.linspace(-1, 1, EMBED), (n, EMBED))
    action = jnp.zeros((n, ACT))
    step = jax.jit(lambda p, c, k: fns.model(p).obs_step(c, embed, action, jnp.zeros(n, bool), k))
    _, (post, _) = step(fns.params, carry, jax.random.PRNGKey(0))
    freq = np.asarray(post.stoch).mean(0)
    probs = np.exp(np.asarray(post.logits[0]))
    # Binomial standard error <= 0.5 / sqrt(n) = 0.0079; allow 5 of them.
    np.testing.assert_allclose(freq, probs, atol=0.04)


# --- the block GRU -----------------------------------------------------------


def _core_inputs(seed=0, batch=3):
    rng = np.random.default_rng(seed)
    h = jnp.asarray(rng.normal(size=(batch, DETER)).astype(np.float32))
    z = jnp.asarray(np.eye(CLASSES, dtype=np.float32)[rng.integers(0, CLASSES, size=(batch, STOCH))])
    a = jnp.asarray(np.eye(ACT, dtype=np.float32)[rng.integers(0, ACT, size=batch)])
    return h, z, a


def _core_by_hand(model, h, z, a):
    """The spec's block GRU written out from the submodules, in float64 where it is our own arithmetic."""
    a = a / np.maximum(1.0, np.abs(a))
    cell = model.cell
    in_stoch, in_action = cell.in_inputs
    x = jnp.concatenate([cell.in_deter(h), in_stoch(z.reshape(z.shape[0], -1)), in_action(a)], -1)
    x = np.asarray(x)
    group = DETER // BLOCKS
    h_groups = np.asarray(h).reshape(-1, BLOCKS, group)
    per_group = np.concatenate([np.repeat(x[:, None, :], BLOCKS, 1), h_groups], -1)  # (batch, G, 3*hidden + g)
    kernel, bias = np.asarray(cell.hidden_block.kernel[...]), np.asarray(cell.hidden_block.bias[...])
    y = np.einsum("bgi,gio->bgo", per_group, kernel) + bias
    y = jax.nn.silu(cell.hidden_norm(jnp.asarray(y.reshape(-1, DETER), jnp.float32)))
    y = np.asarray(y, np.float64).reshape(-1, BLOCKS, group)
    gk, gb = np.asarray(cell.gates.kernel[...], np.float64), np.asarray(cell.gates.bias[...], np.float64)
    gates = np.einsum("bgi,gio->bgo", y, gk) + gb
    r, c, u = gates[..., :group], gates[..., group:2 * group], gates[..., 2 * group:]
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    new = sig(u - 1) * np.tanh(sig(r) * c) + (1 - sig(u - 1)) * h_groups
    return new.reshape(-1, DETER)


def test_core_matches_gru_formula(fns):
    h, z, a = _core_inputs()
    out = fns.core(fns.params, h, z, a)
    assert out.shape == (3, DETER) and out.dtype == jnp.float32
    expect = _core_by_hand(fns.model(fns.params), h, z, a)
    np.testing.assert_allclose(out, expect, rtol=1e-4, atol=1e-5)


def test_core_closed_update_gate_keeps_h_exactly(fns):
    """u -> -inf makes sig(u - 1) exactly 0, so h' == h bit for bit; u -> +inf makes h' = tanh(.) in (-1, 1)."""
    group = DETER // BLOCKS
    h, z, a = _core_inputs(seed=1)
    h = h * 5.0  # far outside tanh's range, so "kept" and "replaced" cannot be confused

    def set_u(value):
        def edit(model):
            model.cell.gates.bias[...] = model.cell.gates.bias[...].at[:, 2 * group:].set(value)
        return edit

    closed = fns.core(fns.with_params(set_u(-1e4)), h, z, a)
    np.testing.assert_array_equal(closed, h)
    opened = np.asarray(fns.core(fns.with_params(set_u(1e4)), h, z, a))
    assert np.all(np.abs(opened) < 1.0)


def test_core_divides_actions_by_max_one_abs(fns):
    h, z, a = _core_inputs(seed=2)
    base = fns.core(fns.params, h, z, a)
    np.testing.assert_array_equal(fns.core(fns.params, h, z, 4.0 * a), base)  # 4 / max(1, 4) == 1 exactly
    half = fns.core(fns.params, h, z, 0.5 * a)  # |a| < 1 passes unchanged (the RMSNorm after it mutes the scale)
    np.testing.assert_allclose(half, _core_by_hand(fns.model(fns.params), h, z, 0.5 * a), rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def fns2023():
    """The 2023 cell (LayerNorm GRU) with a learned initial state, its initial weights made non-zero."""
    model = _build(core="gru2023", initial="learned")
    model.init_deter[...] = jax.random.normal(jax.random.PRNGKey(5), (DETER,))
    return Fns(model)


def test_gru2023_core_matches_formula(fns2023):
    h, z, a = _core_inputs(seed=3)
    a = 2.0 * a  # divided back to one-hot by max(1, |a|)
    out = np.asarray(fns2023.core(fns2023.params, h, z, a))
    cell = fns2023.model(fns2023.params).cell
    x = cell.gru_in(jnp.concatenate([z.reshape(z.shape[0], -1), a / 2.0], -1))
    pre = np.asarray(jnp.concatenate([x, h], -1), np.float64) @ np.asarray(cell.gru.kernel[...], np.float64)
    scale, bias = np.asarray(cell.gru_norm.scale[...], np.float64), np.asarray(cell.gru_norm.bias[...], np.float64)
    eps = cell.gru_norm.epsilon
    gates = (pre - pre.mean(-1, keepdims=True)) / np.sqrt(pre.var(-1, keepdims=True) + eps) * scale + bias
    r, c, u = gates[:, :DETER], gates[:, DETER:2 * DETER], gates[:, 2 * DETER:]
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    expect = sig(u - 1) * np.tanh(sig(r) * c) + (1 - sig(u - 1)) * np.asarray(h, np.float64)
    assert out.shape == (3, DETER) and out.dtype == np.float32
    np.testing.assert_allclose(out, expect, rtol=1e-4, atol=1e-5)


def test_learned_initial_state_and_reset(fns2023):
    model = fns2023.model(fns2023.params)
    init = model.initial(B)
    h0 = np.tanh(np.asarray(model.init_deter[...], np.float64))
    np.testing.assert_allclose(init.state.deter, np.broadcast_to(h0, (B, DETER)), rtol=1e-6, atol=1e-7)
    logits = np.asarray(model.prior_logits(init.state.deter))
    np.testing.assert_allclose(init.state.logits, logits, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(init.state.stoch, np.eye(CLASSES, dtype=np.float32)[logits.argmax(-1)])
    assert not np.any(np.asarray(init.action))
    # is_first replaces any carry by that learned state (and a zero previous action).
    embed, action, _ = _inputs(seed=6)
    key = jax.random.PRNGKey(4)
    first, not_first = jnp.ones(B, bool), jnp.zeros(B, bool)
    outs = [fns2023.obs_step(fns2023.params, c, embed[:, 0], action[:, 0], f, key)
            for c, f in [(_random_carry(1), first), (_random_carry(2), first), (init, not_first)]]
    for other in outs[1:]:
        for x, y in zip(jax.tree.leaves(outs[0]), jax.tree.leaves(other)):
            np.testing.assert_array_equal(x, y)
    no_reset = fns2023.obs_step(fns2023.params, _random_carry(1), embed[:, 0], action[:, 0], not_first, key)
    assert not np.allclose(no_reset[0].state.deter, outs[0][0].state.deter, atol=1e-3)
    # The learned initial state is trained through the reset steps.
    grad = jax.jit(jax.grad(lambda p: fns2023.model(p).obs_step(
        _random_carry(1), embed[:, 0], action[:, 0], first, key)[1][0].deter.sum()))(fns2023.params)
    assert np.any(np.asarray(grad["init_deter"][...]) != 0.0)


def test_deter_must_divide_by_blocks():
    with pytest.raises(ValueError, match="deter"):
        _build(deter=18, blocks=4)


# --- imagination -------------------------------------------------------------


def _policy_first_action(feat, key):
    del key
    return jax.nn.one_hot(jnp.zeros(feat.shape[0], jnp.int32), ACT, dtype=jnp.float32)


def _policy_from_features(feat, key):
    """Deterministic but state dependent: checks actions[t] is the action taken at states[t]."""
    del key
    return jax.nn.one_hot(jnp.argmax(feat[:, :ACT], -1), ACT, dtype=jnp.float32)


@functools.lru_cache(maxsize=None)
def _imagine_fn(graphdef, policy):
    return jax.jit(lambda p, s, k: nnx.merge(graphdef, p).imagine(s, policy, H, k))


@pytest.mark.parametrize("policy", [_policy_first_action, _policy_from_features], ids=["action0", "feat"])
def test_imagine_equals_img_step_loop(fns, observed, policy):
    _, (_, post, _) = observed
    start = jax.tree.map(lambda x: x[:, 3], post)
    key = jax.random.PRNGKey(9)
    states, actions = _imagine_fn(fns.graphdef, policy)(fns.params, start, key)
    assert states.deter.shape == (B, H + 1, DETER) and states.stoch.shape == (B, H + 1, STOCH, CLASSES)
    assert states.logits.shape == (B, H + 1, STOCH, CLASSES) and actions.shape == (B, H + 1, ACT)
    for x, y in zip(states, start):
        np.testing.assert_array_equal(x[:, 0], y)  # the start state first, bit-identical
    _check_onehot(actions)
    _check_onehot(states.stoch)
    model = fns.model(fns.params)
    keys = jax.random.split(key, H + 1)
    state = start
    for t in range(H):
        act_key, img_key = jax.random.split(keys[t])
        action = policy(model.features(state), act_key)
        np.testing.assert_array_equal(actions[:, t], action)
        state = fns.img_step(fns.params, state, action, img_key)
        np.testing.assert_allclose(states.deter[:, t + 1], state.deter, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(states.logits[:, t + 1], state.logits, rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(states.stoch[:, t + 1], state.stoch)
    np.testing.assert_array_equal(actions[:, H], policy(model.features(state), keys[H]))
    _check_unimix(states.logits[:, 1:])


# --- the KL loss -------------------------------------------------------------


def _post(logits):
    return RSSMState(jnp.zeros(logits.shape[:-2] + (DETER,)), jnp.zeros_like(logits), logits)


@pytest.fixture(scope="module")
def loss_fn(fns):
    def f(post_logits, prior_logits):
        return fns.model(fns.params).loss(_post(post_logits), prior_logits)

    return jax.jit(f), jax.jit(jax.grad(lambda q, p: f(q, p)[0], argnums=(0, 1)))


def test_loss_equal_logits_gives_free_nats(loss_fn):
    f, _ = loss_fn
    logits = jnp.asarray(np.random.default_rng(0).normal(size=(B, 3, STOCH, CLASSES)).astype(np.float32))
    loss, metrics = f(logits, logits)
    assert loss.shape == () and loss.dtype == jnp.float32
    assert float(metrics["kl_obs"]) == 0.0
    assert float(metrics["loss_dyn"]) == FREE_NATS and float(metrics["loss_rep"]) == FREE_NATS
    assert float(loss) == float(np.float32(DYN_SCALE * FREE_NATS + REP_SCALE * FREE_NATS))
    logp = np.asarray(jax.nn.log_softmax(logits), np.float64)
    ent = -np.sum(np.exp(logp) * logp, -1).sum(-1).mean()
    np.testing.assert_allclose(metrics["post_entropy"], ent, rtol=1e-5)
    np.testing.assert_allclose(metrics["prior_entropy"], ent, rtol=1e-5)


def _log_softmax64(logits):
    x = np.asarray(logits, np.float64)
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _categorical_kl(p_logits, q_logits):
    """KL(p || q) of categoricals over the last axis, in float64."""
    log_p, log_q = _log_softmax64(p_logits), _log_softmax64(q_logits)
    return np.sum(np.exp(log_p) * (log_p - log_q), -1)


def _kl_pair(seed=0):
    """Posterior and prior logits (B, 3, S, C): sequence 0 with KL < free nats, sequence 1 with KL > free nats."""
    rng = np.random.default_rng(seed)
    prior = rng.normal(size=(B, 3, STOCH, CLASSES)).astype(np.float32)
    post = prior + rng.normal(size=prior.shape).astype(np.float32) * np.array([0.05, 8.0], np.float32)[:, None, None,
                                                                                                       None]
    post, prior = jnp.asarray(post), jnp.asarray(prior)
    kl = _categorical_kl(post, prior).sum(-1)  # (B, 3)
    assert np.all(kl[0] < FREE_NATS) and np.all(kl[1] > FREE_NATS)
    return post, prior, kl


def test_loss_matches_hand_computation(loss_fn):
    f, _ = loss_fn
    post, prior, kl = _kl_pair()
    loss, metrics = f(post, prior)
    clipped = np.maximum(FREE_NATS, kl).mean()
    np.testing.assert_allclose(metrics["kl_obs"], kl.mean(), rtol=1e-6)
    np.testing.assert_allclose(metrics["loss_dyn"], clipped, rtol=1e-6)
    np.testing.assert_allclose(metrics["loss_rep"], clipped, rtol=1e-6)
    np.testing.assert_allclose(loss, DYN_SCALE * clipped + REP_SCALE * clipped, rtol=1e-6)


def test_loss_gradients_free_nats_gate_and_balance(loss_fn):
    _, grad = loss_fn
    post, prior, kl = _kl_pair(seed=1)
    g_post, g_prior = (np.asarray(g) for g in grad(post, prior))
    # Sequence 0 is under the free nats: no gradient to either side.
    assert not np.any(g_post[0]) and not np.any(g_prior[0])
    # Sequence 1: d/dq KL(sg p || q) = softmax(q) - p, times dyn_scale over the B*T positions averaged.
    n = B * 3
    p = np.asarray(jax.nn.softmax(post[1]))
    q = np.asarray(jax.nn.softmax(prior[1]))
    np.testing.assert_allclose(g_prior[1], DYN_SCALE * (q - p) / n, rtol=1e-4, atol=1e-7)
    # The posterior only gets the representation term, rep_scale times the gradient of KL(post || sg prior).
    # d/dx KL(softmax(x) || q) = p * (log p - log q - KL(p || q)).
    log_p, log_q = _log_softmax64(post[1]), _log_softmax64(prior[1])
    g_kl = np.exp(log_p) * (log_p - log_q - _categorical_kl(post[1], prior[1])[..., None])
    np.testing.assert_allclose(g_post[1], REP_SCALE * g_kl / n, rtol=1e-4, atol=1e-7)
    assert np.all(np.abs(g_post[1]).sum(-1) > 0) and np.all(np.abs(g_prior[1]).sum(-1) > 0)


# --- bfloat16 compute ---------------------------------------------------------


def test_bf16_observe_float32_outputs(fns):
    model = _build(jnp.bfloat16)
    graphdef, params = nnx.split(model)
    for leaf in jax.tree.leaves(params):
        assert leaf.dtype == jnp.float32  # parameters stay float32
    embed, action, is_first = _inputs(seed=8, first_at=0)
    observe = jax.jit(lambda p, c, e, a, f, k: nnx.merge(graphdef, p).observe(c, e, a, f, k))
    carry, post, prior = observe(params, model.initial(B), embed, action, is_first, jax.random.PRNGKey(0))
    for x in (post.deter, post.logits, prior, post.stoch, carry.state.deter):
        assert x.dtype == jnp.float32
        assert np.all(np.isfinite(np.asarray(x)))
    _check_unimix(post.logits)
    _check_onehot(post.stoch)
    # bf16 is a perturbation of the fp32 model with the same parameters (both built from Rngs(0)), not a
    # different model: compared at the first step, before different samples can send them down different paths.
    for x, y in zip(jax.tree.leaves(params), jax.tree.leaves(fns.params)):
        np.testing.assert_array_equal(x, y)
    _, post32, prior32 = fns.observe(fns.params, model.initial(B), embed, action, is_first, jax.random.PRNGKey(0))
    np.testing.assert_allclose(post.deter[:, 0], post32.deter[:, 0], atol=0.05)
    np.testing.assert_allclose(np.exp(post.logits[:, 0]), np.exp(post32.logits[:, 0]), atol=0.05)
    np.testing.assert_allclose(np.exp(prior[:, 0]), np.exp(prior32[:, 0]), atol=0.05)
