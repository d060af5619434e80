"""VTA dynamics (dreamer_jax/vta.py) against the spec (shared/specs/vta.md): boundaries, constraints, losses.

One small VTA per module (plus a bf16 one and a lookahead one), built with nnx.eval_shape and given
seeded numpy parameters (no eager init ops); every function is jitted once over (params, inputs) and
reused, and parameter edits make new trees of the same shapes (no recompiles). READ/COPY are
controlled by the constraints with a large posterior force scale (the hard sample is logit + logistic
noise > 0, so +-50 makes it certain), by `is_first`, or by editing the boundary detectors' biases.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from dreamer_jax import config as config_lib
from dreamer_jax import distributions as D
from dreamer_jax.agent import vta_options
from dreamer_jax.dynamics import Carry
from dreamer_jax.vta import VTA, VTAState

DETER, HIDDEN, STOCH, CLASSES, BLOCKS, ACT, EMBED = 16, 8, 3, 4, 4, 5, 7
MAX_LEN, MAX_NUM, RATE = 4, 3, 0.2
B, T, H = 4, 12, 5
FORCE = 50.0  # posterior force scale: sigmoid(-50) ~ 2e-22, so the hard sample is certain


def _config(**overrides):
    kwargs = dict(dynamics="vta", precision="fp32", vta_max_seg_len=MAX_LEN, vta_max_seg_num=MAX_NUM,
                  vta_boundary_rate=RATE, vta_boundary_scale=1.0)
    kwargs.update(overrides)
    return config_lib.make("debug", **kwargs)


def _build(dtype=jnp.float32, **overrides):
    """The module built abstractly (nnx.eval_shape: no eager init ops, which cost seconds each on a busy CPU)."""
    return nnx.eval_shape(lambda: VTA(
        deter=DETER, hidden=HIDDEN, stoch=STOCH, classes=CLASSES, blocks=BLOCKS, action_dim=ACT, embed_dim=EMBED,
        unimix=0.01, free_nats=1.0, dyn_scale=1.0, rep_scale=0.1, **vta_options(_config(**overrides)), dtype=dtype,
        rngs=nnx.Rngs(0)))


def _key_name(entry):
    return str(getattr(entry, "key", getattr(entry, "name", entry)))


def _path(path):
    """'read_prior/bias' style name of a state leaf (the trailing '.value' dropped)."""
    return "/".join(_key_name(e) for e in path if _key_name(e) != "value")


def _fill(abstract, seed=0):
    """Random parameters of the module's shapes: kernels N(0, 1/fan_in), biases 0, norm scales 1."""
    rng = np.random.default_rng(seed)

    def leaf(path, x):
        name = _path(path).rsplit("/", 1)[-1]
        if name == "kernel":
            return jnp.asarray(rng.normal(size=x.shape) / math.sqrt(x.shape[-2]), x.dtype)
        if name == "scale":
            return jnp.ones(x.shape, x.dtype)
        assert name == "bias", _path(path)
        return jnp.zeros(x.shape, x.dtype)

    return jax.tree_util.tree_map_with_path(leaf, abstract)


def _edit(params, edits):
    """Params with the named leaves replaced by fn(old) (a new tree; the original is untouched)."""
    names = {_path(path) for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]}
    assert set(edits) <= names, set(edits) - names
    return jax.tree_util.tree_map_with_path(lambda path, x: edits.get(_path(path), lambda v: v)(x), params)


def _policy(features, key):
    return jax.nn.one_hot(jax.random.categorical(key, jnp.zeros((features.shape[0], ACT))), ACT)


class Fns:
    """Jitted pure functions of (params, ...) over one graphdef."""

    def __init__(self, model):
        self.graphdef, abstract = nnx.split(model)
        self.params = _fill(abstract)
        self.clip = model.clip
        m = lambda p: nnx.merge(self.graphdef, p)  # noqa: E731
        self.model = m
        self.apply = jax.jit(lambda p, fn, *args: fn(m(p), *args), static_argnums=1)
        self.obs_step = jax.jit(
            lambda p, c, e, a, f, k, constrain, fs, temp: m(p).obs_step(
                c, e, a, f, k, constrain=constrain, force_scale=fs, temp=temp), static_argnums=6)
        self.observe = jax.jit(lambda p, c, e, a, f, k, training: m(p).observe(c, e, a, f, k, training=training),
                               static_argnums=6)
        self.imagine = jax.jit(lambda p, s, k: m(p).imagine(s, _policy, H, k))
        self.loss = jax.jit(lambda p, post, prior: m(p).loss(post, prior))

    def with_params(self, **edits):
        """Params with leaves replaced, e.g. read_prior__bias=fn (same shapes, so no recompiles)."""
        return _edit(self.params, {name.replace("__", "/"): fn for name, fn in edits.items()})


def _abstract_cell(model, state, action):
    """The READ transition of the abstract level: from (c, z), the segment's last (h, s) and the last action."""
    flat = lambda x: x.reshape(x.shape[:-2] + (-1,))  # noqa: E731
    return model.abstract_cell(state.c, [flat(state.z), state.h, flat(state.s), action])


