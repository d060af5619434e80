"""The official DreamerV3 (2024 code) where it matters for learning, each detail pinned by a closed form or a
hand-built case (shared/specs/dreamer.md, "Details that matter for learning").

One debug agent (fp32, 16 x 16 images) is built once; a prefilled learner gives a real replayed batch and its
posterior states. The losses are jitted once per configuration and called on edited parameter trees.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from dreamer_jax import config as C
from dreamer_jax import replay as rp
from dreamer_jax.agent import imagination_loss, replay_loss, reward_head_metrics, world_model_loss
from dreamer_jax.distributions import twohot_bins
from dreamer_jax.networks import BlockLinear, Decoder, fan_in_init
from dreamer_jax.returns import percentile_init
from dreamer_jax.train import Learner
from experiments.envs import make_env

CONFIG = C.make("debug", precision="fp32", size=16)
STD = 1.1368  # official: w = truncated_normal(-2, 2) * 1.1368 * sqrt(1 / fan_in) * outscale (1.1368 rounds 1 / 0.87963)


def _bound(fan_in, scale=1.0):
    """The largest |w| the official init can draw: two of its stds before truncation."""
    return 2 * STD * math.sqrt(1 / fan_in) * scale


def _check_init(w, fan_in, scale=1.0, rtol=0.03):
    """Within the truncation bound, reaching near it, with the std of the truncated normal, sqrt(1 / fan_in)."""
    w = np.asarray(w)
    assert np.abs(w).max() <= _bound(fan_in, scale) * (1 + 1e-4) and np.abs(w).max() > 0.9 * _bound(fan_in, scale)
    np.testing.assert_allclose(w.std(), math.sqrt(1 / fan_in) * scale, rtol=rtol)


def _name(path):
    keys = [str(getattr(e, "key", getattr(e, "name", e))) for e in path]
    return "/".join(k for k in keys if k != ".value" and k != "value")


def _leaf(params, name):
    return next(np.asarray(x) for p, x in jax.tree_util.tree_flatten_with_path(params)[0] if _name(p) == name)


def _edit(params, edits):
    """A new parameter tree with the named leaves replaced by fn(old)."""
    names = {_name(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]}
    assert set(edits) <= names, set(edits) - names
    return jax.tree_util.tree_map_with_path(lambda p, x: edits.get(_name(p), lambda v: v)(x), params)


@pytest.fixture(scope="module")
def setup():
    """A prefilled debug learner, a replayed batch with its context, and the posterior states of that batch."""
    env = make_env(CONFIG)
    learner, state = Learner.create(CONFIG, env, jax.random.PRNGKey(0))
    state, _ = learner.chunk(state, 40, False)
    _, batch, context, _ = rp.sample(state.replay, jax.random.PRNGKey(1), CONFIG.batch_size, CONFIG.batch_length)
    post = jax.jit(lambda p: world_model_loss(nnx.merge(learner.graphdef, p), CONFIG, context, batch,
                                              jax.random.PRNGKey(2))[1].post)(state.params)
    return learner, state, batch, post


def _imagine(config):
    """imagination_loss as a jitted function of (params, slow critic params, post, is_terminal)."""
    graphdef = Learner.abstract(config, make_env(config))[0].graphdef
    critic_graphdef = Learner.abstract(config, make_env(config))[0].critic_graphdef

    def fn(params, slow, post, is_terminal):
        agent, slow = nnx.merge(graphdef, params), nnx.merge(critic_graphdef, slow)
        return imagination_loss(agent, slow, config, post, is_terminal, percentile_init(), jax.random.PRNGKey(3))

    return jax.jit(fn)


def _replay(config):
    """replay_loss as a jitted function of (params, slow critic params, post, data, imagined return)."""
    learner = Learner.abstract(config, make_env(config))[0]

    def fn(params, slow, post, data, ret):
        agent, slow = nnx.merge(learner.graphdef, params), nnx.merge(learner.critic_graphdef, slow)
        return replay_loss(agent, slow, config, post, data, ret)[0]

    return jax.jit(fn)


# -- initialisation --------------------------------------------------------------------------------------------


def test_fan_in_init_is_the_official_truncated_normal():
    for scale, shape in ((1.0, (400, 300)), (0.01, (256, 500))):
        _check_init(fan_in_init(scale)(jax.random.PRNGKey(0), shape, jnp.float32), shape[0], scale)
    assert not np.any(np.asarray(fan_in_init(0.0)(jax.random.PRNGKey(0), (8, 8), jnp.float32)))


def test_block_linear_fan_in_is_the_whole_input():
    blocks, din, dout = 8, 64, 48
    kernel = BlockLinear(din, dout, blocks, dtype=jnp.float32, rngs=nnx.Rngs(0)).kernel[...]
    _check_init(kernel, blocks * din)


def test_heads_start_as_official(setup):
    """Policy weights 0.01 x the fan-in std (the std, not the variance), continue 1 x, reward and critic zeros."""
    _, state, _, _ = setup
    _check_init(_leaf(state.params, "actor/out/kernel"), CONFIG.units, 0.01, rtol=0.2)  # 160 weights
    cont = _leaf(state.params, "cont/out/kernel")  # 32 weights: their std within 3.5 standard errors (35%)
    assert np.abs(cont).max() <= _bound(CONFIG.units)
    np.testing.assert_allclose(cont.std(), math.sqrt(1 / CONFIG.units), rtol=0.35)
    for name in ("reward/out/kernel", "critic/out/kernel", "reward/out/bias", "critic/out/bias"):
        assert not np.any(_leaf(state.params, name)), name
    hidden = _leaf(state.params, "dynamics/cell/hidden_block/kernel")  # (blocks, width, group)
    _check_init(hidden, hidden.shape[0] * hidden.shape[1], rtol=0.1)


# -- decoder -----------------------------------------------------------------------------------------------------


def test_decoder_lays_every_block_over_every_cell():
    """The block-linear output of h is rearranged (g h w c) -> h w (g c): block g fills channels [g c, (g + 1) c)
    of all 16 cells of the 4 x 4 map."""
    deter, blocks, depth = 64, 8, 4
    decoder = Decoder(deter, 16, depth, 32, blocks, 16, dtype=jnp.float32, rngs=nnx.Rngs(0))
    decoder.from_deter.bias[...] = jax.random.normal(jax.random.PRNGKey(1), decoder.from_deter.bias.shape)
    h = jax.random.normal(jax.random.PRNGKey(2), (3, deter))
    flat = np.asarray(decoder.from_deter(h.reshape(3, blocks, -1)))  # (3, g, h * w * c)
    channels = decoder.map_shape[-1]
    c = channels // blocks
    expect = flat.reshape(3, blocks, 4, 4, c).transpose(0, 2, 3, 1, 4).reshape(3, 4, 4, channels)
    np.testing.assert_array_equal(np.asarray(decoder.deter_map(h)), expect)
    # Changing one block of h moves every cell, and only that block's channels.
    moved = np.asarray(decoder.deter_map(h.at[:, 8:16].add(1.0))) != expect
    assert moved[:, :, :, c:2 * c].all() and not moved[:, :, :, :c].any() and not moved[:, :, :, 2 * c:].any()
    # z enters through Dense(2 * units) -> Linear to the map, with no other bottleneck.
    first, second = decoder.from_stoch.layers
    assert first.linear.kernel.shape == (16, 64) and second.kernel.shape == (64, 4 * 4 * channels)


# -- policy --------------------------------------------------------------------------------------------------------


def test_policy_is_a_plain_categorical_by_default_and_actor_unimix_mixes_in_the_uniform(setup):
    learner, state, _, post = setup
    assert C.Config().actor_unimix == 0  # the 2024 default: no uniform mixture
    agent = nnx.merge(learner.graphdef, state.params)
    feat = agent.dynamics.features(post)
    mixed = nnx.merge(Learner.abstract(C.make(base=CONFIG, actor_unimix=0.5), make_env(CONFIG))[0].graphdef,
                      state.params)
    probs = np.exp(np.asarray(mixed.policy_logits(feat)))
    np.testing.assert_allclose(probs, 0.5 * jax.nn.softmax(agent.actor(feat)) + 0.5 / 5, rtol=1e-5)


def test_policy_samples_log_prob_and_entropy(setup):
    learner, state, _, post = setup
    agent = nnx.merge(learner.graphdef, state.params)
    feat = agent.dynamics.features(post)
    logits = np.asarray(agent.actor(feat), np.float64)
    logp = logits - np.logaddexp.reduce(logits, -1, keepdims=True)
    action = np.asarray(agent.sample_action(feat, jax.random.PRNGKey(4)))
    index = action.argmax(-1)
    assert action.dtype == np.float32
    np.testing.assert_array_equal(action, np.eye(5, dtype=np.float32)[index])  # exactly one-hot
    policy = agent.policy(feat)
    np.testing.assert_allclose(policy.log_prob(action), np.take_along_axis(logp, index[..., None], -1)[..., 0],
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(policy.entropy(), -np.sum(np.exp(logp) * logp, -1), rtol=1e-5)


# -- returns and baseline --------------------------------------------------------------------------------------------


def _spike(k):
    """Output-layer bias that puts all probability on bin k (the two-hot mean is then bins[k])."""
    return lambda b: jnp.zeros_like(b).at[k].set(60.0)


@pytest.mark.parametrize("slow_target", [False, True])
def test_returns_and_baseline_read_the_online_critic(setup, slow_target):
    """With constant critics v_online and v_slow, zero reward and continue 1, every lambda-return is the bootstrap
    value: v_online (official, slowtar False) or v_slow; the advantage against the same critic is 0."""
    learner, state, batch, post = setup
    bins = np.asarray(twohot_bins(CONFIG.bins))
    k_on, k_slow = CONFIG.bins // 2 + 40, CONFIG.bins // 2 + 60
    zero = jnp.zeros_like
    params = _edit(state.params, {"critic/out/kernel": zero, "critic/out/bias": _spike(k_on), "cont/out/kernel": zero,
                                  "cont/out/bias": lambda b: jnp.full_like(b, 60.0)})
    slow = _edit(state.slow_critic, {"out/kernel": zero, "out/bias": _spike(k_slow)})
    config = C.make(base=CONFIG, slow_target=slow_target)
    _, (_, ret, metrics) = _imagine(config)(params, slow, post, batch["is_terminal"])
    expect = bins[k_slow] if slow_target else bins[k_on]
    np.testing.assert_allclose(np.asarray(ret), expect, rtol=1e-5)
    assert float(metrics["adv_abs"]) < 1e-5 * abs(expect)
    assert float(metrics["imag_value"]) == pytest.approx(bins[k_on], rel=1e-5)  # the critic's own prediction


# -- replay value loss -------------------------------------------------------------------------------------------------


def _replay_inputs(setup):
    learner, state, batch, post = setup
    n = CONFIG.batch_size * CONFIG.batch_length
    ret = jax.random.normal(jax.random.PRNGKey(5), (n, CONFIG.horizon)) * 3.0
    reward = jax.random.normal(jax.random.PRNGKey(6), batch["reward"].shape)
    data = dict(batch, reward=reward, is_last=jnp.zeros_like(batch["is_last"]),
                is_terminal=jnp.zeros_like(batch["is_terminal"]))
    critic = _edit(state.params, {"critic/out/kernel": lambda k: jax.random.normal(jax.random.PRNGKey(7), k.shape)})
    return critic, state.slow_critic, post, data, ret


@pytest.mark.parametrize("repval_grad", [True, False])
def test_replay_value_loss_trains_the_world_model(setup, repval_grad):
    """Official repval_grad: the loss reaches the representation (the posterior's layers) through the features."""
    learner, state, batch, _ = setup
    params, slow, _, data, ret = _replay_inputs(setup)
    config = C.make(base=CONFIG, repval_grad=repval_grad)
    loss = _replay(config)
    context = rp.sample(state.replay, jax.random.PRNGKey(1), CONFIG.batch_size, CONFIG.batch_length)[2]

    def through_model(params):
        post = world_model_loss(nnx.merge(learner.graphdef, params), config, context, batch,
                                jax.random.PRNGKey(2))[1].post
        return loss(params, slow, post, data, ret)

    grads = jax.jit(jax.grad(through_model))(params)  # one program, not the world model's ops one by one
    norms = {name: np.abs(_leaf(grads, name)).max() for name in
             ("dynamics/post_out/kernel", "encoder/convs/0/kernel", "critic/out/kernel")}
    assert norms["critic/out/kernel"] > 0
    if repval_grad:
        assert norms["dynamics/post_out/kernel"] > 0 and norms["encoder/convs/0/kernel"] > 0
    else:
        assert norms["dynamics/post_out/kernel"] == 0 and norms["encoder/convs/0/kernel"] == 0


def test_replay_value_loss_is_masked_at_is_last(setup):
    """Official weight 1 - is_last: with is_last everywhere the loss is exactly 0; with is_last at step t the
    sequence splits into two independent parts, [0, t] and [t + 1, T), whose losses add up (the step at t carries
    no weight and cuts the lambda-return)."""
    params, slow, post, data, ret = _replay_inputs(setup)
    loss = _replay(CONFIG)
    assert float(loss(params, slow, post, dict(data, is_last=jnp.ones_like(data["is_last"])), ret)) == 0.0
    B, T, t = CONFIG.batch_size, CONFIG.batch_length, 3
    cut = dict(data, is_last=data["is_last"].at[:, t].set(True))
    whole = float(loss(params, slow, post, cut, ret))
    part = lambda x, a, b: jax.tree.map(lambda v: v[:, a:b], x)  # noqa: E731
    ret_bt = ret.reshape(B, T, -1)
    first = float(loss(params, slow, part(post, 0, t + 1), part(cut, 0, t + 1),
                       ret_bt[:, :t + 1].reshape(-1, ret.shape[-1])))
    second = float(loss(params, slow, part(post, t + 1, T), part(cut, t + 1, T),
                        ret_bt[:, t + 1:].reshape(-1, ret.shape[-1])))
    np.testing.assert_allclose(whole * (T - 1), first * t + second * (T - t - 2), rtol=1e-5)


def test_imag_last_starts_from_the_last_steps_of_each_sequence(setup):
    """Official imag_last K: imagination and the replay value loss read the last K steps of each sequence; the
    same as the full losses on sequences cut to those steps."""
    learner, state, batch, post = setup
    K = 3
    cut = lambda x: jax.tree.map(lambda v: v[:, -K:], x)  # noqa: E731
    _, (_, ret, _) = _imagine(C.make(base=CONFIG, imag_last=K))(state.params, state.slow_critic, post,
                                                                batch["is_terminal"])
    _, (_, ret_cut, _) = _imagine(CONFIG)(state.params, state.slow_critic, cut(post), cut(batch["is_terminal"]))
    assert ret.shape == (CONFIG.batch_size * K, CONFIG.horizon)
    np.testing.assert_array_equal(ret, ret_cut)
    params, slow, _, data, _ = _replay_inputs(setup)
    value = _replay(C.make(base=CONFIG, imag_last=K))(params, slow, post, data, ret)
    np.testing.assert_array_equal(value, _replay(CONFIG)(params, slow, cut(post), cut(data), ret))


# -- what drives the actor (diagnostics, not the official code's) ----------------------------------------------------


def _actor_grad_norm(config, params, slow, post, is_terminal):
    """The norm of the imagination loss's gradient over the actor's parameters (the only term that reads them)."""
    grads = jax.jit(jax.grad(lambda p: _imagine(config)(p, slow, post, is_terminal)[0]))(params)
    leaves = [x for p, x in jax.tree_util.tree_flatten_with_path(grads)[0] if _name(p).startswith("actor/")]
    return float(jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in leaves)))


