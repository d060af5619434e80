"""The world model and one training update on the debug preset (dreamer_jax/agent.py, dreamer_jax/train.py).

Compiles dominate on the CPU. The module builds one learner on the debug preset as the CLI runs it (bf16
compute, the default), prefills it once, and every training test reuses its compiled `chunk` iteration; the
CLI tests compile the same programs, so with the session's persistent compilation cache (conftest) those are
loaded, not compiled, in a full run. The loss-falls test runs the world model in fp32.
`chunk` donates its state: tests pass copies.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from dreamer_jax import config as C
from dreamer_jax import replay as rp
from dreamer_jax import openloop, train
from dreamer_jax.agent import Agent, world_model_loss
from experiments.envs import make_env

PREFILL = 60  # iterations of one env step per env (debug: 1 env step and 1 update per iteration); > time_limit
LOSS_KEYS = ("loss_rec", "loss_rew", "loss_con", "loss_dyn", "loss_rep", "loss_actor", "loss_critic", "loss_repval")


def _copy(tree):
    return jax.tree.map(jnp.copy, tree)


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def _equal(a, b):
    la, lb = _leaves(a), _leaves(b)
    return len(la) == len(lb) and all(x.dtype == y.dtype and np.array_equal(x, y) for x, y in zip(la, lb))


def _prefilled(config, env, seed):
    learner, state = train.Learner.create(config, env, jax.random.PRNGKey(seed))
    state, metrics = learner.chunk(state, PREFILL, False)
    assert metrics == {}
    return learner, state


def _learner_without_state(config, env):
    """A Learner for `config` (its module structure and dtypes) without compiling an init: the parameters of
    every precision have the same float32 structure, so its graphdef merges with another precision's params."""
    abstract = nnx.eval_shape(lambda: Agent(config, env.num_actions, nnx.Rngs(params=0)))
    for leaf in jax.tree.leaves(nnx.split(abstract)[1]):
        assert leaf.dtype == jnp.float32
    return train.Learner(config, env, nnx.split(abstract)[0], nnx.split(abstract.critic)[0])


@pytest.fixture(scope="module")
def setup():
    config = C.make("debug", precision="bf16")
    env = make_env(config)
    learner, state = _prefilled(config, env, 0)
    return config, env, learner, state


@pytest.fixture(scope="module")
def trained(setup):
    """Two training iterations, one chunk call each: states and metrics after each."""
    _, _, learner, state = setup
    s1, m1 = learner.chunk(_copy(state), 1, True)
    s1_copy = _copy(s1)
    s2, m2 = learner.chunk(s1, 1, True)
    return s1_copy, m1, s2, m2


def test_prefill_fills_replay_without_updates(setup):
    config, _, _, state = setup
    assert int(state.env_steps) == PREFILL * config.envs and int(state.updates) == 0
    assert int(state.replay.count) == PREFILL
    assert state.replay.steps["image"].dtype == jnp.uint8
    assert state.replay.steps["image"].shape[:2] == (config.envs, rp.capacity(state.replay))
    # Random actions while prefilling: every action is used.
    actions = np.asarray(state.replay.steps["action"][:, :PREFILL])
    assert set(np.unique(actions).tolist()) == set(range(5))
    # Episodes of time_limit steps: the first step of each env is marked first, and so is the one after a last.
    first = np.asarray(state.replay.steps["is_first"][:, :PREFILL])
    last = np.asarray(state.replay.steps["is_last"][:, :PREFILL])
    assert first[:, 0].all() and last.any()
    np.testing.assert_array_equal(first[:, 1:], last[:, :-1])
    np.testing.assert_array_equal(last.sum(1), 1)  # one episode of time_limit steps ended in each env


