"""Training as pure functions over an explicit state: acting, replay, updates, all inside jitted scans.

`Learner.create(config, env, key)` builds the state; `learner.chunk(state, train)` runs many
env steps (and the updates `train_ratio` asks for) in one dispatch. The env is any object
with the functional API `reset(key)`, `step(state, action, key)` and `num_actions`.
With `seeds=K` the state holds K independent agents on a leading axis, stepped together (`vmap`; unrolled on the CPU);
with a `mesh` every training batch is split over its devices on the batch axis (parameters
replicated, gradients averaged by XLA), which is data parallelism without `pmap`.
"""

from __future__ import annotations

import dataclasses
import fractions
import functools
import pathlib
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from dreamer_jax import optim, replay as rp
from dreamer_jax.agent import Agent, imagination_loss, replay_loss, world_model_loss
from dreamer_jax.config import Config, model_config
from dreamer_jax.returns import PercentileState, percentile_init

OBS_KEYS = ("image", "reward", "is_first", "is_last", "is_terminal")
# XLA options of the learner's programs. XLA:CPU hands convolutions and dots to the YNNPACK library by default; its
# convolution filter gradients run three to four times slower than XLA's own kernels on the encoder's and decoder's
# shapes (docs/speed.md), so the learner compiles without it. Other backends ignore `xla_cpu_` options.
COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}


def _cpu_backend() -> bool:
    """Whether gradient updates should stay out of XLA while loops (the CPU backend; see Learner.chunk)."""
    return jax.default_backend() == "cpu"


def release_programs() -> None:
    """Drop every compiled program of this process; call it between runs of different models.

    jit keeps its static arguments, each run's Learner among them, and with them its programs' machine code, which
    XLA:CPU maps into memory kernel by kernel: a process that trains or evaluates runs one after another would reach
    the kernel's limit of memory maps (vm.max_map_count, about 65k; a debug run takes some 8k) and crash.
    """
    jax.clear_caches()


MAPS_SHARE = 0.5  # release_crowded_programs drops the programs beyond this share of the kernel's map limit


def memory_maps() -> tuple[int, int] | None:
    """(memory maps this process holds, the kernel's limit of them), or None where /proc does not say (not Linux)."""
    try:
        held = pathlib.Path("/proc/self/maps").read_bytes().count(b"\n")
        return held, int(pathlib.Path("/proc/sys/vm/max_map_count").read_text())
    except (OSError, ValueError):
        return None


def release_crowded_programs() -> bool:
    """`release_programs` once this process holds more than MAPS_SHARE of the kernel's memory maps (or cannot
    tell); returns whether it did. Below that the programs stay, so the next run of the same model (a resume, a
    notebook's second run) traces and compiles nothing again."""
    maps = memory_maps()
    crowded = maps is None or maps[0] > MAPS_SHARE * maps[1]
    if crowded:
        release_programs()
    return crowded


class Episodes(NamedTuple):
    """Running return and length per env, and sums over the episodes finished since the last log."""

    ret: jax.Array
    length: jax.Array
    done_return: jax.Array
    done_length: jax.Array
    done_count: jax.Array


class TrainState(NamedTuple):
    params: Any  # nnx.State of the agent
    slow_critic: Any  # nnx.State of the critic: EMA of its parameters
    opt_state: Any
    retnorm: PercentileState
    env_state: Any
    obs: dict  # the latest observation of every env
    carry: Any  # the dynamics carry while acting
    replay: rp.Replay
    key: jax.Array  # raw uint32 key data, so checkpoints hold plain arrays
    env_steps: jax.Array
    updates: jax.Array
    episodes: Episodes


def make_optimizer(config: Config) -> optax.GradientTransformation:
    """LaProp + AGC (2024; the actor and critic at `ac_lr_scale` times the world model's lr), or three clipped
    Adams (2023). LaProp's steps are per parameter, so at scale 1 its two parts are the official single optimiser,
    and like it a non-finite gradient anywhere skips the whole update; each 2023 Adam skips its own."""
    labels = lambda params: jax.tree_util.tree_map_with_path(_part, params)  # noqa: E731
    if config.optimizer == "laprop":
        settings = dict(warmup=config.warmup, agc=config.agc, beta2=config.beta2, eps=config.eps,
                        momentum=config.momentum)
        ac = optim.laprop(config.lr * config.ac_lr_scale, **settings)
        parts = {"model": optim.laprop(config.lr, **settings), "actor": ac, "critic": ac}
        return optim.skip_nonfinite(optax.multi_transform(parts, labels))
    parts = {
        "model": optim.adam_2023(config.model_lr, config.model_eps, config.model_clip),
        "actor": optim.adam_2023(config.actor_lr, config.actor_eps, config.actor_clip),
        "critic": optim.adam_2023(config.critic_lr, config.critic_eps, config.critic_clip),
    }
    return optax.multi_transform(parts, labels)


