"""Where the CPU seconds of a training run go: one update by part, and one env step of a whole run, per candidate.

    python -m benchmarks.cost_profile                                  # pinpad_cpu_v2 and every candidate
    python -m benchmarks.cost_profile --candidates today enc_k3 --repeats 5 --out /tmp/profile.json

Everything runs in this process, so the ratios are side by side. Each figure is the median over `--repeats` timed
calls after one warm-up call, in process CPU seconds (both cores' work) and wall seconds; the updates, nearly all of
a run's cost, are timed in turn across the candidates (`--rounds` updates each), so that a shared machine's drifting
speed falls on all of them alike.

- `parts` (the base preset only): one update's pieces, each jitted alone as the learner jits its programs and
  differentiated as the update differentiates it: sampling a batch and writing the posteriors back (replay), the
  encoder on the batch's frames, the posterior scan with its KL terms (dynamics), the decoder's reconstruction
  loss, the reward and continue heads, imagination with the actor and critic losses, the replay value loss, the
  optimiser step with the slow critic's EMA; beside them the whole update. The parts fuse differently alone, so
  their sum is not exactly the update: the difference is reported.
- `run` (every candidate): the CPU seconds of one env step of a whole training run at the candidate's settings,
  composed from measured pieces: acting (the policy filters each frame, acts, the env steps, replay stores it),
  updates (train_ratio / (batch_size x batch_length) per env step), the periodic evaluation and the tracking probe
  (per `eval_every` env steps) and checkpoint saves (per `save_every`); and the env steps per CPU second, as a
  ratio to the base's.
"""

from __future__ import annotations

import argparse
import functools
import pathlib
import statistics
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from benchmarks import record
from dreamer_jax import checkpoint, config as cfg, replay as rp
from dreamer_jax.agent import imagination_loss, replay_loss, world_model_loss
from dreamer_jax.train import COMPILER_OPTIONS, Learner, make_optimizer
from experiments import tracking
from experiments.envs import make_env

BASE = "pinpad_cpu_v2"  # the preset every candidate changes (the 2026-12-02 pinpad_cpu)
# name -> fields on top of the base: an encoder lighter than the decoder (3x3 kernels; and half the channels), both
# CNNs at half the channels, bf16 compute, half the train ratio, the lighter encoder at half the train ratio, and
# pinpad_cpu_v1's CNN (depth 4; its other fields cost nothing). (Acting, the periodic evaluation and the probe are
# under 2% of an env step's CPU time at the base: not a lever.)
CANDIDATES = {
    "today": {},
    "enc_k3": dict(enc_kernel=3),
    "enc_d8_k3": dict(enc_depth=8, enc_kernel=3),
    "depth8_enc_k3": dict(depth=8, enc_kernel=3),
    "bf16": dict(precision="bf16"),
    "ratio64": dict(train_ratio=64.0),
    "enc_d8_k3_ratio64": dict(enc_depth=8, enc_kernel=3, train_ratio=64.0),
    "depth4": dict(depth=4),
}
ACT_STEPS = 64  # env steps per env of one timed acting call
jit = functools.partial(jax.jit, compiler_options=COMPILER_OPTIONS)


def timed(fn, *args, repeats: int) -> dict:
    """{"cpu_s", "wall_s"}: medians over `repeats` calls of `fn(*args)` after a warm-up call, each waited for."""
    jax.block_until_ready(fn(*args))
    cpu, wall = [], []
    for _ in range(repeats):
        c, w = time.process_time(), time.perf_counter()
        jax.block_until_ready(fn(*args))
        cpu.append(time.process_time() - c)
        wall.append(time.perf_counter() - w)
    return {"cpu_s": statistics.median(cpu), "wall_s": statistics.median(wall)}


def prefilled(config: cfg.Config):
    """(learner, env, state) with a replay of a few sequences per env, filled by the random policy."""
    config = cfg.make(base=config, replay_size=4 * config.batch_length * config.envs)
    env = make_env(config)
    learner, state = Learner.create(config, env, jax.random.PRNGKey(0))
    state, _ = learner.chunk(state, 2 * config.batch_length, False)
    return learner, env, jax.block_until_ready(state)


def _grad_of(module, loss, *args):
    """(jitted gradient of `loss(module, *args)` with respect to the module's parameters and every float argument,
    its arguments), to be timed as `fn(*arguments)`."""
    graphdef, params = nnx.split(module)
    floats = tuple(i + 1 for i, a in enumerate(args) if jnp.issubdtype(a.dtype, jnp.floating))
    grad = jit(jax.grad(lambda p, *args: loss(nnx.merge(graphdef, p), *args), argnums=(0, *floats)))
    return grad, params, *args