def test_reward_and_critic_predict_zero_at_init(setup):
    config, _, learner, state = setup
    agent = nnx.merge(learner.graphdef, state.params)  # prefilling does not touch the parameters
    feat = jax.random.normal(jax.random.PRNGKey(3), (6, agent.dynamics.feature_dim)) * 3.0
    for head in (agent.reward, agent.critic):
        logits = head(feat)
        assert logits.shape == (6, config.bins) and logits.dtype == jnp.float32
        mean = np.asarray(agent.twohot(logits).mean())
        np.testing.assert_array_equal(mean, np.zeros(6, np.float32))
        assert not np.any(np.signbit(mean))  # +0.0, not -0.0
    # The slow critic starts as an exact copy of the critic.
    assert _equal(state.slow_critic, nnx.split(agent.critic)[1])
    # The policy is near uniform (output scale 0.01) and the continue head is not zero-initialised.
    probs = np.exp(np.asarray(agent.policy_logits(feat)))
    np.testing.assert_allclose(probs, 0.2, atol=0.02)
    assert np.any(np.asarray(agent.cont(feat)) != 0.0)


def test_world_model_loss_falls_on_fixed_batch(setup):
    _, env, _, state = setup
    config = C.make("debug", precision="fp32")
    graphdef = _learner_without_state(config, env).graphdef
    _, batch, context, _ = rp.sample(state.replay, jax.random.PRNGKey(1), config.batch_size, config.batch_length)
    assert batch["image"].shape == (config.batch_size, config.batch_length, config.size, config.size, 3)
    key = jax.random.PRNGKey(2)
    optimizer = optax.adam(1e-3)

    def loss_fn(params):
        loss, out = world_model_loss(nnx.merge(graphdef, params), config, context, batch, key)
        return loss, out.metrics

    def step(params, opt_state):
        (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, metrics

    params = state.params
    opt_state = optimizer.init(params)
    step = jax.jit(step)
    history = []
    for _ in range(40):
        params, opt_state, loss, metrics = step(params, opt_state)
        history.append((float(loss), float(metrics["loss_rec"]), float(metrics["loss_rew"])))
    history = np.array(history)
    assert np.all(np.isfinite(history))
    (loss0, rec0, rew0), (loss1, rec1, rew1) = history[0], history[-1]
    assert loss1 < 0.7 * loss0, history[::10]
    assert rec1 < 0.7 * rec0, history[::10]
    assert rew1 < rew0, history[::10]
    # The world-model loss is the scaled sum of its terms (dyn 1, rep 0.1, rec, rew, con 1).
    total = (metrics["loss_dyn"] + 0.1 * metrics["loss_rep"] + metrics["loss_rec"] + metrics["loss_rew"]
             + metrics["loss_con"])
    np.testing.assert_allclose(loss, total, rtol=1e-5)


def test_bf16_update_metrics_finite_and_counters(setup, trained):
    config, _, _, state = setup
    assert config.precision == "bf16"
    s1, m1, s2, m2 = trained
    assert int(s1.updates) == 1 and int(s2.updates) == 2
    assert int(s2.env_steps) == int(state.env_steps) + 2 * config.envs
    for metrics in (m1, m2):
        for key in LOSS_KEYS + ("grad_norm", "kl_obs", "skipped_updates"):
            assert metrics[key].shape == (1,), key
            assert np.all(np.isfinite(np.asarray(metrics[key]))), (key, metrics[key])
        assert float(metrics["skipped_updates"][0]) == 0
        assert float(metrics["grad_norm"][0]) > 0
        assert float(metrics["loss_dyn"][0]) >= config.free_nats and float(metrics["loss_rep"][0]) >= config.free_nats
    # Warm-up starts at learning rate 0: the first update leaves the parameters, the second one moves them.
    assert _equal(s1.params, state.params)
    assert not _equal(s2.params, s1.params)
    # The slow critic follows the critic by EMA: s' = (1 - rate) s + rate c.
    agent = nnx.merge(setup[2].graphdef, s2.params)
    critic = nnx.split(agent.critic)[1]
    rate = config.slow_critic_rate
    expect = jax.tree.map(lambda s, c: (1 - rate) * s + rate * c, s1.slow_critic, critic)
    for x, y in zip(_leaves(s2.slow_critic), _leaves(expect)):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-8)