def _prior_read_logit(model, state, action):
    return model.prior_read_logit(state, action)


def _z_prior_logits(model, c):
    return model._latent(model.z_prior_out, model.z_prior(c))


def _rate_penalty(model, logits):
    return model.rate_penalty(logits)


@pytest.fixture(scope="module")
def fns():
    return Fns(_build())


def _counters(carry, seg_len, seg_num):
    """The carry with its state's segment counters set (scalars or (B,) arrays)."""
    full = lambda v: jnp.broadcast_to(jnp.asarray(v, jnp.int32), carry.state.seg_len.shape)  # noqa: E731
    return carry._replace(state=carry.state._replace(seg_len=full(seg_len), seg_num=full(seg_num)))


def _random_carry(seed, seg_len=0, seg_num=0, batch=B):
    rng = np.random.default_rng(seed)
    onehot = lambda: jnp.asarray(np.eye(CLASSES, dtype=np.float32)[rng.integers(0, CLASSES, (batch, STOCH))])  # noqa
    normal = lambda *s: jnp.asarray(rng.normal(size=(batch,) + s).astype(np.float32))  # noqa: E731
    logits = lambda: jax.nn.log_softmax(normal(STOCH, CLASSES), -1)  # noqa: E731
    count = jnp.zeros((batch,), jnp.int32)
    state = VTAState(normal(DETER), onehot(), logits(), normal(DETER), onehot(), logits(),
                     jnp.ones((batch,), jnp.float32), jnp.zeros((batch,), jnp.float32), jnp.zeros((batch,), bool),
                     count, count)
    action = jnp.asarray(np.eye(ACT, dtype=np.float32)[rng.integers(0, ACT, batch)])
    return _counters(Carry(state, action), seg_len, seg_num)


def _step_inputs(seed=1, scale=1.0):
    rng = np.random.default_rng(seed)
    embed = jnp.asarray(scale * rng.normal(size=(B, EMBED)).astype(np.float32))
    action = jnp.asarray(np.eye(ACT, dtype=np.float32)[rng.integers(0, ACT, B)])
    return embed, action


def _seq_inputs(seed=1, scale=1.0, length=T):
    rng = np.random.default_rng(seed)
    embed = jnp.asarray(scale * rng.normal(size=(B, length, EMBED)).astype(np.float32))
    action = jnp.asarray(np.eye(ACT, dtype=np.float32)[rng.integers(0, ACT, (B, length))])
    return embed, action, jnp.zeros((B, length), bool)


NO_FIRST = jnp.zeros((B,), bool)


# --- READ / COPY on the abstract level ----------------------------------------------------------------


def test_copy_carries_abstract_state_bit_for_bit(fns):
    """seg_num at the max and a short segment: forced COPY; (c, z, z_logits) are the carry's, bit for bit."""
    carry = _random_carry(3, seg_len=1, seg_num=MAX_NUM)
    embed, action = _step_inputs()
    new, (post, prior) = fns.obs_step(fns.params, carry, embed, action, NO_FIRST, jax.random.PRNGKey(0), True,
                                      FORCE, 1.0)
    np.testing.assert_array_equal(post.read, 0.0)
    np.testing.assert_array_equal(post.forced, True)
    np.testing.assert_array_equal(post.read_logit, -FORCE)
    np.testing.assert_array_equal(prior.read_logit, -fns.clip)
    np.testing.assert_array_equal(post.c, carry.state.c)
    np.testing.assert_array_equal(post.z, carry.state.z)
    np.testing.assert_array_equal(post.z_logits, carry.state.z_logits)
    # The observation level takes a normal step; the segment grows and no segment is added.
    assert not np.allclose(post.h, carry.state.h, atol=1e-3)
    np.testing.assert_array_equal(new.state.seg_len, 2)
    np.testing.assert_array_equal(new.state.seg_num, MAX_NUM)
    np.testing.assert_array_equal(new.action, action)


def test_read_updates_abstract_state(fns):
    """seg_len at the max: forced READ; c = GRU_c(c_prev, z_prev) and the counters restart a segment."""
    carry = _random_carry(4, seg_len=MAX_LEN, seg_num=0)
    embed, action = _step_inputs()
    new, (post, prior) = fns.obs_step(fns.params, carry, embed, action, NO_FIRST, jax.random.PRNGKey(1), True,
                                      FORCE, 1.0)
    np.testing.assert_array_equal(post.read, 1.0)
    np.testing.assert_array_equal(post.forced, True)
    np.testing.assert_array_equal(prior.read_logit, fns.clip)
    assert np.all(np.abs(np.asarray(post.c) - np.asarray(carry.state.c)).max(-1) > 1e-3)
    expected = fns.apply(fns.params, _abstract_cell, carry.state, carry.action)
    np.testing.assert_allclose(post.c, expected, rtol=1e-5, atol=1e-5)
    # z is a fresh one-hot sample of the new posterior logits.
    z = np.asarray(post.z)
    assert np.all((z == 0) | (z == 1)) and np.all(z.sum(-1) == 1)
    np.testing.assert_array_equal(new.state.seg_len, 1)
    np.testing.assert_array_equal(new.state.seg_num, 1)