def update_parts(learner: Learner, state, repeats: int) -> dict:
    """CPU and wall seconds of each part of one update, and of the whole update."""
    config = learner.config
    agent = nnx.merge(learner.graphdef, state.params)
    slow = nnx.merge(learner.critic_graphdef, state.slow_critic)
    key = jax.random.PRNGKey(1)
    sample = lambda replay, key: rp.sample(replay, key, config.batch_size, config.batch_length,
                                          config.replay_online)  # noqa: E731
    replay, batch, context, where = jit(sample)(state.replay, key)
    _, wm = jit(lambda params: world_model_loss(nnx.merge(learner.graphdef, params), config, context, batch, key))(
        state.params)
    post = wm.post
    embed = agent.encoder(batch["image"])
    action = jax.nn.one_hot(batch["action"], agent.action_dim, dtype=jnp.float32)
    deter, stoch = agent.dynamics.decoder_inputs(post)
    feat = agent.dynamics.features(post)
    _, (_, ret, _) = imagination_loss(agent, slow, config, post, batch["is_terminal"], state.retnorm, key)
    grads = jax.grad(lambda p: learner.loss(p, state.slow_critic, state.retnorm, batch, context, key, 0)[0])(
        state.params)
    optimizer = make_optimizer(config)

    def dynamics_loss(dynamics, embed):
        _, post, prior = dynamics.observe(context, embed, action, batch["is_first"], key, reward=batch["reward"],
                                          training=True)
        loss, _ = dynamics.loss(post, prior)
        return loss + jnp.vdot(dynamics.features(post), jnp.ones_like(dynamics.features(post)))

    def rec_loss(decoder, deter, stoch):
        return jnp.square(decoder(deter, stoch) - batch["image"] / 255.0).sum()

    def heads_loss(agent, feat):
        return (-agent.twohot(agent.reward(feat)).log_prob(batch["reward"])).mean() + agent.cont(feat).mean()

    def optimiser_step(params, opt_state, slow_critic):
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        critic = nnx.split(nnx.merge(learner.graphdef, params).critic)[1]
        rate = config.slow_critic_rate
        return params, opt_state, jax.tree.map(lambda s, c: (1 - rate) * s + rate * c, slow_critic, critic)

    parts = {
        "replay sample and refresh": (jit(lambda r, k: rp.refresh(sample(r, k)[0], where, post)), state.replay, key),
        "encoder": _grad_of(agent.encoder, lambda enc: jnp.vdot(enc(batch["image"]), embed)),
        "posterior scan and KL": _grad_of(agent.dynamics, dynamics_loss, embed),
        "decoder": _grad_of(agent.decoder, rec_loss, deter, stoch),
        "reward and continue heads": _grad_of(agent, heads_loss, feat),
        "imagination, actor and critic": _grad_of(agent, lambda a: imagination_loss(
            a, slow, config, post, batch["is_terminal"], state.retnorm, key)[0]),
        "replay value": _grad_of(agent, lambda a: replay_loss(a, slow, config, post, batch, ret)[0]),
        "optimiser and slow critic": (jit(optimiser_step), state.params, state.opt_state, state.slow_critic),
    }
    out = {name: timed(fn, *args, repeats=repeats) for name, (fn, *args) in parts.items()}
    update = jit(learner.update)
    out["whole update"] = timed(update, state, repeats=repeats)
    for unit in ("cpu_s", "wall_s"):
        out["whole update"][f"parts_sum_{unit}"] = sum(v[unit] for k, v in out.items() if k != "whole update")
    return out


def interleaved_updates(prepared: dict, rounds: int) -> dict:
    """CPU and wall seconds of one update of each candidate ((learner, env, state) by name): after a warm-up each, one
    update of every candidate in turn, `rounds` times, and the medians, so that every candidate sees the same drift
    of a shared machine's speed."""
    updates = {name: jit(learner.update) for name, (learner, _, _) in prepared.items()}
    for name, update in updates.items():
        jax.block_until_ready(update(prepared[name][2]))
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in prepared}
    for _ in range(rounds):
        for name, update in updates.items():
            c, w = time.process_time(), time.perf_counter()
            jax.block_until_ready(update(prepared[name][2]))
            times[name].append((time.process_time() - c, time.perf_counter() - w))
    return {name: {"cpu_s": statistics.median(c for c, _ in t), "wall_s": statistics.median(w for _, w in t)}
            for name, t in times.items()}