def test_update_trains_on_the_online_queue_and_refreshes_replay_context(setup, trained):
    """The official replay.online and replay.update: an update takes the oldest unseen sequences first, and the
    posterior states it computed replace the stored latents of exactly the steps it trained on."""
    config, _, learner, state = setup
    _, m1, _, _ = trained
    # Stored latents marked with a value h never takes (|h| < 1), so every overwritten one shows.
    marked = state.replay.carry._replace(state=state.replay.carry.state._replace(
        deter=jnp.full_like(state.replay.carry.state.deter, 7.0)))
    marked = state._replace(replay=state.replay._replace(carry=marked))
    acted, _ = learner.chunk(_copy(marked), 1, False)  # the env step of the training iteration, without its update
    s1, _ = learner.chunk(_copy(marked), 1, True)
    sample_key = jax.random.split(acted.key, 3)[1]
    queue, _, _, where = rp.sample(acted.replay, sample_key, config.batch_size, config.batch_length, True)
    assert np.asarray(where.online).all() and float(m1["replay_online_share"][0]) == 1.0
    assert int(s1.replay.queued) == int(queue.queued) == config.batch_size
    np.testing.assert_array_equal(where.start, np.arange(config.batch_size) // config.envs * config.batch_length)
    trained_on = np.zeros(acted.replay.carry.state.deter.shape[:2], bool)
    for env, start in zip(np.asarray(where.env), np.asarray(where.start)):
        trained_on[env, (start + np.arange(config.batch_length)) % rp.capacity(acted.replay)] = True
    changed = np.any(np.asarray(s1.replay.carry.state.deter) != np.asarray(acted.replay.carry.state.deter), -1)
    np.testing.assert_array_equal(changed, trained_on)
    np.testing.assert_array_equal(s1.replay.carry.action, acted.replay.carry.action)


def test_nan_reward_update_is_skipped_and_counted(setup, trained):
    _, _, learner, _ = setup
    _, _, s2, _ = trained
    before = _copy(s2.params)
    poisoned = _copy(s2)
    steps = dict(poisoned.replay.steps, reward=jnp.full_like(poisoned.replay.steps["reward"], jnp.nan))
    poisoned = poisoned._replace(replay=poisoned.replay._replace(steps=steps))
    s3, m3 = learner.chunk(poisoned, 1, True)
    assert int(s3.updates) == 3
    assert np.isnan(float(m3["loss_rew"][0])), m3["loss_rew"]  # the NaN is reported, not hidden
    assert float(m3["skipped_updates"][0]) == 1
    assert _equal(s3.params, before)  # lr is no longer 0 at update 3, so only the skip keeps them


def test_same_seed_is_bit_identical_other_seed_differs(setup, trained):
    config, env, _, _ = setup
    _, _, s2, _ = trained
    learner_a, state_a = _prefilled(config, env, 0)
    state_a, _ = learner_a.chunk(state_a, 2, True)  # one chunk of two iterations == two chunks of one
    assert _equal(state_a.params, s2.params)
    assert _equal(state_a.opt_state, s2.opt_state)
    assert _equal(state_a.replay, s2.replay)
    learner_b, state_b = _prefilled(config, env, 1)
    state_b, _ = learner_b.chunk(state_b, 2, True)
    assert not _equal(state_b.params, s2.params)
    assert not _equal(state_b.replay.steps["image"], s2.replay.steps["image"])


def test_open_loop_sees_only_the_context_and_imagines_from_the_recorded_actions(setup):
    """Frames after the context never reach the prediction; the action taken at the last observed step drives the
    first imagined frame; the last action (taken after the last step) drives nothing."""
    config, env, learner, state = setup
    rng, (episodes, length, context) = np.random.default_rng(0), (2, 8, 3)
    data = {"image": rng.integers(0, 256, (episodes, length, *env.image_shape), np.uint8),
            "action": rng.integers(0, env.num_actions, (episodes, length)),
            "is_first": np.arange(length)[None].repeat(episodes, 0) == 0, "reward": np.zeros((episodes, length))}
    predict = lambda d: jax.device_get(openloop.predict(learner, state.params, d, jax.random.PRNGKey(1), context))  # noqa: E731
    base = predict(data)["recon"]
    unseen = {**data, "image": data["image"].copy()}
    unseen["image"][:, context:] = 255 - unseen["image"][:, context:]
    np.testing.assert_array_equal(predict(unseen)["recon"], base)
    last = {**data, "action": data["action"].copy()}
    last["action"][:, -1] = (last["action"][:, -1] + 1) % env.num_actions
    np.testing.assert_array_equal(predict(last)["recon"], base)
    driving = {**data, "action": data["action"].copy()}
    driving["action"][:, context - 1] = (driving["action"][:, context - 1] + 1) % env.num_actions
    moved = predict(driving)["recon"]
    np.testing.assert_array_equal(moved[:, :context], base[:, :context])
    assert not np.array_equal(moved[:, context], base[:, context])


def test_reward_audit_windows_the_recorded_reward_and_imagines_from_each_start(setup):
    """`real` is the recorded reward after each start, exactly; the open loop follows the recorded actions from the
    start on, the actor's imagination does not (both start from the posterior, which has seen the actions before).
    Every parameter is jittered, as the reward head starts at zero."""
    _, env, learner, state = setup
    rng = np.random.default_rng(1)
    params = jax.tree.map(lambda x: x + 0.1 * rng.standard_normal(x.shape).astype(x.dtype)
                          if jnp.issubdtype(x.dtype, jnp.floating) else x, state.params)
    episodes, length, horizon, stride = 2, 12, 3, 4
    data = {"image": rng.integers(0, 256, (episodes, length, *env.image_shape), np.uint8),
            "action": rng.integers(0, env.num_actions, (episodes, length)),
            "is_first": np.arange(length)[None].repeat(episodes, 0) == 0,
            "reward": np.arange(episodes * length, dtype=np.float32).reshape(episodes, length)}
    audit = lambda d: jax.device_get(openloop.reward_audit(learner, params, d, jax.random.PRNGKey(1),  # noqa
                                                           horizon, stride))
    base = audit(data)
    starts = [4, 8]  # every stride steps, while the horizon stays inside the episode
    expected = np.array([[data["reward"][e, t + 1:t + 1 + horizon] for t in starts] for e in range(episodes)])
    np.testing.assert_array_equal(base["real"], expected.reshape(-1, horizon))
    assert base["openloop"].shape == base["imagined"].shape == (episodes * len(starts), horizon)
    acted = {**data, "action": data["action"].copy()}
    acted["action"][:, starts[0]] = (acted["action"][:, starts[0]] + 1) % env.num_actions
    moved, first = audit(acted), slice(0, None, len(starts))  # the windows from the first start, episode by episode
    assert not np.array_equal(moved["openloop"][first, 0], base["openloop"][first, 0])
    np.testing.assert_array_equal(moved["imagined"][first], base["imagined"][first])
    assert not np.array_equal(moved["imagined"], base["imagined"])  # later starts' posteriors have seen the action
    # The policy's entropy where the agent acted (every posterior state) and in the actor's dream (each imagined
    # state that acts), both within (0, log of the actions].
    assert base["acting_entropy"].shape == (episodes, length)
    assert base["imagined_entropy"].shape == (episodes * len(starts), horizon)
    for entropy in (base["acting_entropy"], base["imagined_entropy"]):
        assert ((entropy > 0) & (entropy <= np.log(env.num_actions) + 1e-5)).all()
