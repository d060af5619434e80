"""Load a trained run, collect episodes with a policy, and run its world model over them.

`load_run(logdir, env)` rebuilds the agent from the run's saved configuration (never from
defaults) and restores only its parameters, on this machine's default device whatever device
trained it. `collect` rolls out whole episodes in one jitted scan; `trace` filters them with
the world model (teacher forcing: posterior states) and returns a `Trace` of numpy arrays.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from dreamer_jax import checkpoint, config as cfg
from dreamer_jax.boundaries.trace import Trace
from dreamer_jax.train import Learner

EVENT_PREFIX = "event_"  # observation keys that carry ground-truth events, e.g. event_pad
ANALYSIS_BATCH = 4  # episodes filtered at once: bounds the encoder's activations for long episodes


class RunError(RuntimeError):
    """A directory that cannot be evaluated as a run; the message names the problem and the fix."""


@dataclasses.dataclass(frozen=True)
class Run:
    """A trained run: its directory, saved configuration, checkpoint step, and the acting learner with params."""

    logdir: pathlib.Path
    config: cfg.Config
    step: int
    learner: Learner
    params: Any


def load_config(logdir: str | pathlib.Path) -> cfg.Config:
    """The configuration a run saved in `logdir/config.json`."""
    logdir = pathlib.Path(logdir)
    if not logdir.is_dir():
        raise RunError(f"{logdir} is not a directory; pass the run directory a training wrote (--logdir of train)")
    path = logdir / "config.json"
    if not path.exists():
        raise RunError(f"{logdir} is no run: it has no config.json; pass the --logdir of a training run")
    try:
        return cfg.load(path)
    except (ValueError, TypeError, KeyError) as error:
        raise RunError(f"{path} cannot be read ({error}); it was not written by this version of dreamer_jax "
                       "or was edited by hand") from error


def load_run(logdir: str | pathlib.Path, env, step: int | None = None) -> Run:
    """The run in `logdir` with the parameters of checkpoint `step` (default: the newest that restores), for `env`."""
    logdir = pathlib.Path(logdir)
    config = load_config(logdir)
    learner, abstract_params = Learner.abstract(config, env)
    restored, step = _restore_params(logdir, abstract_params, step)
    params = jax.tree.unflatten(jax.tree.structure(abstract_params), jax.tree.leaves(restored))
    return Run(logdir, config, step, learner, params)


def _restore_params(logdir: pathlib.Path, abstract_params, step: int | None):
    """(parameters of checkpoint `step` or the newest that restores, its step), on this machine's default device."""
    mgr = checkpoint.manager(logdir) if (logdir / "checkpoints").is_dir() else None
    steps = mgr.all_steps() if mgr else []
    if not steps:
        raise RunError(f"{logdir} has no checkpoint; train it (python -m experiments.train --logdir {logdir}) "
                       "until it saves one")
    if step is not None and step not in steps:
        raise RunError(f"{logdir} has no checkpoint at step {step}; it has {sorted(steps)}")
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = {"params": jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
                                     abstract_params)}
    args = ocp.args.PyTreeRestore(item=target, partial_restore=True,
                                  restore_args=jax.tree.map(lambda _: ocp.ArrayRestoreArgs(sharding=sharding), target))
    try:
        restored, step, _ = checkpoint.restore_newest(
            mgr, lambda s: mgr.restore(s, args=ocp.args.Composite(state=args)).state["params"],
            steps if step is None else [step])
    except checkpoint.CheckpointError as error:
        raise RunError(str(error)) from error
    return restored, step


@functools.partial(jax.jit, static_argnums=(0, 2, 3, 4, 5))
def _rollout(learner: Learner, params, env, episodes: int, length: int, policy, key):
    """`episodes` episodes of `length` steps from reset: every observation and the action taken after it."""
    reset_key, key = jax.random.split(key)
    env_state, obs = jax.vmap(env.reset)(jax.random.split(reset_key, episodes))
    carry = nnx.merge(learner.graphdef, params).dynamics.initial(episodes)

    def step(inputs, key):
        env_state, obs, carry = inputs
        act_key, env_key = jax.random.split(key)
        if callable(policy):
            action = jax.vmap(policy)(env_state, jax.random.split(act_key, episodes))
        else:
            carry, action = learner.act(params, carry, obs, act_key, policy == "random")
        next_state, next_obs = jax.vmap(env.step)(env_state, action, jax.random.split(env_key, episodes))
        return (next_state, next_obs, carry), {**obs, "action": action}

    _, data = jax.lax.scan(step, (env_state, obs, carry), jax.random.split(key, length))
    return jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), data)