def run_costs(config: cfg.Config, learner: Learner, env, state, update: dict, repeats: int) -> dict:
    """CPU and wall seconds of the pieces of a training run at `config` (`update`: an update's, timed beside the
    other candidates'), and of one env step of it composed."""
    act = jit(lambda s: jax.lax.fori_loop(0, ACT_STEPS, lambda _, s: learner.env_step(s, False), s))
    key = jax.random.PRNGKey(2)
    probe = tracking.probe(env)
    with tempfile.TemporaryDirectory() as folder:
        mgr = checkpoint.manager(folder, keep=1)
        steps = iter(range(1, 1_000_000))
        pieces = {
            "acting": {k: v / (ACT_STEPS * config.envs) for k, v in timed(act, state, repeats=repeats).items()},
            "update": update,
            "evaluation": timed(lambda: learner.evaluate(state.params, config.eval_episodes, key), repeats=repeats),
            "tracking probe": timed(lambda: probe(learner, state.params, key), repeats=repeats),
            "checkpoint": timed(lambda: checkpoint.save(mgr, next(steps), state, config), repeats=max(1, repeats // 2)),
        }
    per_env_step = {"acting": 1.0, "update": config.updates_per_env_step,
                    "evaluation": 1 / config.eval_every if config.eval_every else 0.0,
                    "tracking probe": 1 / config.eval_every if config.eval_every else 0.0,
                    "checkpoint": 1 / config.save_every if config.save_every else 0.0}
    env_step = {name: {unit: pieces[name][unit] * per_env_step[name] for unit in ("cpu_s", "wall_s")}
                for name in pieces}
    total = {unit: sum(v[unit] for v in env_step.values()) for unit in ("cpu_s", "wall_s")}
    return {"pieces": pieces, "per_env_step": per_env_step, "env_step": env_step, "env_step_total": total,
            "env_steps_per_cpu_s": 1 / total["cpu_s"], "env_steps_per_s": 1 / total["wall_s"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.cost_profile", description=__doc__.splitlines()[0])
    p.add_argument("--base", choices=tuple(cfg.presets()), default=BASE, help="the preset under the candidates")
    p.add_argument("--candidates", nargs="+", choices=tuple(CANDIDATES), default=list(CANDIDATES))
    p.add_argument("--repeats", type=int, default=5, help="timed calls per figure (the median is reported)")
    p.add_argument("--rounds", type=int, default=9, help="updates of every candidate, timed in turn")
    p.add_argument("--no-parts", dest="parts", action="store_false", help="skip the per-part profile of an update")
    p.add_argument("--set", nargs="+", default=[], metavar="FIELD=VALUE", help="fields on top of the base preset")
    p.add_argument("--out", type=pathlib.Path, default=pathlib.Path("docs/results/cost_profile.json"))
    args = p.parse_args(argv)
    if min(args.repeats, args.rounds) < 1:
        p.error(f"--repeats {args.repeats} and --rounds {args.rounds} must be at least 1")
    try:
        base = cfg.parse(["--configs", args.base, *[t for item in args.set for t in f"--{item}".split("=", 1)]])
    except cfg.ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    start = time.monotonic()
    parts = None
    if args.parts:
        learner, _, state = prefilled(base)
        parts = update_parts(learner, state, args.repeats)
        whole = parts["whole update"]["cpu_s"]
        for name, t in parts.items():
            print(f"  {name:32s} {t['cpu_s']:7.3f} CPU s {t['wall_s']:7.3f} s  {t['cpu_s'] / whole:6.1%}", flush=True)
    configs = {name: cfg.make(base=base, **CANDIDATES[name]) for name in args.candidates}
    prepared = {name: prefilled(config) for name, config in configs.items()}
    updates = interleaved_updates(prepared, args.rounds)
    runs = {}
    for name, config in configs.items():
        runs[name] = {"fields": CANDIDATES[name], **run_costs(config, *prepared[name], updates[name], args.repeats)}
        r = runs[name]
        ratio = r["env_steps_per_cpu_s"] / runs[args.candidates[0]]["env_steps_per_cpu_s"]
        print(f"{name:20s} update {r['pieces']['update']['cpu_s']:.3f} CPU s, "
              f"env step {r['env_step_total']['cpu_s']:.4f}"
              f" CPU s: {r['env_steps_per_cpu_s']:.2f} env steps per CPU s ({ratio:.2f}x {args.candidates[0]})",
              flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    record.write(args.out, "benchmarks.cost_profile", argv, base=args.base, base_config=cfg.to_dict(base),
                 repeats=args.repeats, rounds=args.rounds, parts=parts, runs=runs, reference=args.candidates[0],
                 wall_s=time.monotonic() - start)
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
