"""Network building blocks of DreamerV3: RMSNorm MLPs, block-diagonal linears, the CNN encoder and decoder.

Modules hold parameters only (Flax NNX); `dtype` is the compute dtype (bfloat16 or float32),
parameters stay float32. Heads return float32 logits.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

IMAGE_SIZE = 64
CNN_MULTS = (2, 3, 4, 4)  # channels per stage, times `depth`
MIN_RES = 4  # the encoder pools 64 -> 4; the decoder starts from 4 x 4


class Dense(nnx.Module):
    """Linear -> RMSNorm -> SiLU, the unit every DreamerV3 MLP is made of."""

    def __init__(self, din: int, dout: int, *, dtype, rngs: nnx.Rngs):
        self.linear = nnx.Linear(din, dout, use_bias=False, dtype=dtype, rngs=rngs)
        self.norm = nnx.RMSNorm(dout, dtype=dtype, rngs=rngs)

    def __call__(self, x):
        return jax.nn.silu(self.norm(self.linear(x)))


class MLP(nnx.Module):
    """`layers` Dense blocks of `units` each."""

    def __init__(self, din: int, units: int, layers: int, *, dtype, rngs: nnx.Rngs):
        dims = [din] + [units] * layers
        self.layers = nnx.List([Dense(a, b, dtype=dtype, rngs=rngs) for a, b in zip(dims[:-1], dims[1:])])

    def __call__(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


class BlockLinear(nnx.Module):
    """Block-diagonal linear layer: `blocks` independent linears on equal slices of the last axis.

    Takes (..., blocks, din) and returns (..., blocks, dout).
    """

    def __init__(self, din: int, dout: int, blocks: int, *, dtype, rngs: nnx.Rngs):
        scale = 1.0 / jnp.sqrt(din)
        self.kernel = nnx.Param(jax.random.truncated_normal(rngs.params(), -2, 2, (blocks, din, dout)) * scale)
        self.bias = nnx.Param(jnp.zeros((blocks, dout)))
        self.dtype = dtype

    def __call__(self, x):
        y = jnp.einsum("...gi,gio->...go", x.astype(self.dtype), self.kernel[...].astype(self.dtype))
        return y + self.bias[...].astype(self.dtype)


class Head(nnx.Module):
    """MLP followed by a float32 linear output; zero-initialised output when `zero_init`."""

    def __init__(self, din: int, dout: int, units: int, layers: int, *, dtype, rngs: nnx.Rngs,
                 zero_init: bool = False, out_scale: float = 1.0):
        self.mlp = MLP(din, units, layers, dtype=dtype, rngs=rngs)
        init = nnx.initializers.zeros if zero_init else nnx.initializers.variance_scaling(
            out_scale, "fan_avg", "truncated_normal")
        self.out = nnx.Linear(units if layers else din, dout, kernel_init=init, dtype=jnp.float32, rngs=rngs)

    def __call__(self, x):
        return self.out(self.mlp(x).astype(jnp.float32))


def max_pool2(x):
    """2 x 2 max pooling with stride 2 as a reshape and a max, whose gradient XLA:CPU runs far faster than the
    select-and-scatter of a pooling window."""
    n, h, w, c = x.shape
    return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


# Nearest-x2 upsampling then a 5-tap filter equals, on each output phase p (even or odd row or column), a
# 3-tap filter on the small map: row o of PHASE_TAPS[p] sums the taps that read small-map offset o - 1.
PHASE_TAPS = np.array([[[1, 1, 0, 0, 0], [0, 0, 1, 1, 0], [0, 0, 0, 0, 1]],
                       [[1, 0, 0, 0, 0], [0, 1, 1, 0, 0], [0, 0, 0, 1, 1]]], np.float32)


def upsample_conv(conv: nnx.Conv, x):
    """`conv(nearest_upsample_x2(x))` for a 5 x 5 SAME conv, computed as four 3 x 3 convs on the small map
    (one per output phase) and interleaved: the same result with 9/25 of the multiply-adds."""
    kernel = conv.kernel[...]
    phases = jnp.einsum("pay,qbx,yxio->abipqo", PHASE_TAPS, PHASE_TAPS, kernel)  # (3, 3, in, 2, 2, out)
    k_in, k_out = kernel.shape[2:]
    phases = phases.reshape(3, 3, k_in, 4 * k_out).astype(conv.dtype)
    y = jax.lax.conv_general_dilated(x.astype(conv.dtype), phases, (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    n, h, w, _ = y.shape
    y = y.reshape(n, h, w, 2, 2, k_out).transpose(0, 1, 3, 2, 4, 5).reshape(n, 2 * h, 2 * w, k_out)
    return y + conv.bias[...].astype(conv.dtype)


class Encoder(nnx.Module):
    """uint8 (..., 64, 64, 3) images -> flat embedding, by four Conv5 -> maxpool -> RMSNorm -> SiLU stages."""

    def __init__(self, depth: int, *, dtype, rngs: nnx.Rngs):
        chans = [3] + [depth * m for m in CNN_MULTS]
        self.convs = nnx.List([nnx.Conv(a, b, (5, 5), dtype=dtype, rngs=rngs) for a, b in zip(chans[:-1], chans[1:])])
        self.norms = nnx.List([nnx.RMSNorm(c, dtype=dtype, rngs=rngs) for c in chans[1:]])
        self.dtype = dtype
        self.out_dim = MIN_RES * MIN_RES * chans[-1]

    def __call__(self, image):
        lead = image.shape[:-3]
        x = (image.astype(self.dtype) / 255.0 - 0.5).reshape((-1,) + image.shape[-3:])
        for conv, norm in zip(self.convs, self.norms):
            x = max_pool2(conv(x))
            x = jax.nn.silu(norm(x))
        return x.reshape(lead + (-1,))


class Decoder(nnx.Module):
    """Features (h, flat z) -> image in [0, 1]: a 4x4 map from both, then nearest-x2 upsampling convs."""

    def __init__(self, deter: int, stoch_dim: int, depth: int, units: int, blocks: int, *, dtype, rngs: nnx.Rngs):
        chans = [depth * m for m in reversed(CNN_MULTS)]  # 4x4 map first
        cells = MIN_RES * MIN_RES * chans[0]
        if cells % blocks:
            raise ValueError(f"decoder map {cells} must divide by blocks={blocks}")
        self.from_deter = BlockLinear(deter // blocks, cells // blocks, blocks, dtype=dtype, rngs=rngs)
        self.from_stoch = nnx.Sequential(
            nnx.Linear(stoch_dim, units, dtype=dtype, rngs=rngs),
            Dense(units, 2 * units, dtype=dtype, rngs=rngs),
            nnx.Linear(2 * units, cells, dtype=dtype, rngs=rngs),
        )
        self.norm = nnx.RMSNorm(chans[0], dtype=dtype, rngs=rngs)
        outs = chans[1:] + [3]
        self.convs = nnx.List([nnx.Conv(a, b, (5, 5), dtype=dtype, rngs=rngs) for a, b in zip(chans, outs)])
        self.norms = nnx.List([nnx.RMSNorm(c, dtype=dtype, rngs=rngs) for c in chans[1:]])
        self.blocks = blocks
        self.map_shape = (MIN_RES, MIN_RES, chans[0])

    def __call__(self, deter, stoch_flat):
        lead = deter.shape[:-1]
        grouped = deter.reshape(lead + (self.blocks, -1))
        x = self.from_deter(grouped).reshape(lead + self.map_shape) + self.from_stoch(stoch_flat).reshape(
            lead + self.map_shape)
        x = jax.nn.silu(self.norm(x)).reshape((-1,) + self.map_shape)
        for i, conv in enumerate(self.convs):
            x = upsample_conv(conv, x)
            if i < len(self.norms):
                x = jax.nn.silu(self.norms[i](x))
        return jax.nn.sigmoid(x.astype(jnp.float32)).reshape(lead + (IMAGE_SIZE, IMAGE_SIZE, 3))
