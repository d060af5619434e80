"""Closed-form checks of the distributions module (inputs built in numpy, maths mostly under one jit per test)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dreamer_jax import distributions as D

WRAPS = [pytest.param(lambda f: f, id="nojit"), pytest.param(jax.jit, id="jit")]
RNG = np.random.default_rng(0)


def _log_sigmoid64(a):
    return -np.logaddexp(0.0, -np.asarray(a, np.float64))


def _logit(p):
    return np.float32(np.log(p / (1 - p)))


def _categorical_kl(p_logits, q_logits):
    return D.categorical(p_logits).kl_divergence(D.categorical(q_logits))


def _bernoulli_kl(p_logit, q_logit):
    return D.bernoulli(p_logit).kl_divergence(D.bernoulli(q_logit))


# --- symlog / symexp / soft_clip ---------------------------------------------


def test_symlog_symexp_soft_clip():
    x = np.concatenate([[0.0, 1e-6, -1e-6, 1.0, -1.0, 1e6, -1e6, 3e7], np.linspace(-100, 100, 101)]).astype(np.float32)
    round_trip, log, exp0, clipped = jax.jit(
        lambda v: (D.symexp(D.symlog(v)), D.symlog(v), D.symexp(v[:1]), D.soft_clip(v, 2.0))
    )(x)
    np.testing.assert_allclose(round_trip, x, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(log, np.sign(x) * np.log1p(np.abs(x)), rtol=1e-6)
    assert log[0] == 0.0 and exp0[0] == 0.0
    np.testing.assert_allclose(clipped, 2.0 * np.tanh(x / 2.0), rtol=1e-6)
    assert np.max(np.abs(clipped)) <= 2.0


# --- two-hot -----------------------------------------------------------------


def test_twohot_bins():
    bins = np.asarray(D.twohot_bins())
    assert bins.shape == (255,) and bins.dtype == np.float32
    assert bins[127] == 0.0 and not np.signbit(bins[127])
    assert np.all(np.diff(bins) > 0)
    np.testing.assert_array_equal(bins, -bins[::-1])
    np.testing.assert_allclose(bins[-1], np.exp(20.0) - 1.0, rtol=1e-6)
    np.testing.assert_allclose(bins[:128], -np.expm1(-np.linspace(-20, 0, 128)), rtol=1e-6)
    assert D.twohot_bins(5).shape == (5,)
    with pytest.raises(ValueError, match="odd"):
        D.twohot_bins(256)


def test_twohot_encode_weights():
    bins = np.array([-2.0, -1.0, 0.0, 1.0, 2.0], np.float32)
    x = np.array([0.25, -1.0, 2.0, 7.0, -9.0, 0.0, 1.75], np.float32)
    expect = np.array(
        [
            [0, 0, 0.75, 0.25, 0],
            [0, 1, 0, 0, 0],
            [0, 0, 0, 0, 1],
            [0, 0, 0, 0, 1],
            [1, 0, 0, 0, 0],
            [0, 0, 1, 0, 0],
            [0, 0, 0, 0.25, 0.75],
        ],
        np.float32,
    )
    np.testing.assert_allclose(jax.jit(D.twohot_encode)(x, bins), expect, atol=1e-7)


def test_twohot_round_trip():
    bins = np.asarray(D.twohot_bins())
    on_bins = bins[::7]
    between = (0.5 * (bins[1:] + bins[:-1]))[::5]
    x = np.concatenate([on_bins, between, [0.0, -0.3, 0.3, 1.0, -1.0, 42.0, -1234.5]]).astype(np.float32)

    @jax.jit
    def decode(v):
        return D.TwoHot(logits=jnp.log(D.twohot_encode(v, bins)), bins=bins).mean()

    np.testing.assert_allclose(decode(x), x, rtol=1e-5, atol=1e-6)
    # Beyond the edges the value saturates at the edge bin.
    np.testing.assert_allclose(decode(np.array([1e10, -1e10], np.float32)), [bins[-1], bins[0]], rtol=1e-6)


@pytest.mark.parametrize("wrap", WRAPS)
def test_twohot_zero_and_uniform_mean_is_exactly_zero(wrap):
    mean = wrap(lambda logits: D.TwoHot(logits=logits).mean())
    assert np.all(np.asarray(mean(np.zeros((4, 3, 255), np.float32))) == 0.0)
    assert np.all(np.asarray(mean(np.full((2, 255), 3.7, np.float32))) == 0.0)
    assert np.all(np.asarray(mean(jnp.zeros((2, 255), jnp.bfloat16))) == 0.0)


def test_twohot_log_prob_maximised_by_encoding():
    bins = D.twohot_bins()
    target = np.array([3.3, -0.01, 250.0], np.float32)
    noise = 0.1 * RNG.standard_normal((20, 3, 255)).astype(np.float32)

    @jax.jit
    def run(target, noise):
        encoding = D.twohot_encode(target, bins)
        best_logits = jnp.log(encoding + 1e-9)
        best = D.TwoHot(logits=best_logits, bins=bins).log_prob(target)
        others = D.TwoHot(logits=best_logits + noise, bins=bins).log_prob(jnp.broadcast_to(target, (20, 3)))
        grad = jax.grad(lambda lg: D.TwoHot(logits=lg, bins=bins).log_prob(target).sum())(jnp.zeros((3, 255)))
        return encoding, best, others, grad

    encoding, best, others, grad = map(np.asarray, run(target, noise))
    # The optimum of the cross-entropy is -entropy(encoding), and any other logits score lower.
    np.testing.assert_allclose(best, np.sum(encoding * np.log(np.maximum(encoding, 1e-30)), -1), atol=1e-5)
    assert np.all(others < best)
    # The gradient with respect to the logits is encoding - softmax.
    np.testing.assert_allclose(grad, encoding - 1.0 / 255, atol=1e-6)


# --- categorical latents -------------------------------------------------------


@pytest.mark.parametrize("wrap", WRAPS)
def test_unimix_bounds(wrap):
    unimix, classes = 0.01, 16
    logits = np.concatenate(
        [
            10 * RNG.standard_normal((8, 4, classes)),
            np.full((1, 4, classes), -1e4),
            np.full((1, 4, classes), 1e4),
        ]
    ).astype(np.float32)
    logits[-2, :, 3] = 1e4
    mix = wrap(lambda lg: (D.unimix_logits(lg, unimix), D.unimix_logits(lg.astype(jnp.bfloat16), unimix)))
    for mixed in mix(logits):
        assert mixed.dtype == jnp.float32
        assert np.all(np.isfinite(np.asarray(mixed)))
        probs = np.exp(np.asarray(mixed, np.float64))
        assert np.all(probs >= unimix / classes * (1 - 1e-5))
        assert np.all(probs <= (1 - unimix + unimix / classes) * (1 + 1e-5))
        np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
        np.testing.assert_allclose(probs[-2, :, 3], 1 - unimix + unimix / classes, rtol=1e-6)
        np.testing.assert_allclose(probs[-1], 1 / classes, rtol=1e-6)


def test_unimix_zero_is_log_softmax():
    logits = RNG.standard_normal((3, 5)).astype(np.float32)
    mixed, reference = jax.jit(lambda lg: (D.unimix_logits(lg, 0.0), jax.nn.log_softmax(lg)))(logits)
    np.testing.assert_allclose(mixed, reference, rtol=1e-6)


@pytest.mark.parametrize("wrap", WRAPS)
def test_sample_onehot_straight_through(wrap):
    logits = RNG.standard_normal((6, 4, 5)).astype(np.float32)
    weights = RNG.standard_normal((6, 4, 5)).astype(np.float32)
    key = jax.random.PRNGKey(6)

    def run(lg):
        sample, vjp = jax.vjp(lambda x: D.categorical(x).sample(seed=key), lg)
        _, vjp_soft = jax.vjp(lambda x: jax.nn.softmax(x, axis=-1), lg)
        return sample, vjp(weights)[0], vjp_soft(weights)[0]

    sample, grad_st, grad_soft = map(np.asarray, wrap(run)(logits))
    assert sample.dtype == np.float32
    # Exactly the one-hot vector of the index jax.random.categorical draws (the straight-through bracket is 0).
    index = jax.random.categorical(key, jax.nn.log_softmax(logits))
    np.testing.assert_array_equal(sample, np.asarray(jax.nn.one_hot(index, 5, dtype=jnp.float32)))
    np.testing.assert_allclose(grad_st, grad_soft, rtol=1e-6, atol=1e-7)


def test_sample_onehot_frequencies():
    logits = np.broadcast_to(np.log(np.array([0.1, 0.2, 0.7], np.float32)), (20000, 3))
    samples = jax.jit(lambda key, lg: D.categorical(lg).sample(seed=key))(jax.random.PRNGKey(7), logits)
    np.testing.assert_allclose(np.asarray(samples).mean(0), [0.1, 0.2, 0.7], atol=0.015)


def test_categorical_kl_and_entropy():
    p = np.array([0.2, 0.3, 0.5])
    q = np.array([0.6, 0.3, 0.1])
    expect_kl = 0.2 * np.log(0.2 / 0.6) + 0.3 * np.log(0.3 / 0.3) + 0.5 * np.log(0.5 / 0.1)
    logits = (3 * RNG.standard_normal((2, 50, 32, 8))).astype(np.float32)

    @jax.jit
    def run(lp, lq, logits):
        bf16 = logits.astype(jnp.bfloat16)
        return dict(
            kl=_categorical_kl(lp + 3.0, lq),  # logits are defined up to a constant
            entropy=D.categorical(lp).entropy(),
            entropy_uniform=D.categorical(jnp.zeros((2, 7))).entropy(),
            kl_same=_categorical_kl(logits[0], logits[0]),
            kl_random=_categorical_kl(logits[0], logits[1]),
            kl_bf16=_categorical_kl(bf16[0], bf16[1]),
            kl_extreme=_categorical_kl(jnp.array([1e4, -1e4]), jnp.array([-1e4, 1e4])),
        )

    out = run(np.log(p).astype(np.float32), np.log(q).astype(np.float32), logits)
    np.testing.assert_allclose(out["kl"], expect_kl, rtol=1e-5)
    np.testing.assert_allclose(out["entropy"], -np.sum(p * np.log(p)), rtol=1e-6)
    np.testing.assert_allclose(out["entropy_uniform"], np.log(7.0), rtol=1e-6)
    assert np.all(np.asarray(out["kl_same"]) == 0.0)
    assert out["kl_random"].shape == (50, 32) and np.all(np.asarray(out["kl_random"]) >= 0.0)
    assert out["kl_bf16"].dtype == jnp.float32
    np.testing.assert_allclose(out["kl_extreme"], 2e4, rtol=1e-6)


# --- Bernoulli ------------------------------------------------------------------


def test_bernoulli_kl_closed_form():
    p, q = 0.3, 0.6
    expect = p * np.log(p / q) + (1 - p) * np.log((1 - p) / (1 - q))  # = 0.3 ln 0.5 + 0.7 ln 1.75
    kl, kl_same = jax.jit(lambda a, b: (_bernoulli_kl(a, b), _bernoulli_kl(a, a)))(_logit(p), _logit(q))
    np.testing.assert_allclose(kl, expect, rtol=1e-5)
    np.testing.assert_allclose(expect, 0.3 * np.log(0.5) + 0.7 * np.log(1.75), rtol=1e-12)
    np.testing.assert_allclose(expect, 0.1837869, rtol=1e-6)
    assert kl_same == 0.0


@pytest.mark.parametrize("wrap", WRAPS)
def test_bernoulli_kl_extreme_logits(wrap):
    a = np.array([50.0, -50.0, 50.0, 1e4, -1e4, 1e4, 30.0, 0.0], np.float32)
    b = np.array([-50.0, 50.0, 49.0, -1e4, 1e4, 1e4, 0.0, 1e4], np.float32)
    kl, grads = wrap(jax.value_and_grad(lambda x, y: _bernoulli_kl(x, y).sum(), argnums=(0, 1)))(a, b)
    kl = np.asarray(wrap(_bernoulli_kl)(a, b))
    lp1, lp0, lq1, lq0 = _log_sigmoid64(a), _log_sigmoid64(-a), _log_sigmoid64(b), _log_sigmoid64(-b)
    expect = np.exp(lp1) * (lp1 - lq1) + np.exp(lp0) * (lp0 - lq0)
    assert np.all(np.isfinite(kl)) and np.all(kl >= 0)
    np.testing.assert_allclose(kl, expect, rtol=1e-5, atol=1e-12)
    np.testing.assert_allclose(kl[[0, 1, 3, 4]], [50.0, 50.0, 1e4, 1e4], rtol=1e-6)
    assert all(np.all(np.isfinite(np.asarray(g))) for g in grads)


def test_bernoulli_entropy_and_log_prob():
    c = 1 - 1 / 333  # a soft target, as the continue head uses
    ps = np.array([0.5, 0.3, 0.999])
    logits = np.concatenate([_logit(ps), [1e4, -1e4, 50.0]]).astype(np.float32)
    labels = np.array([1.0, 0.0, c, 0.0, 1.0, 0.0], np.float32)
    entropy, log_prob = jax.jit(lambda lg, x: (D.bernoulli(lg).entropy(), D.bernoulli(lg).log_prob(x)))(logits, labels)
    expect_entropy = -(ps * np.log(ps) + (1 - ps) * np.log(1 - ps))
    expect_log_prob = labels[:3] * np.log(ps) + (1 - labels[:3]) * np.log(1 - ps)
    np.testing.assert_allclose(entropy[:3], expect_entropy, rtol=1e-4)
    np.testing.assert_allclose(log_prob[:3], expect_log_prob, rtol=1e-4)
    # Extreme logits: exact limits, and H(sigmoid(50)) = 51 e^-50 to first order.
    np.testing.assert_allclose(entropy[3:], [0.0, 0.0, 51.0 * np.exp(-50.0)], rtol=1e-4, atol=1e-30)
    np.testing.assert_allclose(log_prob[3:], [-1e4, -1e4, -50.0], rtol=1e-6)
    grads = jax.jit(jax.grad(lambda lg: (D.bernoulli(lg).entropy() + D.bernoulli(lg).log_prob(labels)).sum()))(logits)
    assert np.all(np.isfinite(np.asarray(grads)))


def test_twohot_nan_target_gives_nan_not_a_finite_loss():
    encoding = D.twohot_encode(jnp.array([jnp.nan, 1.0]), D.twohot_bins())
    assert jnp.isnan(encoding[0]).all() and jnp.isfinite(encoding[1]).all()
    assert jnp.isnan(D.TwoHot(logits=jnp.zeros(255)).log_prob(jnp.float32(jnp.nan)))