def _part(path, _) -> str:
    """Which 2023 optimiser trains a parameter: its top-level module's, the world model's otherwise."""
    top = getattr(path[0], "key", None)
    return top if top in ("actor", "critic") else "model"


def steps_per_iteration(config: Config) -> tuple[int, int]:
    """(env steps per env, updates) of one iteration: the smallest whole numbers in the train_ratio proportion."""
    ratio = fractions.Fraction(config.updates_per_env_step * config.envs).limit_denominator(64)
    if ratio == 0:
        raise ValueError(f"train_ratio {config.train_ratio} gives no updates; raise it")
    return ratio.denominator, ratio.numerator


def _episodes_init(envs: int) -> Episodes:
    zero = lambda: jnp.zeros((), jnp.float32)  # noqa: E731  distinct buffers, as the state is donated
    return Episodes(jnp.zeros(envs, jnp.float32), jnp.zeros(envs, jnp.int32), zero(), zero(), zero())


def _track(episodes: Episodes, obs: dict) -> Episodes:
    """Add a step's reward; fold the episodes that end at it into the sums."""
    first, last = obs["is_first"], obs["is_last"].astype(jnp.float32)
    ret = jnp.where(first, 0.0, episodes.ret + obs["reward"])
    length = jnp.where(first, 0, episodes.length + 1)
    return Episodes(ret, length, episodes.done_return + (ret * last).sum(),
                    episodes.done_length + (length * last).sum(), episodes.done_count + last.sum())


