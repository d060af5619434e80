"""Why the world model does not draw the agent: its encoder and decoder as an autoencoder on pinpad frames, with and
without a sampled categorical latent between them.

    python -m benchmarks.agent_drawing                  # every variant, 1500 updates each (minutes on 2 cores)
    python -m benchmarks.agent_drawing --variants preset preset_latent --updates 3000

At 16x16 the agent is one black pixel. Each variant trains the project's `Encoder` and `Decoder` (sigmoid output,
squared error summed over pixels, LaProp with a 100-update warm-up, batches of 64 of 4096 random-policy
`pinpad_three` frames) and reads off held-out frames how often the decoded frame draws the agent in its cell
(`pinpad.agent_tracking`). A variant with a latent puts the world model's posterior head between them (Dense ->
Linear -> S x C unimix categoricals) and decodes either a straight-through sample, as training does, or the
probabilities; the head's logits can be scaled (`logit_scale`, as `--latent_logit_scale` does in the world model) or
only its initial weights (`head_init`). Writes agent_drawing.json (settings, curves [update, loss, tracking], machine,
versions, command).
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import pinpad
from benchmarks import record
from dreamer_jax import distributions as dists, optim
from dreamer_jax.dynamics import latent_logits
from dreamer_jax.networks import Decoder, Dense, Encoder, fan_in_init

BATCH, TRAIN_FRAMES, TEST_FRAMES, EPISODE = 64, 4096, 256, 64
BLOCKS, UNITS = 8, 64  # the decoder's h path gets zeros of BLOCKS values; its z path is Dense(2 * UNITS)


class Variant(NamedTuple):
    depth: int  # CNN base channels (pinpad_cpu_v1: 4)
    lr: float
    latent: tuple[int, int, int] | None = None  # (latents S, classes C, hidden) of the posterior head, or none
    decode: str = "sample"  # with a latent: decode its straight-through sample or its probabilities
    logit_scale: float = 1.0  # the posterior head's logits times this before unimix (sharper, and a larger step)
    head_init: float = 1.0  # the posterior head's initial weights times this (sharper at the start only)


VARIANTS = {
    "preset": Variant(4, 1e-4),  # pinpad_cpu_v1's encoder, decoder and learning rate
    "depth8_lr3e-4": Variant(8, 3e-4),
    "depth16_lr3e-4": Variant(16, 3e-4),
    "preset_latent": Variant(4, 1e-4, (16, 8, 64)),  # and pinpad_cpu_v1's latent
    "depth8_lr3e-4_latent": Variant(8, 3e-4, (16, 8, 64)),
    "depth8_lr3e-4_latent_probs": Variant(8, 3e-4, (16, 8, 64), "probs"),
    "depth8_lr3e-4_latent32x16": Variant(8, 3e-4, (32, 16, 256)),
    "depth16_lr3e-4_latent": Variant(16, 3e-4, (16, 8, 64)),
    "depth16_lr3e-4_latent_probs": Variant(16, 3e-4, (16, 8, 64), "probs"),
    # Ways for the sampled latent to carry the agent sooner: a larger step, a sharper posterior, fewer larger latents.
    "depth16_lr1e-3_latent": Variant(16, 1e-3, (16, 8, 64)),
    "depth16_lr3e-4_latent_x3": Variant(16, 3e-4, (16, 8, 64), logit_scale=3.0),
    "depth16_lr3e-4_latent_x10": Variant(16, 3e-4, (16, 8, 64), logit_scale=10.0),
    "depth16_lr3e-4_latent4x64": Variant(16, 3e-4, (4, 64, 64)),
    "depth16_lr3e-4_latent_init3": Variant(16, 3e-4, (16, 8, 64), head_init=3.0),
    "depth4_lr3e-4_latent_x3": Variant(4, 3e-4, (16, 8, 64), logit_scale=3.0),
}


class Autoencoder(nnx.Module):
    """Encoder -> (optional sampled categorical latent) -> decoder, all from the world model's building blocks."""

    def __init__(self, variant: Variant, rngs: nnx.Rngs):
        self.variant = variant
        self.encoder = Encoder(variant.depth, 16, dtype=jnp.float32, rngs=rngs)
        code = self.encoder.out_dim
        if variant.latent:
            stoch, classes, hidden = variant.latent
            self.post_mlp = Dense(code, hidden, dtype=jnp.float32, rngs=rngs)
            self.post_out = nnx.Linear(hidden, stoch * classes, kernel_init=fan_in_init(variant.head_init), rngs=rngs)
            code = stoch * classes
        self.decoder = Decoder(BLOCKS, code, variant.depth, UNITS, BLOCKS, 16, dtype=jnp.float32, rngs=rngs)

    def logits(self, code):
        """The posterior head's unimix logits (..., S, C) of the encoder's code, scaled by `logit_scale` first."""
        stoch, classes, _ = self.variant.latent
        return latent_logits(self.post_out, self.post_mlp(code), stoch, classes, 0.01, self.variant.logit_scale)

    def __call__(self, image, key):
        code = self.encoder(image)
        if self.variant.latent:
            logits = self.logits(code)
            latent = dists.categorical(logits).sample(seed=key) if self.variant.decode == "sample" else jnp.exp(logits)
            code = latent.reshape(latent.shape[:-2] + (-1,))
        return self.decoder(jnp.zeros(code.shape[:-1] + (BLOCKS,)), code)