def test_actor_drive_splits_the_actor_gradient_into_advantage_and_entropy(setup):
    """actor_grad_adv and actor_grad_ent are the two terms of the actor's gradient: without the entropy bonus the
    whole gradient is the advantages' (and the entropy's is 0); with a constant critic, no reward and continue 1
    (every advantage 0) it is the entropy bonus's."""
    learner, state, batch, post = setup
    noise = lambda seed: lambda k: jax.random.normal(jax.random.PRNGKey(seed), k.shape)  # noqa: E731
    params = _edit(state.params, {"critic/out/kernel": noise(8), "reward/out/kernel": noise(9)})  # advantages != 0
    no_bonus = C.make(base=CONFIG, actor_entropy=0.0)
    metrics = _imagine(no_bonus)(params, state.slow_critic, post, batch["is_terminal"])[1][2]
    whole = _actor_grad_norm(no_bonus, params, state.slow_critic, post, batch["is_terminal"])
    assert whole > 0 and float(metrics["actor_grad_ent"]) == 0.0
    np.testing.assert_allclose(CONFIG.actor_scale * float(metrics["actor_grad_adv"]), whole, rtol=1e-4)

    zero = jnp.zeros_like
    flat = _edit(state.params, {"critic/out/kernel": zero, "critic/out/bias": _spike(CONFIG.bins // 2 + 40),
                                "reward/out/kernel": zero, "cont/out/kernel": zero,
                                "cont/out/bias": lambda b: jnp.full_like(b, 60.0)})
    metrics = _imagine(CONFIG)(flat, state.slow_critic, post, batch["is_terminal"])[1][2]
    whole = _actor_grad_norm(CONFIG, flat, state.slow_critic, post, batch["is_terminal"])
    assert float(metrics["actor_grad_adv"]) < 1e-4 * float(metrics["actor_grad_ent"])
    np.testing.assert_allclose(CONFIG.actor_scale * float(metrics["actor_grad_ent"]), whole, rtol=1e-4)


def test_reward_head_metrics_split_reward_steps_from_the_rest():
    """The prediction at reward steps is summed with its count; elsewhere it is the mean over the other steps."""
    reward = jnp.array([[0.0, 10.0, 0.0], [0.0, 0.0, 10.0]])
    predicted = jnp.array([[0.1, 4.0, 0.3], [0.2, 0.4, 2.0]])
    metrics = {k: float(v) for k, v in reward_head_metrics(predicted, reward).items()}
    assert metrics == pytest.approx({"reward_events": 2.0, "rew_pred_event_sum": 6.0, "rew_pred_other": 0.25})


@pytest.mark.parametrize("side", [1, -1])
def test_replay_critic_error_and_bias(setup, side):
    """A critic above every replayed return errs by exactly its bias; one below, by minus its bias."""
    learner, state, batch, _ = setup
    params, slow, post, data, ret = _replay_inputs(setup)
    k = CONFIG.bins // 2 + side * 100
    params = _edit(params, {"critic/out/kernel": jnp.zeros_like, "critic/out/bias": _spike(k)})
    graphdef, critic_graphdef = learner.graphdef, learner.critic_graphdef
    metrics = jax.jit(lambda p, s: replay_loss(nnx.merge(graphdef, p), nnx.merge(critic_graphdef, s), CONFIG, post,
                                               data, ret)[1])(params, slow)
    bias, error = float(metrics["repval_bias"]), float(metrics["repval_error"])
    assert side * bias > 10.0
    np.testing.assert_allclose(error, side * bias, rtol=1e-6)