def collect(run: Run, env, episodes: int, key: jax.Array, policy: str | Callable = "agent",
            length: int | None = None) -> dict[str, np.ndarray]:
    """Observations and actions (E, T, ...) of `episodes` episodes, each `length` steps from its reset.

    `policy`: "agent" (the trained policy, filtering as it acts), "random" (uniform actions), or a
    function `(env_state, key) -> action` for one env (e.g. a scripted solver). `length` defaults
    to the env's episode length, so each row is exactly one episode.
    """
    return rollout(run.learner, run.params, env, episodes, key, policy, length)


def rollout(learner: Learner, params, env, episodes: int, key: jax.Array, policy: str | Callable = "agent",
            length: int | None = None) -> dict[str, np.ndarray]:
    """`collect` for a learner and parameters that no run directory holds (e.g. while training)."""
    if not (callable(policy) or policy in ("agent", "random")):
        raise ValueError(f"unknown policy {policy!r}; use 'agent', 'random' or a function (env_state, key) -> action")
    length = env.length if length is None else length
    if length > env.length:
        raise ValueError(f"length {length} is longer than the env's episodes ({env.length}); make the env with "
                         f"length >= {length}")
    return jax.device_get(_rollout(learner, params, env, episodes, length, policy, key))


@functools.partial(jax.jit, static_argnums=(0, 4, 5))
def _filter(learner: Learner, params, data: dict, key, constrain: bool, mode: bool) -> dict:
    """The world model over episodes (E, T): per-step diagnostics of its dynamics, `ANALYSIS_BATCH` at a time."""
    agent = nnx.merge(learner.graphdef, params)
    dynamics = agent.dynamics

    def one_batch(inputs):
        data, key = inputs
        observe_key, sample_key = jax.random.split(key)
        embed = agent.encoder(data["image"])
        action = jax.nn.one_hot(data["action"], agent.action_dim, dtype=jnp.float32)
        _, post, prior = dynamics.observe(dynamics.initial(embed.shape[0]), embed, action, data["is_first"],
                                          observe_key, reward=data["reward"], update=learner.config.vta_schedule_steps,
                                          constrain=constrain, mode=mode)
        return dynamics.diagnostics(post, prior, sample_key, mode)

    episodes = data["reward"].shape[0]
    batches = -(-episodes // ANALYSIS_BATCH)
    pad = batches * ANALYSIS_BATCH - episodes
    grouped = jax.tree.map(lambda x: jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1)).reshape(
        (batches, ANALYSIS_BATCH) + x.shape[1:]), data)
    out = jax.lax.map(one_batch, (grouped, jax.random.split(key, batches)))
    return jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:])[:episodes], out)


def segments(read: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(segment length so far, segment count) at every step of READ decisions (E, T) that start with a READ."""
    steps = np.arange(read.shape[1])
    last_read = np.maximum.accumulate(np.where(read, steps, 0), axis=1)
    return (steps - last_read + 1).astype(np.int32), np.cumsum(read, axis=1).astype(np.int32)


BOUNDARIES = ("mode", "sample")  # how a VTA's boundaries are read off its posterior (and prior) for evaluation


def trace(run: Run, data: dict, key: jax.Array, constrain: bool = False, boundaries: str = "mode") -> Trace:
    """Filter collected episodes with the run's world model and gather everything the metrics read.

    `boundaries`: "mode" judges the model's deterministic boundary, READ where q > 0.5 (and p > 0.5 for the
    prior's); "sample" draws them with logistic noise as training does, so they change with `key`.
    `constrain` applies the VTA's segment constraints and posterior forcing (as at the end of
    training) from each episode's start; by default boundaries are the model's own.
    """
    if constrain and run.config.dynamics != "vta":
        raise ValueError(f"segment constraints exist only for VTA; {run.logdir} is a {run.config.dynamics} run")
    if boundaries not in BOUNDARIES:
        raise ValueError(f"unknown boundaries {boundaries!r}; use one of {', '.join(BOUNDARIES)}")
    inputs = {k: data[k] for k in ("image", "action", "is_first", "reward")}
    out = jax.device_get(_filter(run.learner, run.params, inputs, key, constrain, boundaries == "mode"))
    events = {k[len(EVENT_PREFIX):]: np.asarray(v, bool) for k, v in data.items() if k.startswith(EVENT_PREFIX)}
    common = dict(frames=np.asarray(data["image"]), reward=np.asarray(data["reward"], np.float32),
                  action=np.asarray(data["action"], np.int32), events=events,
                  kl_obs=np.asarray(out["kl_obs"], np.float32))
    if "read" not in out:
        return Trace(**common)
    read = np.asarray(out["read"], bool)
    seg_len, seg_num = segments(read)
    return Trace(**common, read=read, read_prob=np.asarray(out["read_prob"], np.float32),
                 read_prior=np.asarray(out["read_prior"], bool),
                 read_prob_prior=np.asarray(out["read_prob_prior"], np.float32),
                 forced=np.asarray(out["forced"], bool), seg_len=seg_len, seg_num=seg_num,
                 kl_abstract=np.asarray(out["kl_abstract"], np.float32))