def test_is_first_always_reads(fns):
    """is_first forces READ from the reset state without any other constraint, forcing or a favourable logit."""
    params = fns.with_params(read_post__layers__1__bias=lambda b: jnp.full_like(b, -1e3))
    carry = _random_carry(5, seg_len=1, seg_num=0)
    embed, action = _step_inputs()
    first = jnp.array([True, False, True, False])
    new, (post, prior) = fns.obs_step(params, carry, embed, action, first, jax.random.PRNGKey(2), True, 0.0, 1.0)
    np.testing.assert_array_equal(post.read, [1.0, 0.0, 1.0, 0.0])
    np.testing.assert_array_equal(post.forced, first)
    np.testing.assert_array_equal(prior.read_logit[np.asarray(first)], fns.clip)
    # The reset rows read from the zero state and no action: c = GRU_c(0, [0, 0, 0, 0]), the same in both rows.
    zero = fns.model(params).initial(1)
    c0 = fns.apply(params, _abstract_cell, zero.state, zero.action)
    np.testing.assert_allclose(post.c[0], c0[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(post.c[0], post.c[2])
    # The COPY rows keep the carry's abstract state.
    np.testing.assert_array_equal(post.c[1], carry.state.c[1])
    np.testing.assert_array_equal(post.z_logits[3], carry.state.z_logits[3])
    np.testing.assert_array_equal(new.state.seg_num, [1, 0, 1, 0])
    np.testing.assert_array_equal(new.state.seg_len, [1, 2, 1, 2])


# --- constraints ----------------------------------------------------------------------------------------

CASES_LEN = jnp.array([0, MAX_LEN, 1, MAX_LEN + 3], jnp.int32)
CASES_NUM = jnp.array([0, 0, MAX_NUM, MAX_NUM + 2], jnp.int32)  # none, length, count, both


def test_constraints_read_wins(fns):
    model = fns.model(fns.params)
    carry = _counters(_random_carry(6), CASES_LEN, CASES_NUM)
    fr, fc = model.constraints(carry.state, NO_FIRST, True)
    np.testing.assert_array_equal(fr, [False, True, False, True])
    np.testing.assert_array_equal(fc, [False, False, True, False])
    fr, fc = model.constraints(carry.state, NO_FIRST, False)
    np.testing.assert_array_equal(fr, False)
    np.testing.assert_array_equal(fc, False)
    first = jnp.array([False, False, True, False])
    fr, fc = model.constraints(carry.state, first, True)
    np.testing.assert_array_equal(fr, [False, True, True, True])
    np.testing.assert_array_equal(fc, False)
    fr, fc = model.constraints(carry.state, first, False)
    np.testing.assert_array_equal(fr, first)
    np.testing.assert_array_equal(fc, False)


@pytest.mark.parametrize("force", [0.0, FORCE])
def test_constraints_set_prior_logit_and_forced_flag(fns, force):
    carry = _counters(_random_carry(7), CASES_LEN, CASES_NUM)
    embed, action = _step_inputs()
    _, (post, prior) = fns.obs_step(fns.params, carry, embed, action, NO_FIRST, jax.random.PRNGKey(3), True,
                                    force, 1.0)
    clip = fns.clip
    logit = np.asarray(prior.read_logit)
    np.testing.assert_array_equal(logit[1:], [clip, -clip, clip])
    assert abs(logit[0]) < clip - 1e-3  # the learned prior
    np.testing.assert_allclose(logit[0], fns.apply(fns.params, _prior_read_logit, carry.state, carry.action)[0],
                               rtol=1e-6)
    # `forced` marks the boundary used: the posterior's, forced only when the force scale is on.
    np.testing.assert_array_equal(post.forced, [False, True, True, True] if force else False)
    if force:  # the posterior follows (prototype semantics): logits +-scale, hard decisions certain
        np.testing.assert_array_equal(post.read_logit[1:], [force, -force, force])
        np.testing.assert_array_equal(post.read[1:], [1.0, 0.0, 1.0])
    else:  # constraints act on the prior only
        assert np.all(np.abs(np.asarray(post.read_logit)) < clip)


def _replay_counters(post_read, is_first, seg_len, seg_num):
    """Hand replay of the training constraints: the forced READ / COPY masks per step and the final counters."""
    read = np.asarray(post_read) > 0.5
    first = np.asarray(is_first)
    seg_len, seg_num = np.array(seg_len), np.array(seg_num)
    fr_all, fc_all = np.zeros_like(read), np.zeros_like(read)
    for t in range(read.shape[1]):
        seg_len = np.where(first[:, t], 0, seg_len)
        seg_num = np.where(first[:, t], 0, seg_num)
        fr = first[:, t] | (seg_len >= MAX_LEN)
        fc = (seg_num >= MAX_NUM) & ~fr
        fr_all[:, t], fc_all[:, t] = fr, fc
        seg_len = np.where(read[:, t], 1, seg_len + 1)
        seg_num = seg_num + read[:, t]
    return fr_all, fc_all, seg_len, seg_num


def test_training_carries_segment_length_and_restarts_the_count(fns):
    """training=True: the segment length goes on from the context (so a segment that began in an earlier sequence
    is forced to end at its limit right away), the segment count restarts with the sequence; then both apply."""
    carry = _random_carry(8, seg_len=10 * MAX_LEN, seg_num=10 * MAX_NUM)
    embed, action, first = _seq_inputs(seed=2)
    first = first.at[2, 6].set(True)
    last, post, prior = fns.observe(fns.params, carry, embed, action, first, jax.random.PRNGKey(4), True)
    np.testing.assert_array_equal(prior.read_logit[:, 0], fns.clip)  # the carried length is past the limit
    fr, fc, seg_len, seg_num = _replay_counters(post.read, first, np.full(B, 10 * MAX_LEN), np.zeros(B, int))
    assert fr.any() and fc.any(), "the sequence should exercise both constraints"
    np.testing.assert_array_equal(fr[:, 0], True)
    logit = np.asarray(prior.read_logit)
    np.testing.assert_array_equal(logit[fr], fns.clip)
    np.testing.assert_array_equal(logit[fc], -fns.clip)
    assert np.all(np.abs(logit[~(fr | fc)]) < fns.clip - 1e-3)
    np.testing.assert_array_equal(post.forced, first)  # force scale 0: the posterior's boundaries are its own
    np.testing.assert_array_equal(last.state.seg_len, seg_len)
    np.testing.assert_array_equal(last.state.seg_num, seg_num)
    np.testing.assert_array_equal(post.seg_len[:, -1], seg_len)
    assert post.read[2, 6] == 1.0


@pytest.fixture(scope="module")
def long_limit():
    """A VTA whose max_seg_len (20) is longer than the training sequences (12 steps)."""
    return Fns(_build(vta_max_seg_len=20, vta_boundary_force_scale=FORCE))


@pytest.mark.parametrize("carried", [15, 0])
def test_a_limit_longer_than_the_sequence_binds_through_the_context(long_limit, carried):
    """The prototype's condition (max_seg_len 50, sequences of 40): with the segment length carried in from the
    replay context, a segment that began 15 steps before the sequence must end at its step 5; counted from the
    sequence start (carried 0) it never could within 12 steps. The free posterior never READs here."""
    f = long_limit
    params = f.with_params(read_post__layers__1__bias=lambda b: jnp.full_like(b, -1e3))
    carry = _random_carry(15, seg_len=carried)
    embed, action, first = _seq_inputs(seed=11)
    last, post, prior = f.observe(params, carry, embed, action, first, jax.random.PRNGKey(15), True)
    read = np.asarray(post.read)
    if carried:
        np.testing.assert_array_equal(read[:, :5], 0.0)
        np.testing.assert_array_equal(read[:, 5], 1.0)
        np.testing.assert_array_equal(post.forced[:, 5], True)
        np.testing.assert_array_equal(prior.read_logit[:, 5], f.clip)
        np.testing.assert_array_equal(post.seg_len[:, 4:7], [[20, 1, 2]] * B)
    else:
        np.testing.assert_array_equal(read, 0.0)
        np.testing.assert_array_equal(last.state.seg_len, T)


def test_acting_applies_no_length_or_count_constraint(fns):
    """training=False: counters beyond both limits force nothing; only is_first forces READ."""
    carry = _random_carry(8, seg_len=10 * MAX_LEN, seg_num=10 * MAX_NUM)
    embed, action, first = _seq_inputs(seed=2)
    first = first.at[1, 5].set(True)
    last, post, prior = fns.observe(fns.params, carry, embed, action, first, jax.random.PRNGKey(4), False)
    np.testing.assert_array_equal(post.forced, first)
    logit = np.asarray(prior.read_logit)
    assert logit[1, 5] == fns.clip and post.read[1, 5] == 1.0
    assert np.all(np.abs(logit[~np.asarray(first)]) < fns.clip - 1e-3)
    # Free reads happen while the counters are beyond both limits (nothing pins the boundary).
    read = np.asarray(post.read)
    assert np.all((read == 0) | (read == 1))
    assert read[0].any() and not read[0].all()
    # Counters keep counting (not reset) in rows without an episode start.
    assert last.state.seg_num[0] >= 10 * MAX_NUM


def test_observe_equals_obs_step_loop_in_training(fns):
    """observe(training=True) is the obs_step loop with constraints, the count from zero, same keys."""
    carry = _random_carry(9, seg_len=2, seg_num=10 * MAX_NUM)
    embed, action, first = _seq_inputs(seed=5)
    key = jax.random.PRNGKey(5)
    _, post, prior = fns.observe(fns.params, carry, embed, action, first, key, True)
    c = _counters(carry, 2, 0)
    for t, k in enumerate(jax.random.split(key, T)):
        c, (p, pr) = fns.obs_step(fns.params, c, embed[:, t], action[:, t], first[:, t], k, True, 0.0, 1.0)
        np.testing.assert_array_equal(post.read[:, t], p.read)
        np.testing.assert_array_equal(post.forced[:, t], p.forced)
        np.testing.assert_allclose(post.c[:, t], p.c, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(prior.read_logit[:, t], pr.read_logit, rtol=1e-5, atol=1e-5)


# --- the boundary sample ----------------------------------------------------------------------------------


def test_temperature_changes_gradient_not_decision(fns):
    model = fns.model(fns.params)
    logit = jnp.linspace(-6.0, 6.0, 64)
    key = jax.random.PRNGKey(11)
    sample = jax.jit(lambda l, t: model.sample_read(l, key, t))
    grad = jax.jit(jax.grad(lambda l, t: jnp.sum(model.sample_read(l, key, t) * jnp.arange(64.0))))
    expected = np.asarray(logit + jax.random.logistic(key, logit.shape, jnp.float32) > 0, np.float32)
    assert 0 < expected.sum() < 64
    grads = []
    for temp in (0.5, 1.0, 2.0):
        np.testing.assert_array_equal(sample(logit, temp), expected)
        grads.append(np.asarray(grad(logit, temp)))
        assert np.all(np.isfinite(grads[-1])) and np.any(grads[-1] != 0)
    for i in range(3):
        for j in range(i + 1, 3):
            assert not np.allclose(grads[i], grads[j], rtol=1e-3, atol=1e-6)
    # The straight-through gradient is d sigmoid((l + noise) / temp) / dl.
    noisy = np.asarray(logit + jax.random.logistic(key, logit.shape, jnp.float32), np.float64)
    sig = 1 / (1 + np.exp(-noisy / 2.0))
    np.testing.assert_allclose(grads[2], np.arange(64.0) * sig * (1 - sig) / 2.0, rtol=1e-4, atol=1e-7)


@pytest.fixture(scope="module")
def one_step_grads(fns):
    """Gradients of sum(c) + |features|^2 after one obs_step, which depends on read_post only through the
    straight-through boundary: for free steps and for is_first steps (where no gradient may pass)."""
    carry = _random_carry(12, seg_len=1, seg_num=0)
    embed, action = _step_inputs()

    def objective(p, first):
        model = fns.model(p)
        _, (post, _) = model.obs_step(carry, embed, action, first, jax.random.PRNGKey(6), constrain=True)
        return jnp.sum(post.c) + jnp.sum(model.features(post) ** 2)

    grad = jax.jit(jax.grad(objective))
    return grad(fns.params, NO_FIRST), grad(fns.params, jnp.ones((B,), bool))


def _nonzero(tree):
    leaves = [np.asarray(x) for x in jax.tree.leaves(tree)]
    assert leaves and all(np.all(np.isfinite(x)) for x in leaves)
    return any(np.any(x != 0) for x in leaves)


def test_straight_through_gradient_reaches_posterior_detector(one_step_grads):
    """d(sum of c and features after one step)/d(read_post params) is non-zero; zero when is_first decides."""
    free, first = one_step_grads
    assert _nonzero(free["read_post"])
    assert not _nonzero(first["read_post"])


def test_boundary_kl_trains_both_detectors(fns):
    """d loss / d logits in closed form: the prior logit gets dyn * (sig(p) - sig(q)) / N from KL(sg(q) || p),
    the posterior logit rep * sig'(q) (q - p) / N from KL(q || sg(p)) plus the step rate term's share."""
    carry = _random_carry(14, seg_len=1, seg_num=0)
    embed, action, first = _seq_inputs(seed=10)
    _, post, prior = fns.observe(fns.params, carry, embed, action, first, jax.random.PRNGKey(14), True)
    grad = jax.jit(jax.grad(lambda ql, pl: fns.model(fns.params).loss(
        post._replace(read_logit=ql), prior._replace(read_logit=pl))[0], argnums=(0, 1)))
    g_post, g_prior = (np.asarray(g, np.float64) for g in grad(post.read_logit, prior.read_logit))
    q, p = np.asarray(post.read_logit, np.float64), np.asarray(prior.read_logit, np.float64)
    sig = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    cfg, n = _config(), q.size
    np.testing.assert_allclose(g_prior, cfg.vta_boundary_dyn_scale * (sig(p) - sig(q)) / n, rtol=1e-4, atol=1e-9)
    expected_post = sig(q) * (1 - sig(q)) * (cfg.vta_boundary_rep_scale * (q - p)
                                             + cfg.vta_boundary_scale * (q - _logit(RATE))) / n
    np.testing.assert_allclose(g_post, expected_post, rtol=1e-4, atol=1e-9)
    assert np.any(g_prior != 0) and np.any(g_post != 0)


# --- Bernoulli KL and the rate regulariser ----------------------------------------------------------------


def _logit(p):
    return math.log(p) - math.log1p(-p)


def _kl(p, q):
    p, q = np.asarray(p, np.float64), np.asarray(q, np.float64)
    return p * np.log(p / q) + (1 - p) * np.log((1 - p) / (1 - q))


def test_bernoulli_kl_closed_form():
    expected = 0.3 * math.log(0.3 / 0.6) + 0.7 * math.log(0.7 / 0.4)
    kl = lambda p, q: D.bernoulli(p).kl_divergence(D.bernoulli(q))  # noqa: E731
    np.testing.assert_allclose(kl(jnp.float32(_logit(0.3)), jnp.float32(_logit(0.6))), expected, rtol=1e-5)
    np.testing.assert_allclose(kl(jnp.float32(1.0), jnp.float32(1.0)), 0.0, atol=1e-7)


@pytest.fixture(scope="module")
def batch_rate_model():
    return _build(vta_rate_mode="batch")


def test_rate_penalty_closed_forms(fns, batch_rate_model):
    step_penalty = lambda logits: fns.apply(fns.params, _rate_penalty, logits)  # noqa: E731
    assert fns.model(fns.params).rate_mode == "step" and batch_rate_model.rate_mode == "batch"
    q = np.array([0.1, 0.5, 0.9])
    logits = jnp.asarray([_logit(x) for x in q], jnp.float32)
    np.testing.assert_allclose(step_penalty(logits), _kl(q, RATE).mean(), rtol=1e-5)
    np.testing.assert_allclose(batch_rate_model.rate_penalty(logits), _kl(q.mean(), RATE), rtol=1e-5)
    # Confident decisions whose mean is the rate: the batch mode does not punish them, the step mode does.
    confident = jnp.asarray([FORCE, -FORCE, -FORCE, -FORCE, -FORCE], jnp.float32)  # mean q = 0.2 = rate
    np.testing.assert_allclose(batch_rate_model.rate_penalty(confident), 0.0, atol=1e-6)
    expected_step = (math.log(1 / RATE) + 4 * math.log(1 / (1 - RATE))) / 5
    np.testing.assert_allclose(step_penalty(confident), expected_step, rtol=1e-4)
    assert expected_step > 0.4


# --- soft clip --------------------------------------------------------------------------------------------


def test_boundary_logits_soft_clipped_for_extreme_inputs(fns):
    carry = _random_carry(13)
    carry = carry._replace(state=carry.state._replace(h=carry.state.h * 1e4))
    embed, action, first = _seq_inputs(seed=4, scale=1e4)

    blown = fns.with_params(read_post__layers__1__bias=lambda b: jnp.full_like(b, 1e6),
                            read_prior__bias=lambda b: jnp.full_like(b, -1e6),
                            read_prior__kernel=lambda k: k * 1e4)
    for params in (fns.params, blown):
        _, post, prior = fns.observe(params, carry, embed, action, first, jax.random.PRNGKey(8), False)
        for logit in (post.read_logit, prior.read_logit):
            logit = np.asarray(logit)
            assert logit.dtype == np.float32 and np.all(np.isfinite(logit))
            assert np.all(np.abs(logit) <= fns.clip)
    np.testing.assert_allclose(post.read_logit, fns.clip, rtol=1e-6)
    # The prior kernel was scaled up too; its first step sees the huge h directly.
    np.testing.assert_allclose(np.abs(prior.read_logit[:, 0]), fns.clip, rtol=1e-6)
    huge = fns.apply(fns.params, _prior_read_logit, carry.state._replace(h=carry.state.h * 1e30), carry.action)
    assert np.all(np.isfinite(huge)) and np.all(np.abs(huge) <= fns.clip)
    np.testing.assert_allclose(np.abs(huge).max(), fns.clip, rtol=1e-6)


# --- imagination ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def start(fns):
    carry = fns.model(fns.params).initial(B)
    embed, action, first = _seq_inputs(seed=6)
    _, post, _ = fns.observe(fns.params, carry, embed, action, first.at[:, 0].set(True), jax.random.PRNGKey(9),
                             False)
    return jax.tree.map(lambda x: x[:, -1], post)


def _check_start_first(states, start):
    for name, x, s in zip(VTAState._fields, states, start):
        assert x.shape[:2] == (B, H + 1), name
        np.testing.assert_array_equal(x[:, 0], s, err_msg=name)


def test_imagine_shapes_and_prior_boundaries(fns, start):
    states, actions = fns.imagine(fns.params, start, jax.random.PRNGKey(10))
    _check_start_first(states, start)
    assert actions.shape == (B, H + 1, ACT)
    read = np.asarray(states.read)
    assert np.all((read == 0) | (read == 1))
    # Each step's boundary logit is the prior's, from the previous state and the action taken there.
    np.testing.assert_allclose(states.read_logit[:, 1], fns.apply(fns.params, _prior_read_logit, start, actions[:, 0]),
                               rtol=1e-5, atol=1e-6)
    assert not np.any(np.asarray(states.forced[:, 1:]))


@pytest.mark.parametrize("bias", [-1e3, 1e3])
def test_imagine_follows_prior_detector(fns, start, bias):
    params = fns.with_params(read_prior__bias=lambda b: jnp.full_like(b, bias))
    states, _ = fns.imagine(params, start, jax.random.PRNGKey(10))
    _check_start_first(states, start)
    read = np.asarray(states.read[:, 1:])
    if bias < 0:  # never READ: the abstract level is carried bit for bit over the horizon
        np.testing.assert_array_equal(read, 0.0)
        for t in range(1, H + 1):
            np.testing.assert_array_equal(states.c[:, t], start.c)
            np.testing.assert_array_equal(states.z[:, t], start.z)
            np.testing.assert_array_equal(states.z_logits[:, t], start.z_logits)
        assert not np.allclose(states.h[:, -1], start.h, atol=1e-3)
    else:  # always READ: c moves every step, z is drawn from the abstract prior
        np.testing.assert_array_equal(read, 1.0)
        dc = np.abs(np.diff(np.asarray(states.c), axis=1)).max(-1)
        assert np.all(dc > 1e-4)
        prior_z = fns.apply(params, _z_prior_logits, states.c[:, 1])
        np.testing.assert_allclose(states.z_logits[:, 1], prior_z, rtol=1e-5, atol=1e-5)


def _imagined_features(model, start, actions, key):
    """Features of the states an imagined rollout from `start` reaches under the given actions (B, H, A)."""
    state, keys = start, jax.random.split(key, actions.shape[1])
    out = []
    for t in range(actions.shape[1]):
        state = model.img_step(state, actions[:, t], keys[t])
        out.append(model.features(state))
    return jnp.stack(out, 1)


@pytest.mark.parametrize("reverted", [False, True])
def test_an_imagined_read_keeps_what_earlier_actions_did(fns, start, reverted):
    """A reward read off the state after a READ depends on the actions before it: the abstract transition takes
    the segment's last (h, s) and action. With those inputs cut (their branches' weights zero, the original
    action-free VTA), every READ erases the earlier actions: the gradient is exactly zero."""
    edits = {"read_prior__bias": lambda b: jnp.full_like(b, 1e3)}  # READ at every imagined step
    if reverted:
        for branch in (1, 2, 3):  # the inputs h, s and the action of the abstract cell
            edits[f"abstract_cell__in_inputs__{branch}__linear__kernel"] = jnp.zeros_like
    params = fns.with_params(**edits)
    actions = jax.nn.one_hot(jnp.array([[1, 3, 0, 2]] * B), ACT)
    head = jax.random.normal(jax.random.PRNGKey(3), (fns.model(params).feature_dim,))

    def reward_after(actions):
        features = _imagined_features(fns.model(params), start, actions, jax.random.PRNGKey(16))
        return jnp.sum(features[:, 3] @ head)  # a linear reward head on the state after the third READ

    grad = np.asarray(jax.jit(jax.grad(reward_after))(actions))
    reads = np.asarray(fns.imagine(params, start, jax.random.PRNGKey(16))[0].read[:, 1:])
    assert reads.all()
    if reverted:
        np.testing.assert_array_equal(grad[:, 0], 0.0)
        assert np.abs(grad[:, 3]).max() > 0  # the action of the last step still acts within its own step
    else:
        assert np.all(np.abs(grad[:, 0]).max(-1) > 1e-6)


def test_mode_boundaries_are_the_posterior_above_one_half(fns):
    """observe(mode=True): READ exactly where q > 0.5 (and at episode starts), with no boundary noise (the latents
    are still sampled, so another key gives other states and their own q)."""
    carry = _random_carry(17, seg_len=1)
    embed, action, first = _seq_inputs(seed=12, scale=2.0)
    first = first.at[1, 4].set(True)
    observe = jax.jit(lambda p, k: fns.model(p).observe(carry, embed, action, first, k, mode=True))
    _, post, _ = observe(fns.params, jax.random.PRNGKey(1))
    _, again, _ = observe(fns.params, jax.random.PRNGKey(2))
    for out in (post, again):
        expected = (np.asarray(out.read_logit) > 0) | np.asarray(first)
        np.testing.assert_array_equal(out.read, expected.astype(np.float32))
        assert 0 < expected.mean() < 1


# --- loss metrics -----------------------------------------------------------------------------------------

METRICS = ("boundary_ratio", "boundary_ratio_free", "forced_ratio", "boundary_entropy_post",
           "boundary_entropy_prior", "kl_boundary", "kl_abstract", "kl_obs", "mean_segment_length",
           "no_read_share", "all_read_share")


def _categorical_kl(p_logits, q_logits):
    """KL(p || q) of categoricals over the last axis, in float64."""
    log_p, log_q = (np.asarray(x, np.float64) for x in (p_logits, q_logits))
    log_p = log_p - np.logaddexp.reduce(log_p, -1, keepdims=True)
    log_q = log_q - np.logaddexp.reduce(log_q, -1, keepdims=True)
    return np.sum(np.exp(log_p) * (log_p - log_q), -1)


def _bern_entropy(logit):
    p = 1 / (1 + np.exp(-np.asarray(logit, np.float64)))
    return -(p * np.log(p) + (1 - p) * np.log(1 - p))


def test_loss_metrics_match_hand_computation(fns):
    carry = fns.model(fns.params).initial(B)
    embed, action, first = _seq_inputs(seed=7)
    first = first.at[:, 0].set(True)
    _, post, prior = fns.observe(fns.params, carry, embed, action, first, jax.random.PRNGKey(11), True)
    loss, metrics = fns.loss(fns.params, post, prior)
    for name in METRICS:
        assert name in metrics, name
        assert np.isfinite(metrics[name]), name
    assert np.isfinite(loss)
    read = np.asarray(post.read)
    np.testing.assert_allclose(metrics["boundary_ratio"], read.mean(), rtol=1e-6)
    # A designed boundary pattern: a row without READ, a row of all READ, two mixed rows.
    pattern = np.zeros((B, T), np.float32)
    pattern[1] = 1.0
    pattern[2, ::3] = 1.0
    pattern[3, [0, 5]] = 1.0
    forced = np.zeros((B, T), bool)
    forced[:, 0] = True
    forced[2, 3] = True
    designed = post._replace(read=jnp.asarray(pattern), forced=jnp.asarray(forced))
    loss, m = fns.loss(fns.params, designed, prior)
    hard = pattern > 0.5
    reads = max(pattern.sum(), 1.0)
    kl_z = _categorical_kl(post.z_logits, prior.z_logits).sum(-1)
    expected = {
        "boundary_ratio": pattern.mean(),
        "boundary_ratio_free": (hard & ~forced).mean(),
        "forced_ratio": forced.mean(),
        "no_read_share": 0.25,
        "all_read_share": 0.25,
        "mean_segment_length": pattern.size / reads,
        "kl_boundary": _kl(1 / (1 + np.exp(-np.asarray(post.read_logit, np.float64))),
                           1 / (1 + np.exp(-np.asarray(prior.read_logit, np.float64)))).mean(),
        "boundary_entropy_post": _bern_entropy(post.read_logit).mean(),
        "boundary_entropy_prior": _bern_entropy(prior.read_logit).mean(),
        "kl_abstract": (pattern * kl_z).sum() / reads,
        "kl_obs": _categorical_kl(post.s_logits, prior.s_logits).sum(-1).mean(),
    }
    for name, value in expected.items():
        np.testing.assert_allclose(m[name], value, rtol=1e-4, atol=1e-6, err_msg=name)


# --- precision and lookahead ------------------------------------------------------------------------------


def test_bf16_observe_and_loss_float32_and_finite():
    f = Fns(_build(dtype=jnp.bfloat16, precision="bf16"))
    carry = f.model(f.params).initial(B)
    embed, action, first = _seq_inputs(seed=8, scale=3.0)

    def run(p):
        model = f.model(p)
        _, post, prior = model.observe(carry, embed, action, first.at[:, 0].set(True), jax.random.PRNGKey(12),
                                       training=True)
        return model.loss(post, prior), post, prior

    (loss, metrics), post, prior = jax.jit(run)(f.params)
    for name, x in [("post.read_logit", post.read_logit), ("prior.read_logit", prior.read_logit),
                    ("post.s_logits", post.s_logits), ("post.z_logits", post.z_logits),
                    ("prior.s_logits", prior.s_logits), ("prior.z_logits", prior.z_logits),
                    ("post.read", post.read), ("loss", loss)]:
        assert x.dtype == jnp.float32, name
        assert np.all(np.isfinite(np.asarray(x))), name
    for name in METRICS + ("loss_rate",):
        assert metrics[name].dtype == jnp.float32, name
        assert np.isfinite(metrics[name]), name
    read = np.asarray(post.read)
    assert np.all((read == 0) | (read == 1))


def test_lookahead_posterior_sees_future_frames(fns):
    f = Fns(_build(vta_lookahead=2))
    with pytest.raises(config_lib.ConfigError, match="vta_lookahead"):
        config_lib.check_for_acting(_config(vta_lookahead=2))
    carry = f.model(f.params).initial(B)
    embed, action, first = _seq_inputs(seed=9)
    first = first.at[:, 0].set(True)
    key = jax.random.PRNGKey(13)
    t = 5
    near = embed.at[:, t + 1].add(3.0)  # inside the window of step t
    far = embed.at[:, t + 3].add(3.0)  # beyond it
    _, base, _ = f.observe(f.params, carry, embed, action, first, key, False)
    _, moved, _ = f.observe(f.params, carry, near, action, first, key, False)
    _, beyond, _ = f.observe(f.params, carry, far, action, first, key, False)
    assert np.all(np.abs(np.asarray(moved.read_logit[:, t] - base.read_logit[:, t])) > 1e-6)
    np.testing.assert_array_equal(beyond.read_logit[:, :t + 1], base.read_logit[:, :t + 1])
    # Causal (lookahead 0): nothing at or before t depends on the frame t + 1.
    carry0 = fns.model(fns.params).initial(B)
    _, base0, prior0 = fns.observe(fns.params, carry0, embed, action, first, key, False)
    _, moved0, prior0m = fns.observe(fns.params, carry0, near, action, first, key, False)
    for name, x, y in zip(VTAState._fields, base0, moved0):
        np.testing.assert_array_equal(x[:, :t + 1], y[:, :t + 1], err_msg=name)
    np.testing.assert_array_equal(prior0.read_logit[:, :t + 1], prior0m.read_logit[:, :t + 1])
    assert not np.allclose(base0.s_logits[:, t + 1], moved0.s_logits[:, t + 1])  # step t + 1 reads frame t + 1
