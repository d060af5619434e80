"""Optimisers: DreamerV3's LaProp with adaptive gradient clipping, the 2023 Adam variant, and skipping of
non-finite updates (both optimisers skip and count them; read the count with `skipped_updates`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

f32 = jnp.float32

# apply_if_finite gives up after this many consecutive non-finite updates; its counter saturates at the
# int32 maximum, so with this limit it never gives up.
_NEVER_GIVE_UP = int(jnp.iinfo(jnp.int32).max)


def _tensor_norm(x: jax.Array) -> jax.Array:
    """L2 norm of a whole tensor in float32, scaled by max |x| first so huge finite values do not overflow."""
    x = x.astype(f32)
    peak = jnp.max(jnp.abs(x))
    scale = jnp.where(peak > 0, peak, 1.0)
    return scale * jnp.sqrt(jnp.sum(jnp.square(x / scale)))


def clip_by_agc(agc: float = 0.3, floor: float = 1e-3) -> optax.GradientTransformation:
    """Adaptive gradient clipping per tensor: rescale each gradient g to norm <= agc * max(floor, ||p||).

    Norms are over the whole tensor (DreamerV3's rule). optax.adaptive_grad_clip differs: it is unit-wise, with
    norms per output unit (over all axes but the last) for kernels and per element for biases and scalars.
    Gradients already within the bound are returned unchanged (factor exactly 1).
    """

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("clip_by_agc needs the current params: call update(grads, state, params)")

        def clip(grad, param):
            upper = agc * jnp.maximum(floor, _tensor_norm(param))
            return (grad * (upper / jnp.maximum(upper, _tensor_norm(grad)))).astype(grad.dtype)

        return jax.tree.map(clip, updates, params), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def _warmup_schedule(learning_rate: float, warmup: int) -> optax.Schedule:
    """lr * min(1, n / warmup) for the n-th update counted from 0 (so the first update has lr 0); constant if 0."""
    if warmup <= 0:
        return optax.constant_schedule(learning_rate)
    return optax.linear_schedule(0.0, learning_rate, warmup)


def skip_nonfinite(inner: optax.GradientTransformation) -> optax.GradientTransformation:
    """Wrap `inner` so a gradient with any NaN/Inf yields a zero update and leaves inner's state untouched."""
    return optax.apply_if_finite(inner, max_consecutive_errors=_NEVER_GIVE_UP)


def skipped_updates(opt_state: optax.OptState) -> jax.Array:
    """Total skipped (non-finite) updates: the sum of `total_notfinite` over every skip wrapper in opt_state."""
    nodes = jax.tree.leaves(opt_state, is_leaf=lambda node: isinstance(node, optax.ApplyIfFiniteState))
    counters = [node.total_notfinite for node in nodes if isinstance(node, optax.ApplyIfFiniteState)]
    if not counters:
        raise ValueError("opt_state holds no skip_nonfinite wrapper; build the optimiser with laprop_agc or adam_2023")
    return sum(counters[1:], counters[0])


def laprop(
    learning_rate: float = 4e-5,
    warmup: int = 1000,
    agc: float = 0.3,
    beta2: float = 0.999,
    eps: float = 1e-20,
    momentum: float = 0.9,
    agc_floor: float = 1e-3,
) -> optax.GradientTransformation:
    """DreamerV3 (2024) optimiser without the NaN skip: AGC, then RMS scaling, then momentum (LaProp order), then
    warm-up lr.

    Per step: g <- agc_clip(g); nu <- beta2 nu + (1 - beta2) g^2; u = g / (sqrt(nu / (1 - beta2^t)) + eps);
    mu <- momentum mu + (1 - momentum) u; update = -lr_t * mu / (1 - momentum^t). No weight decay.
    """
    return optax.chain(
        clip_by_agc(agc, agc_floor),
        optax.scale_by_rms(decay=beta2, eps=eps, eps_in_sqrt=False, bias_correction=True),
        optax.ema(decay=momentum, debias=True),
        optax.scale_by_learning_rate(_warmup_schedule(learning_rate, warmup)),
    )


def laprop_agc(learning_rate: float = 4e-5, warmup: int = 1000, **settings) -> optax.GradientTransformation:
    """`laprop` that skips non-finite updates (the DreamerV3 2024 optimiser)."""
    return skip_nonfinite(laprop(learning_rate, warmup, **settings))


def adam_2023(learning_rate: float, eps: float, clip: float) -> optax.GradientTransformation:
    """DreamerV3 (2023) optimiser: global-norm clipping to `clip`, then Adam(lr, eps); skips NaNs.

    The 2023 settings: world model lr 1e-4, eps 1e-8, clip 1000; actor and critic lr 3e-5, eps 1e-5, clip 100.
    """
    return skip_nonfinite(optax.chain(optax.clip_by_global_norm(clip), optax.adam(learning_rate, eps=eps)))