@dataclasses.dataclass(frozen=True)
class Learner:
    """The static half of training: configuration, env, module structure. Hashable, so methods can be jitted."""

    config: Config
    env: Any
    graphdef: Any
    critic_graphdef: Any
    seeds: int = 1  # > 1: the state stacks that many independent agents on a leading axis
    mesh: Any = None  # a jax.sharding.Mesh with a "batch" axis: training batches are split over its devices
    fused: bool | None = None  # the accelerator loop (scans, vmapped seeds); None: on any backend but the CPU

    @staticmethod
    def create(config: Config, env, key: jax.Array, seeds: int = 1, mesh=None,
               fused: bool | None = None) -> tuple["Learner", TrainState]:
        """Build the learner and its initial state from a raw key, or from `seeds` stacked keys (seeds, 2).

        The state is committed to its devices (replicated over the mesh, else on the default device), as every
        state after a checkpoint or a log line is: jit keys its programs on whether arguments are committed, so
        an uncommitted first state would compile each program once more."""
        learner, _ = Learner.abstract(config, env, seeds, mesh, fused)
        state = learner._per_seed(learner.init)(key)
        sharding = (jax.sharding.SingleDeviceSharding(jax.devices()[0]) if mesh is None
                    else jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
        return learner, jax.device_put(state, sharding)

    @staticmethod
    def abstract(config: Config, env, seeds: int = 1, mesh=None, fused: bool | None = None) -> tuple["Learner", Any]:
        """The learner and its agent's parameters as shapes only (for restoring them), without building any state.
        The learner keeps only what its programs read (`model_config`), so runs of one model share them."""
        config = model_config(config)
        agent = nnx.eval_shape(lambda: Agent(config, env.num_actions, nnx.Rngs(params=0)))
        graphdef, params = nnx.split(agent)
        return Learner(config, env, graphdef, nnx.split(agent.critic)[0], seeds, mesh, fused), params

    @property
    def is_fused(self) -> bool:
        """Whether chunks run as one scan with vmapped seeds (accelerators), or unrolled per dispatch (the CPU)."""
        return not _cpu_backend() if self.fused is None else self.fused

    def _per_seed(self, fn):
        """`fn` over one agent's arguments, mapped over the stacked agents when there are several.

        On accelerators the map is `jax.vmap`. On the CPU it is unrolled at trace time instead: vmap
        turns each agent's own convolution kernels into one grouped convolution, which XLA:CPU runs
        several times slower than the separate convolutions.
        """
        if self.seeds == 1:
            return fn
        if self.is_fused:
            return jax.vmap(fn)

        def unrolled(*args):
            outs = [fn(*jax.tree.map(lambda x: x[i], args)) for i in range(self.seeds)]
            return jax.tree.map(lambda *xs: jnp.stack(xs), *outs)

        return unrolled

    def _split_batch(self, tree):
        """Lay a training batch out over the mesh's devices along its batch axis (no-op without a mesh)."""
        if self.mesh is None:
            return tree
        sharding = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec("batch"))
        return jax.lax.with_sharding_constraint(tree, sharding)

    @functools.partial(jax.jit, static_argnums=0, compiler_options=COMPILER_OPTIONS)
    def init(self, key: jax.Array) -> TrainState:
        """Fresh parameters, optimiser, envs, acting carry and an empty replay."""
        config = self.config
        model_key, env_key, key = jax.random.split(key, 3)
        agent = Agent(config, self.env.num_actions, nnx.Rngs(params=model_key))
        params = nnx.split(agent)[1]
        slow_critic = jax.tree.map(jnp.copy, nnx.split(agent.critic)[1])
        env_state, obs = jax.vmap(self.env.reset)(jax.random.split(env_key, config.envs))
        obs = {k: obs[k] for k in OBS_KEYS}
        carry = agent.dynamics.initial(config.envs)
        first = lambda tree: jax.tree.map(lambda x: x[0], tree)  # noqa: E731
        step_example = first(self._replay_step(obs, jnp.zeros(config.envs, jnp.int32)))
        capacity = max(config.batch_length, config.replay_size // config.envs)
        return TrainState(
            params=params, slow_critic=slow_critic, opt_state=make_optimizer(config).init(params),
            retnorm=percentile_init(), env_state=env_state, obs=obs, carry=carry,
            replay=rp.init(config.envs, capacity, step_example, first(carry)), key=key,
            env_steps=jnp.int32(0), updates=jnp.int32(0), episodes=_episodes_init(config.envs))

    # -- acting ---------------------------------------------------------------------------------
    @staticmethod
    def _replay_step(obs: dict, action: jax.Array) -> dict:
        return {**obs, "action": action}

    def act(self, params, carry, obs: dict, key, explore_random: bool):
        """Filter the new observation and pick an action (uniform at random while prefilling)."""
        agent = nnx.merge(self.graphdef, params)
        filter_key, act_key = jax.random.split(key)
        embed = agent.encoder(obs["image"])
        no_action = jnp.zeros_like(carry.action)
        carry, (post, _) = agent.dynamics.obs_step(carry, embed, no_action, obs["is_first"], filter_key,
                                                   reward=obs["reward"])
        if explore_random:
            logits = jnp.zeros(carry.action.shape, jnp.float32)
        else:
            logits = agent.policy_logits(agent.dynamics.features(post))
        index = jax.random.categorical(act_key, logits)
        return carry._replace(action=jax.nn.one_hot(index, self.env.num_actions, dtype=jnp.float32)), index

    def env_step(self, state: TrainState, explore_random: bool) -> TrainState:
        """One step of every env: act, store the step in replay, advance the env."""
        key, act_key, env_key = jax.random.split(state.key, 3)
        carry, action = self.act(state.params, state.carry, state.obs, act_key, explore_random)
        replay = rp.add(state.replay, self._replay_step(state.obs, action), carry)
        env_keys = jax.random.split(env_key, self.config.envs)
        env_state, obs = jax.vmap(self.env.step)(state.env_state, action, env_keys)
        obs = {k: obs[k] for k in OBS_KEYS}
        return state._replace(env_state=env_state, obs=obs, carry=carry, replay=replay, key=key,
                              env_steps=state.env_steps + self.config.envs, episodes=_track(state.episodes, obs))

    # -- learning -------------------------------------------------------------------------------
    def loss(self, params, slow_critic, retnorm, batch, context, key, update):
        """The world-model, imagination and replay losses of one batch, summed; with the posterior states."""
        agent = nnx.merge(self.graphdef, params)
        slow = nnx.merge(self.critic_graphdef, slow_critic)
        wm_key, imag_key = jax.random.split(key)
        wm_loss, wm = world_model_loss(agent, self.config, context, batch, wm_key, update)
        imag_loss, (retnorm, ret, imag_metrics) = imagination_loss(agent, slow, self.config, wm.post,
                                                                   batch["is_terminal"], retnorm, imag_key)
        rep_loss, rep_metrics = replay_loss(agent, slow, self.config, wm.post, batch, ret)
        return wm_loss + imag_loss + rep_loss, (retnorm, wm.post, {**wm.metrics, **imag_metrics, **rep_metrics})

    def update(self, state: TrainState) -> tuple[TrainState, dict]:
        """One gradient update on a batch sampled from replay; the slow critic follows by EMA, and the batch's
        posterior states are written back into replay as the context of later samples."""
        key, sample_key, loss_key = jax.random.split(state.key, 3)
        config = self.config
        replay, batch, context, where = rp.sample(state.replay, sample_key, config.batch_size, config.batch_length,
                                                  config.replay_online)
        batch, context = self._split_batch((batch, context))
        grads, (retnorm, post, metrics) = jax.grad(self.loss, has_aux=True)(
            state.params, state.slow_critic, state.retnorm, batch, context, loss_key, state.updates)
        replay = rp.refresh(replay, where, post)
        updates, opt_state = make_optimizer(self.config).update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        critic = nnx.split(nnx.merge(self.graphdef, params).critic)[1]
        rate = self.config.slow_critic_rate
        slow = jax.tree.map(lambda s, c: (1 - rate) * s + rate * c, state.slow_critic, critic)
        metrics.update(grad_norm=optax.tree.norm(grads), skipped_updates=optim.skipped_updates(opt_state),
                       replay_online_share=where.online.mean())
        state = state._replace(params=params, slow_critic=slow, opt_state=opt_state, retnorm=retnorm, key=key,
                               replay=replay, updates=state.updates + 1)
        return state, metrics

    # -- the loop -------------------------------------------------------------------------------
    def iteration(self, state: TrainState, train: bool):
        """Env steps then updates, in the train_ratio proportion (only env steps while prefilling)."""
        env_steps, updates = steps_per_iteration(self.config)
        state = jax.lax.fori_loop(0, env_steps, lambda _, s: self.env_step(s, not train), state)
        if not train:
            return state, {}
        if self.is_fused:
            return jax.lax.scan(lambda s, _: self.update(s), state, None, length=updates)
        metrics = []  # unrolled at trace time: no while loop around the gradients on the CPU
        for _ in range(updates):
            state, step_metrics = self.update(state)
            metrics.append(step_metrics)
        return state, jax.tree.map(lambda *ms: jnp.stack(ms), *metrics)

    @functools.partial(jax.jit, static_argnums=(0, 2, 3), donate_argnums=1, compiler_options=COMPILER_OPTIONS)
    def _fused(self, state: TrainState, iterations: int, train: bool):
        def run(state):
            state, metrics = jax.lax.scan(lambda s, _: self.iteration(s, train), state, None, length=iterations)
            return state, jax.tree.map(lambda m: m.reshape(-1), metrics)

        return self._per_seed(run)(state)

    @functools.partial(jax.jit, static_argnums=(0, 2), donate_argnums=1, compiler_options=COMPILER_OPTIONS)
    def _single(self, state: TrainState, train: bool):
        return self._per_seed(lambda s: self.iteration(s, train))(state)

    def chunk(self, state: TrainState, iterations: int, train: bool):
        """Run `iterations` iterations; returns the state and the metrics of every update (1-D arrays, or
        (seeds, updates) for stacked agents).

        On accelerators they are one dispatch (a scan), and so is prefilling (no gradients) everywhere.
        On the CPU, convolution gradients run five to ten times slower inside an XLA while loop
        (jax-ml/jax#12868), so there each training iteration is its own dispatch with its updates unrolled.
        """
        if self.is_fused or not train:
            return self._fused(state, iterations, train)
        parts = []
        for _ in range(iterations):
            state, metrics = self._single(state, train)
            parts.append(metrics)
        return state, jax.tree.map(lambda *ms: jnp.concatenate(ms, axis=-1), *parts)

    @functools.partial(jax.jit, static_argnums=(0, 2), compiler_options=COMPILER_OPTIONS)
    def evaluate(self, params, episodes: int, key):
        """Mean return of `episodes` fresh episodes of the policy (per agent, with one key each)."""
        return self._per_seed(lambda p, k: self._evaluate(p, episodes, k))(params, key)

    def _evaluate(self, params, episodes: int, key):
        """Mean return of `episodes` fresh episodes of one agent's policy (one per env, in parallel), each of the
        env's full length (pinpad episodes end only at the time limit)."""
        agent = nnx.merge(self.graphdef, params)
        reset_key, key = jax.random.split(key)
        env_state, obs = jax.vmap(self.env.reset)(jax.random.split(reset_key, episodes))
        carry = agent.dynamics.initial(episodes)

        def step(inputs, key):
            env_state, obs, carry, ret = inputs
            act_key, env_key = jax.random.split(key)
            carry, action = self.act(params, carry, obs, act_key, False)
            env_state, obs = jax.vmap(self.env.step)(env_state, action, jax.random.split(env_key, episodes))
            return (env_state, obs, carry, ret + obs["reward"]), None

        (_, _, _, ret), _ = jax.lax.scan(step, (env_state, obs, carry, jnp.zeros(episodes)),
                                         jax.random.split(key, self.env.length))
        return ret.mean()
