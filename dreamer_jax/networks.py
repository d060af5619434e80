"""Network building blocks of DreamerV3: RMSNorm MLPs, block-diagonal linears, the CNN encoder and decoder, the
block GRU cell of the dynamics.

Modules hold parameters only (Flax NNX); `dtype` is the compute dtype (bfloat16 or float32),
parameters stay float32. Heads return float32 logits. Every weight starts as the official code's:
truncated normal on [-2, 2] with std 1.1368 * sqrt(1 / fan_in) (`lecun_normal`, which is exactly
that), times an output scale; biases start at zero.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

CNN_MULTS = (2, 3, 4, 4)  # channels per stage, times `depth`
MIN_RES = 4  # the encoder pools down to 4 x 4; the decoder starts from 4 x 4
NORM_EPS = 1e-4  # the official RMSNorm epsilon


def fan_in_init(scale: float = 1.0, in_axis=-2, out_axis=-1):
    """Truncated normal with std 1.1368 * sqrt(1 / fan_in), times `scale` (zeros at 0): the official init."""
    if scale == 0:
        return nnx.initializers.zeros
    return nnx.initializers.variance_scaling(scale**2, "fan_in", "truncated_normal", in_axis=in_axis,
                                             out_axis=out_axis)


def cnn_stages(size: int) -> int:
    """Conv stages of the encoder (and decoder) for size x size images: halve down to (up from) 4 x 4."""
    stages = int(np.log2(size // MIN_RES))
    if size < 2 * MIN_RES or MIN_RES * 2**stages != size or stages > len(CNN_MULTS):
        raise ValueError(f"image size {size} must be 4 x a power of 2 between 8 and {MIN_RES * 2**len(CNN_MULTS)}")
    return stages


def rms_norm(dim: int, *, dtype, rngs: nnx.Rngs) -> nnx.RMSNorm:
    return nnx.RMSNorm(dim, epsilon=NORM_EPS, dtype=dtype, rngs=rngs)


class Dense(nnx.Module):
    """Linear -> RMSNorm -> SiLU, the unit every DreamerV3 MLP is made of."""

    def __init__(self, din: int, dout: int, *, dtype, rngs: nnx.Rngs):
        self.linear = nnx.Linear(din, dout, dtype=dtype, rngs=rngs)
        self.norm = rms_norm(dout, dtype=dtype, rngs=rngs)

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

    Takes (..., blocks, din) and returns (..., blocks, dout). The init's fan-in is the whole input,
    blocks * din, as in the official code.
    """

    def __init__(self, din: int, dout: int, blocks: int, *, dtype, rngs: nnx.Rngs):
        init = fan_in_init(in_axis=(0, 1), out_axis=2)
        self.kernel = nnx.Param(init(rngs.params(), (blocks, din, dout), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((blocks, dout)))
        self.dtype = dtype

    def __call__(self, x):
        y = jnp.einsum("...gi,gio->...go", x.astype(self.dtype), self.kernel[...].astype(self.dtype))
        return y + self.bias[...].astype(self.dtype)


class Head(nnx.Module):
    """MLP followed by a float32 linear output whose initial weights are scaled by `outscale` (0: zeros)."""

    def __init__(self, din: int, dout: int, units: int, layers: int, *, dtype, rngs: nnx.Rngs,
                 outscale: float = 1.0):
        self.mlp = MLP(din, units, layers, dtype=dtype, rngs=rngs)
        self.out = nnx.Linear(units if layers else din, dout, kernel_init=fan_in_init(outscale), dtype=jnp.float32,
                              rngs=rngs)

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
    """uint8 (..., size, size, 3) images -> flat embedding, by Conv5 -> maxpool -> RMSNorm -> SiLU stages down to
    4 x 4: four stages at 64, or the last three (32) or two (16), so each resolution has the channels it has
    at 64 and the embedding is the same size. `kernel` is the convs' size (the official 5)."""

    def __init__(self, depth: int, size: int, *, dtype, rngs: nnx.Rngs, kernel: int = 5):
        chans = [3] + [depth * m for m in CNN_MULTS[-cnn_stages(size):]]
        self.convs = nnx.List([nnx.Conv(a, b, (kernel, kernel), dtype=dtype, rngs=rngs)
                               for a, b in zip(chans[:-1], chans[1:])])
        self.norms = nnx.List([rms_norm(c, dtype=dtype, rngs=rngs) for c in chans[1:]])
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
    """Features (h, flat z) -> image in [0, 1], as the official decoder: a 4 x 4 map from both, then nearest-x2
    upsampling convs back to size x size.

    h enters through a block-diagonal linear whose output is laid out (g h w c) -> h w (g c), so every block
    of h reaches every cell of the map; z through Dense(2 * units) -> Linear; their sum is normed and activated.
    """

    def __init__(self, deter: int, stoch_dim: int, depth: int, units: int, blocks: int, size: int, *, dtype,
                 rngs: nnx.Rngs):
        chans = [depth * m for m in reversed(CNN_MULTS[-cnn_stages(size):])]  # 4x4 map first
        if chans[0] % blocks or deter % blocks:
            raise ValueError(f"decoder map channels {chans[0]} and deter {deter} must divide by blocks={blocks}")
        cells = MIN_RES * MIN_RES * chans[0]
        self.from_deter = BlockLinear(deter // blocks, cells // blocks, blocks, dtype=dtype, rngs=rngs)
        self.from_stoch = nnx.Sequential(Dense(stoch_dim, 2 * units, dtype=dtype, rngs=rngs),
                                         nnx.Linear(2 * units, cells, dtype=dtype, rngs=rngs))
        self.norm = rms_norm(chans[0], dtype=dtype, rngs=rngs)
        outs = chans[1:] + [3]
        self.convs = nnx.List([nnx.Conv(a, b, (5, 5), dtype=dtype, rngs=rngs) for a, b in zip(chans, outs)])
        self.norms = nnx.List([rms_norm(c, dtype=dtype, rngs=rngs) for c in chans[1:]])
        self.blocks, self.size = blocks, size
        self.map_shape = (MIN_RES, MIN_RES, chans[0])

    def deter_map(self, deter):
        """h -> (..., 4, 4, C): block g fills channels [g C / G, (g + 1) C / G) of every cell."""
        lead = deter.shape[:-1]
        x = self.from_deter(deter.reshape(lead + (self.blocks, -1)))  # (..., g, h * w * c / g)
        x = x.reshape(lead + (self.blocks, MIN_RES, MIN_RES, -1))
        return jnp.moveaxis(x, -4, -2).reshape(lead + self.map_shape)

    def __call__(self, deter, stoch_flat):
        lead = deter.shape[:-1]
        x = self.deter_map(deter) + self.from_stoch(stoch_flat).reshape(lead + self.map_shape)
        x = jax.nn.silu(self.norm(x)).reshape((-1,) + self.map_shape)
        for i, conv in enumerate(self.convs):
            x = upsample_conv(conv, x)
            if i < len(self.norms):
                x = jax.nn.silu(self.norms[i](x))
        return jax.nn.sigmoid(x.astype(jnp.float32)).reshape(lead + (self.size, self.size, 3))


class GRUCell(nnx.Module):
    """h' = sig(u - 1) tanh(sig(r) c) + (1 - sig(u - 1)) h from h and a list of flat inputs.

    `blockgru` (2024): a Linear -> RMSNorm -> SiLU branch per input and on h, concatenated;
    each of `blocks` groups gets that plus its slice of h; block-diagonal layers give the
    gates. `gru2023`: one input layer, then a LayerNorm GRU over all of h.
    """

    def __init__(self, deter: int, hidden: int, blocks: int, input_dims: tuple[int, ...], kind: str, *, dtype,
                 rngs: nnx.Rngs):
        if deter % blocks:
            raise ValueError(f"deter={deter} must divide by blocks={blocks}")
        if kind not in ("blockgru", "gru2023"):
            raise ValueError(f"unknown GRU cell {kind!r}; use blockgru or gru2023")
        self.deter, self.blocks, self.kind = deter, blocks, kind
        if kind == "blockgru":
            self.in_deter = Dense(deter, hidden, dtype=dtype, rngs=rngs)
            self.in_inputs = nnx.List([Dense(d, hidden, dtype=dtype, rngs=rngs) for d in input_dims])
            group = deter // blocks
            width = (1 + len(input_dims)) * hidden + group
            self.hidden_block = BlockLinear(width, group, blocks, dtype=dtype, rngs=rngs)
            self.hidden_norm = nnx.RMSNorm(deter, dtype=dtype, rngs=rngs)
            self.gates = BlockLinear(group, 3 * group, blocks, dtype=dtype, rngs=rngs)
        else:
            self.gru_in = Dense(sum(input_dims), hidden, dtype=dtype, rngs=rngs)
            self.gru = nnx.Linear(hidden + deter, 3 * deter, use_bias=False, dtype=dtype, rngs=rngs)
            self.gru_norm = nnx.LayerNorm(3 * deter, dtype=dtype, rngs=rngs)

    def __call__(self, deter, inputs):
        lead = deter.shape[:-1]
        if self.kind == "gru2023":
            x = self.gru_in(jnp.concatenate(inputs, -1))
            gates = self.gru_norm(self.gru(jnp.concatenate([x, deter.astype(x.dtype)], -1)))
            grouped = deter
        else:
            x = jnp.concatenate([self.in_deter(deter)] + [f(v) for f, v in zip(self.in_inputs, inputs)], -1)
            grouped = deter.reshape(lead + (self.blocks, -1))
            x = jnp.concatenate([jnp.broadcast_to(x[..., None, :], lead + (self.blocks, x.shape[-1])),
                                 grouped.astype(x.dtype)], -1)
            x = self.hidden_block(x).reshape(lead + (self.deter,))
            gates = self.gates(jax.nn.silu(self.hidden_norm(x)).reshape(lead + (self.blocks, -1)))
        reset, cand, update = jnp.split(gates.astype(jnp.float32), 3, axis=-1)
        update = jax.nn.sigmoid(update - 1.0)
        new = update * jnp.tanh(jax.nn.sigmoid(reset) * cand) + (1 - update) * grouped
        return new.reshape(lead + (self.deter,))