def episodes(count: int, key) -> dict[str, np.ndarray]:
    """`count` // EPISODE random-policy pinpad_three episodes at 16x16, EPISODE steps from each reset: image,
    agent_cell, action, reward and is_terminal, each (episodes, EPISODE, ...)."""
    env = pinpad.make("pinpad_three", length=1000, size=16)

    def episode(key):
        state, _ = env.reset(key)

        def step(state, key):
            action_key, step_key = jax.random.split(key)
            action = jax.random.randint(action_key, (), 0, pinpad.NUM_ACTIONS)
            state, obs = env.step(state, action, step_key)
            return state, {"image": obs["image"], "agent_cell": obs["agent_cell"], "action": action,
                           "reward": obs["reward"], "is_terminal": obs["is_terminal"]}

        return jax.lax.scan(step, state, jax.random.split(key, EPISODE))[1]

    return jax.device_get(jax.jit(jax.vmap(episode))(jax.random.split(key, count // EPISODE)))


def frames(count: int, key) -> tuple[np.ndarray, np.ndarray]:
    """(images, agent cells) of `episodes`, as single frames."""
    data = episodes(count, key)
    return data["image"].reshape(-1, 16, 16, 3), data["agent_cell"].reshape(-1)


def train(variant: Variant, updates: int, every: int, data: dict) -> list[list[float]]:
    """[[update, training loss, held-out tracking], ...] every `every` updates."""
    graphdef, params = nnx.split(Autoencoder(variant, nnx.Rngs(0)))
    optimizer = optim.laprop_agc(variant.lr, warmup=100)
    decode = jax.jit(lambda params, image, key: nnx.merge(graphdef, params)(image, key))

    @jax.jit
    def update(params, opt_state, image, key):
        def loss(params):
            target = image.astype(jnp.float32) / 255.0
            return jnp.square(nnx.merge(graphdef, params)(image, key) - target).sum((-3, -2, -1)).mean()

        value, grads = jax.value_and_grad(loss)(params)
        step, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, step), opt_state, value

    opt_state, rng, curve = optimizer.init(params), np.random.default_rng(0), []
    for i in range(1, updates + 1):
        batch = data["train_image"][rng.integers(0, len(data["train_image"]), BATCH)]
        params, opt_state, value = update(params, opt_state, batch, jax.random.PRNGKey(i))
        if i % every == 0 or i == updates:
            recon = np.asarray(decode(params, data["test_image"], jax.random.PRNGKey(updates + i)))
            curve.append([i, float(value), pinpad.agent_tracking(recon, data["test_cell"])])
    return curve


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.agent_drawing", description=__doc__.splitlines()[0])
    p.add_argument("--variants", nargs="+", choices=tuple(VARIANTS), default=list(VARIANTS))
    p.add_argument("--updates", type=int, default=1500)
    p.add_argument("--every", type=int, default=250, help="updates between held-out measurements")
    p.add_argument("--out", type=pathlib.Path, default=pathlib.Path("docs/results/agent_drawing.json"))
    args = p.parse_args(argv)
    if args.updates < 1 or args.every < 1:
        p.error(f"--updates {args.updates} and --every {args.every} must be at least 1")
    train_image, train_cell = frames(TRAIN_FRAMES, jax.random.PRNGKey(0))
    test_image, test_cell = frames(TEST_FRAMES, jax.random.PRNGKey(1))
    data = dict(train_image=train_image, test_image=test_image, test_cell=test_cell)
    results, start = {}, time.monotonic()
    print(f"{'variant':28s} {'depth':>5s} {'lr':>7s} {'latent':>10s} {'loss':>7s} {'tracked':>7s}  (at the end)")
    for name in args.variants:
        variant = VARIANTS[name]
        curve = train(variant, args.updates, args.every, data)
        results[name] = {**variant._asdict(), "curve": curve}
        latent = "none" if not variant.latent else f"{variant.latent[0]}x{variant.latent[1]} {variant.decode}"
        print(f"{name:28s} {variant.depth:5d} {variant.lr:7.0e} {latent:>10s} {curve[-1][1]:7.3f} {curve[-1][2]:7.1%}",
              flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    record.write(args.out, "benchmarks.agent_drawing", argv, updates=args.updates, batch=BATCH,
                 train_frames=TRAIN_FRAMES, test_frames=TEST_FRAMES, variants=results, wall_s=time.monotonic() - start)
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
