"""Optimiser checks: AGC alone, LaProp steps against a numpy reference, warm-up, NaN skipping, a quadratic."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dreamer_jax import optim

RNG = np.random.default_rng(0)


def _tree_equal(a, b):
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def _laprop_numpy(params, grads_seq, lr, warmup, agc=0.3, floor=1e-3, beta2=0.999, eps=1e-20, momentum=0.9):
    """LaProp + AGC written out in float64: the params after each update."""
    params = {k: np.asarray(v, np.float64) for k, v in params.items()}
    nu = {k: np.zeros_like(v) for k, v in params.items()}
    mu = {k: np.zeros_like(v) for k, v in params.items()}
    history = []
    for t, grads in enumerate(grads_seq, start=1):
        rate = lr if warmup == 0 else lr * min(1.0, (t - 1) / warmup)
        for k in params:
            g = np.asarray(grads[k], np.float64)
            upper = agc * max(floor, np.linalg.norm(params[k]))
            g = g * min(1.0, upper / np.linalg.norm(g))
            nu[k] = beta2 * nu[k] + (1 - beta2) * g**2
            u = g / (np.sqrt(nu[k] / (1 - beta2**t)) + eps)
            mu[k] = momentum * mu[k] + (1 - momentum) * u
            params[k] = params[k] - rate * mu[k] / (1 - momentum**t)
        history.append({k: v.copy() for k, v in params.items()})
    return history


def test_agc_clips_per_tensor():
    params = {
        "big": np.array([3.0, 4.0], np.float32),  # ||p|| = 5, bound 1.5
        "small": np.array([3.0, 4.0], np.float32),
        "zero": np.zeros(3, np.float32),  # bound 0.3 * floor
        "huge": np.array([[1.0, 0.0], [0.0, 1.0]], np.float32),  # bound 0.3 * sqrt(2)
    }
    grads = {
        "big": np.array([30.0, -40.0], np.float32),
        "small": np.array([0.3, -0.4], np.float32),
        "zero": np.array([1.0, 2.0, -2.0], np.float32),
        "huge": np.array([[1e30, 0.0], [1.0, -1e30]], np.float32),  # squares overflow float32
    }
    clip = optim.clip_by_agc(0.3, 1e-3)
    out, _ = jax.jit(clip.update)(grads, clip.init(params), params)
    norms = {k: np.linalg.norm(np.asarray(v, np.float64)) for k, v in out.items()}
    np.testing.assert_allclose(norms["big"], 1.5, rtol=1e-6)
    np.testing.assert_allclose(out["big"], [0.9, -1.2], rtol=1e-6)
    np.testing.assert_array_equal(out["small"], grads["small"])
    np.testing.assert_allclose(norms["zero"], 3e-4, rtol=1e-6)
    np.testing.assert_allclose(norms["huge"], 0.3 * np.sqrt(2.0), rtol=1e-6)
    # One factor for the whole tensor (not optax's unit-wise rule): the direction is kept.
    np.testing.assert_allclose(out["huge"], 0.3 * np.array([[1.0, 0.0], [1e-30, -1.0]]), rtol=1e-6, atol=1e-36)
    with pytest.raises(ValueError, match="params"):
        clip.update(grads, clip.init(params))


def test_first_laprop_update_by_hand():
    params = {"w": np.array([3.0, 4.0], np.float32)}
    grads = {"w": np.array([30.0, -40.0], np.float32)}
    opt = optim.laprop_agc(learning_rate=0.5, warmup=0)
    updates, _ = jax.jit(opt.update)(grads, opt.init(params), params)
    # Clipped to [0.9, -1.2]; the bias-corrected RMS is |g|, so u = sign(g); bias-corrected momentum of one step is u.
    # (rtol 2e-5: the float32 bias correction 1 - 0.999 carries a relative error of about 1e-5.)
    np.testing.assert_allclose(updates["w"], [-0.5, 0.5], rtol=2e-5)


def test_laprop_matches_numpy_reference():
    params = {
        "a": RNG.standard_normal((3, 4)).astype(np.float32),
        "b": np.zeros(4, np.float32),
        "c": np.array([5.0, -2.0], np.float32),
    }
    scales = {"a": 10.0, "b": 1.0, "c": 0.01}  # "a" clipped, "b" at the floor, "c" untouched
    grads_seq = [
        {k: (scales[k] * RNG.standard_normal(v.shape)).astype(np.float32) for k, v in params.items()} for _ in range(4)
    ]
    expected = _laprop_numpy(params, grads_seq, lr=0.1, warmup=2)
    opt = optim.laprop_agc(learning_rate=0.1, warmup=2)

    @jax.jit
    def step(params, state, grads):
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    state = opt.init(params)
    current = params
    for grads, expect in zip(grads_seq, expected):
        current, state = step(current, state, grads)
        for k in params:
            np.testing.assert_allclose(current[k], expect[k], rtol=1e-5, atol=1e-6)
    # Warm-up 2: the first update has learning rate 0.
    np.testing.assert_allclose(expected[0]["c"], params["c"])


def test_warmup_is_linear():
    warmup, lr = 8, 1e-3
    opt = optim.laprop_agc(learning_rate=lr, warmup=warmup)
    params = {"w": np.full(4, 100.0, np.float32)}  # large params: AGC never clips
    grads = {"w": np.array([1.0, -2.0, 3.0, -4.0], np.float32)}

    def body(state, _):
        updates, state = opt.update(grads, state, params)
        return state, updates["w"]

    _, updates = jax.jit(lambda s: jax.lax.scan(body, s, None, length=12))(opt.init(params))
    # A constant gradient gives u = sign(g) every step, so each update is -lr_n * sign(g).
    sizes = np.abs(np.asarray(updates)).max(-1)
    np.testing.assert_allclose(sizes, lr * np.minimum(1.0, np.arange(12) / warmup), rtol=1e-5, atol=1e-12)
    np.testing.assert_allclose(np.asarray(updates)[-1], -lr * np.sign(grads["w"]), rtol=1e-5)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nonfinite_update_is_skipped(bad):
    opt = optim.laprop_agc(learning_rate=0.1, warmup=0)
    params = {"a": np.array([1.0, -2.0], np.float32), "b": np.ones((2, 2), np.float32)}
    good = {"a": np.array([0.5, 0.5], np.float32), "b": np.full((2, 2), 0.1, np.float32)}
    broken = {"a": np.array([0.5, bad], np.float32), "b": good["b"]}

    @jax.jit
    def step(params, state, grads):
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    state0 = opt.init(params)
    assert int(optim.skipped_updates(state0)) == 0
    after_bad, state1 = step(params, state0, broken)
    assert _tree_equal(after_bad, params)
    assert _tree_equal(state1.inner_state, state0.inner_state)
    assert int(optim.skipped_updates(state1)) == 1
    # Training continues as if the bad step never happened.
    after_good, state2 = step(after_bad, state1, good)
    fresh, _ = step(params, state0, good)
    assert _tree_equal(after_good, fresh) and not _tree_equal(after_good, params)
    assert int(optim.skipped_updates(state2)) == 1
    _, state3 = step(after_good, state2, broken)
    assert int(optim.skipped_updates(state3)) == 2


def test_skipped_updates_sums_nested_states():
    opt = optim.adam_2023(1e-4, 1e-8, 1000.0)
    params = {"w": np.ones(2, np.float32)}
    _, state = opt.update({"w": np.array([np.nan, 0.0], np.float32)}, opt.init(params), params)
    assert int(optim.skipped_updates({"model": state, "actor": state})) == 2
    with pytest.raises(ValueError, match="skip_nonfinite"):
        optim.skipped_updates(optax.adam(1e-3).init(params))


@pytest.mark.parametrize(
    "make_opt",
    [
        pytest.param(lambda: optim.laprop_agc(learning_rate=0.02, warmup=20), id="laprop"),
        pytest.param(lambda: optim.adam_2023(0.05, 1e-8, 1000.0), id="adam_2023"),
    ],
)
def test_minimises_quadratic(make_opt):
    opt = make_opt()
    target = {"w": np.array([[1.0, -2.0], [0.5, 3.0]], np.float32), "b": np.array([-1.0], np.float32)}
    params = {"w": np.full((2, 2), 0.1, np.float32), "b": np.zeros(1, np.float32)}

    def loss(p):
        return sum(jnp.sum((p[k] - target[k]) ** 2) for k in p)

    def body(carry, _):
        p, state = carry
        updates, state = opt.update(jax.grad(loss)(p), state, p)
        return (optax.apply_updates(p, updates), state), None

    (final, state), _ = jax.jit(lambda c: jax.lax.scan(body, c, None, length=400))((params, opt.init(params)))
    assert float(loss(final)) < 1e-3 * float(loss(params))
    assert int(optim.skipped_updates(state)) == 0


@pytest.mark.parametrize("scale", [1.0, 0.25])
def test_actor_and_critic_step_at_ac_lr_scale_times_the_world_models(scale):
    from dreamer_jax.config import make
    from dreamer_jax.train import make_optimizer

    params = {name: {"w": np.array([3.0, 4.0], np.float32)} for name in ("encoder", "actor", "critic")}
    grads = {name: {"w": np.array([0.3, -0.4], np.float32)} for name in params}
    opt = make_optimizer(make(lr=0.5, warmup=0, ac_lr_scale=scale))
    updates, _ = jax.jit(opt.update)(grads, opt.init(params), params)
    # The first LaProp step is -lr sign(g) per parameter (as above), in each part at its own lr.
    np.testing.assert_allclose(updates["encoder"]["w"], [-0.5, 0.5], rtol=2e-5)
    for name in ("actor", "critic"):
        np.testing.assert_allclose(updates[name]["w"], [-0.5 * scale, 0.5 * scale], rtol=2e-5)


def test_a_non_finite_gradient_in_one_part_skips_the_whole_update_once():
    from dreamer_jax.config import make
    from dreamer_jax.train import make_optimizer

    params = {name: {"w": np.array([3.0, 4.0], np.float32)} for name in ("encoder", "actor", "critic")}
    grads = {name: {"w": np.array([0.3, -0.4], np.float32)} for name in params}
    grads["critic"]["w"] = np.array([np.nan, 1.0], np.float32)
    opt = make_optimizer(make(lr=0.5, warmup=0, ac_lr_scale=0.5))
    updates, state = jax.jit(opt.update)(grads, opt.init(params), params)
    assert all(not np.any(leaf) for leaf in jax.tree.leaves(updates))
    assert int(optim.skipped_updates(state)) == 1
