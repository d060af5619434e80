"""The CNN's fast paths equal their plain definitions: reshape max pooling, upsampling convs by output phase, and
the learner's compiler options."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from dreamer_jax.networks import Decoder, Encoder, max_pool2, upsample_conv
from dreamer_jax.train import COMPILER_OPTIONS


def test_max_pool2_equals_a_pooling_window():
    x = jax.random.normal(jax.random.PRNGKey(0), (3, 8, 8, 5))
    np.testing.assert_array_equal(max_pool2(x), nnx.max_pool(x, (2, 2), strides=(2, 2)))


@pytest.mark.parametrize("dtype, tol", [(jnp.float32, 1e-5), (jnp.bfloat16, 5e-2)])
def test_upsample_conv_equals_nearest_upsampling_then_the_conv(dtype, tol):
    conv = nnx.Conv(6, 4, (5, 5), dtype=dtype, rngs=nnx.Rngs(0))
    conv.bias[...] = jax.random.normal(jax.random.PRNGKey(2), (4,))
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 5, 7, 6))
    reference = conv(jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2))
    fast = upsample_conv(conv, x)
    assert fast.shape == (2, 10, 14, 4) and fast.dtype == reference.dtype
    np.testing.assert_allclose(np.asarray(fast, np.float32), np.asarray(reference, np.float32), atol=tol, rtol=tol)


def test_upsample_conv_gradients_match():
    conv = nnx.Conv(3, 2, (5, 5), rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.PRNGKey(1), (1, 4, 4, 3))
    graphdef, params = nnx.split(conv)

    def loss(params, fast):
        c = nnx.merge(graphdef, params)
        y = upsample_conv(c, x) if fast else c(jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2))
        return jnp.sum(jnp.sin(y))

    for a, b in zip(jax.tree.leaves(jax.grad(loss)(params, True)), jax.tree.leaves(jax.grad(loss)(params, False))):
        np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)


def test_the_learner_compiler_options_change_kernels_not_gradients():
    """The learner compiles without YNNPACK on the CPU (train.COMPILER_OPTIONS): XLA's default hands these
    convolutions to it, and the encoder's and decoder's gradients agree either way to float tolerance."""
    encoder = Encoder(8, 16, dtype=jnp.float32, rngs=nnx.Rngs(0))
    decoder = Decoder(32, 12, 8, 8, 4, 16, dtype=jnp.float32, rngs=nnx.Rngs(1))
    graphdef, params = nnx.split((encoder, decoder))
    image = jax.random.randint(jax.random.PRNGKey(2), (64, 16, 16, 3), 0, 256).astype(jnp.uint8)
    stoch = jax.random.normal(jax.random.PRNGKey(3), (64, 12))

    def loss(params):
        enc, dec = nnx.merge(graphdef, params)
        embed = enc(image)
        return jnp.sum(jnp.square(dec(embed[:, :32], stoch) - image / 255.0))

    default, options = jax.jit(jax.grad(loss)), jax.jit(jax.grad(loss), compiler_options=COMPILER_OPTIONS)
    assert "ynn" in default.lower(params).compile().as_text()
    assert "ynn" not in options.lower(params).compile().as_text()
    for a, b in zip(jax.tree.leaves(options(params)), jax.tree.leaves(default(params)), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_the_encoder_takes_its_own_kernel_and_channels_and_the_decoder_keeps_its_own():
    """--enc_kernel and --enc_depth shape the encoder alone: a 3x3 SAME conv at half the channels gives a 4 x 4 map
    of half the embedding, equal to the conv written out by hand; the decoder stays 5x5 at --depth."""
    from dreamer_jax import config as cfg
    from dreamer_jax.agent import Agent

    agent = Agent(cfg.make("debug", depth=8, enc_depth=4, enc_kernel=3, precision="fp32"), 5, nnx.Rngs(0))
    assert [conv.kernel.shape for conv in agent.encoder.convs] == [(3, 3, 3, 16), (3, 3, 16, 16)]
    assert agent.encoder.out_dim == 4 * 4 * 16
    assert agent.dynamics.post_mlp.layers[0].linear.in_features == 64 + agent.encoder.out_dim  # deter + embed
    assert {conv.kernel.shape[:2] for conv in agent.decoder.convs} == {(5, 5)}
    assert agent.decoder.convs[0].kernel.shape[2] == 4 * 8
    image = jax.random.randint(jax.random.PRNGKey(1), (2, 16, 16, 3), 0, 256).astype(jnp.uint8)
    conv = agent.encoder.convs[0]
    x = jnp.pad(image / 255.0 - 0.5, ((0, 0), (1, 1), (1, 1), (0, 0)))
    by_hand = sum(x[:, i:i + 16, j:j + 16] @ conv.kernel[i, j] for i in range(3) for j in range(3)) + conv.bias
    np.testing.assert_allclose(conv((image / 255.0 - 0.5).astype(jnp.float32)), by_hand, atol=1e-5)
