"""Does the whole world model draw the agent? The world model alone, trained on random-policy pinpad frames.

    python -m benchmarks.world_model_drawing --variants depth16_x3 depth16_x3_no_kl --updates 2000 --every 250

`benchmarks.agent_drawing` trains the encoder and decoder alone; this trains the whole world model (encoder,
dynamics, decoder, reward and continue heads, its own losses; no actor or critic) at the `pinpad_cpu_v1` preset (the
first CPU setting, named `pinpad_cpu` in the committed results; `pinpad_cpu` is again its model since
2026-12-08) with a variant's fields, on
windows of `batch_length` steps of random-policy `pinpad_three` episodes (16x16), as many per update as the preset's
batch. What it adds to the autoencoder (the KL terms, the recurrent state the decoder also
reads, sequences) is what a variant turns off; what it leaves out of an agent's training (the agent's own data, the
replay value gradient) is what is left when it draws the agent and the agent's world model does not. Held-out
episodes are observed from their first step and their posterior reconstructions read with `pinpad.agent_tracking`.
Writes world_model_drawing.json (settings, curves [update, loss_rec, kl, tracking], machine, versions, command).
"""

from __future__ import annotations

import argparse
import functools
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import pinpad
from benchmarks import record
from benchmarks.agent_drawing import EPISODE, episodes
from dreamer_jax import config as cfg
from dreamer_jax.agent import Agent, world_model_loss
from dreamer_jax.train import COMPILER_OPTIONS, make_optimizer

PRESET = "pinpad_cpu_v1"  # the agent's first CPU setting, which the variants change; a test passes --preset debug
TRAIN_EPISODES, TEST_EPISODES = 128, 8  # of EPISODE steps each
# name -> fields on top of the preset: the agent_drawing setting that draws the agent (depth 16, lr 3e-4), its
# latent as it is and with the logits x3, then the x3 latent without the KL terms or without the representation KL,
# and with the reconstruction weighed as at 64x64 ((64 / 16)^2 = 16 times the other losses).
VARIANTS = {
    "depth16": dict(depth=16, lr=3e-4),
    "depth16_x3": dict(depth=16, lr=3e-4, latent_logit_scale=3.0),
    "depth16_x3_no_kl": dict(depth=16, lr=3e-4, latent_logit_scale=3.0, dyn_scale=0.0, rep_scale=0.0),
    "depth16_x3_no_rep": dict(depth=16, lr=3e-4, latent_logit_scale=3.0, rep_scale=0.0),
    "depth16_x3_rec16": dict(depth=16, lr=3e-4, latent_logit_scale=3.0, rec_scale=16.0),
    "depth16_rec16": dict(depth=16, lr=3e-4, rec_scale=16.0),
    # The cost candidates of benchmarks.cost_profile, on --preset pinpad_cpu_v2 (base: the preset as it is): an
    # encoder with 3x3 kernels at half the channels, and both CNNs at half the channels with the 3x3 encoder.
    "base": {},
    "enc_d8_k3": dict(enc_depth=8, enc_kernel=3),
    "depth8_enc_k3": dict(depth=8, enc_kernel=3),
}


def windows(data: dict, batch: int, length: int, rng: np.random.Generator) -> dict:
    """`batch` windows of `length` steps from random episodes and offsets; each window starts an episode."""
    rows = rng.integers(0, len(data["image"]), batch)
    starts = rng.integers(0, EPISODE - length + 1, batch)
    steps = starts[:, None] + np.arange(length)
    out = {k: data[k][rows[:, None], steps] for k in ("image", "action", "reward", "is_terminal")}
    out["is_first"] = np.broadcast_to(np.arange(length) == 0, (batch, length))
    return out


def programs(config: cfg.Config):
    """(initial params, optimiser state, update(params, opt_state, batch, key, step), reconstruct(params, episodes,
    key)) of the world model of `config`, jitted as the learner jits its programs."""
    graphdef, params = nnx.split(Agent(config, pinpad.NUM_ACTIONS, nnx.Rngs(params=0)))
    optimizer = make_optimizer(config)
    jit = functools.partial(jax.jit, compiler_options=COMPILER_OPTIONS)

    @jit
    def update(params, opt_state, batch, key, step):
        def loss(params):
            agent = nnx.merge(graphdef, params)
            total, out = world_model_loss(agent, config, agent.dynamics.initial(config.batch_size), batch, key, step)
            return total, out.metrics

        (_, metrics), grads = jax.value_and_grad(loss, has_aux=True)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, metrics

    @jit
    def reconstruct(params, data, key):
        agent = nnx.merge(graphdef, params)
        action = jax.nn.one_hot(data["action"], agent.action_dim, dtype=jnp.float32)
        _, post, _ = agent.dynamics.observe(agent.dynamics.initial(action.shape[0]), agent.encoder(data["image"]),
                                            action, data["is_first"], key)
        return agent.decoder(*agent.dynamics.decoder_inputs(post))

    return params, optimizer.init(params), update, reconstruct


def train(preset: str, fields: dict, updates: int, every: int, data: dict) -> list[list[float]]:
    """[[update, loss_rec, kl_obs, held-out tracking], ...] every `every` updates of one variant."""
    config = cfg.make(preset, **fields)
    params, opt_state, update, reconstruct = programs(config)
    test = {**data["test"], "is_first": np.arange(EPISODE)[None].repeat(TEST_EPISODES, 0) == 0}
    rng, curve = np.random.default_rng(0), []
    for i in range(1, updates + 1):
        batch = windows(data["train"], config.batch_size, config.batch_length, rng)
        params, opt_state, metrics = update(params, opt_state, batch, jax.random.PRNGKey(i), i - 1)
        if i % every == 0 or i == updates:
            recon = np.asarray(reconstruct(params, test, jax.random.PRNGKey(updates + i)))
            curve.append([i, float(metrics["loss_rec"]), float(metrics["kl_obs"]),
                          pinpad.agent_tracking(recon, test["agent_cell"])])
            print(f"  {i:6d} loss_rec {curve[-1][1]:.3f} kl {curve[-1][2]:.3f} tracked {curve[-1][3]:.1%}", flush=True)
    return curve


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.world_model_drawing", description=__doc__.splitlines()[0])
    p.add_argument("--variants", nargs="+", choices=tuple(VARIANTS), default=list(VARIANTS))
    p.add_argument("--updates", type=int, default=2000)
    p.add_argument("--every", type=int, default=250, help="updates between held-out measurements")
    p.add_argument("--preset", choices=tuple(cfg.presets()), default=PRESET, help="the preset under the variants")
    p.add_argument("--out", type=pathlib.Path, default=pathlib.Path("docs/results/world_model_drawing.json"))
    args = p.parse_args(argv)
    if args.updates < 1 or args.every < 1:
        p.error(f"--updates {args.updates} and --every {args.every} must be at least 1")
    data = {"train": episodes(TRAIN_EPISODES * EPISODE, jax.random.PRNGKey(0)),
            "test": episodes(TEST_EPISODES * EPISODE, jax.random.PRNGKey(1))}
    results, start = {}, time.monotonic()
    for name in args.variants:
        print(f"{name}: {args.preset} with {VARIANTS[name]}", flush=True)
        results[name] = {"fields": VARIANTS[name],
                         "curve": train(args.preset, VARIANTS[name], args.updates, args.every, data)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    record.write(args.out, "benchmarks.world_model_drawing", argv, preset=args.preset, updates=args.updates,
                 train_episodes=TRAIN_EPISODES, test_episodes=TEST_EPISODES, episode_steps=EPISODE, variants=results,
                 wall_s=time.monotonic() - start)
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
