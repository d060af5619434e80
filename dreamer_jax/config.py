"""Configuration: one flat frozen dataclass, named presets, and a command line where every field is a flag.

`parse(["--configs", "pinpad", "size12m", "--seed", "3"])` starts from the defaults, applies the presets in
order (later ones override earlier ones), then the explicit flags. Fields are flat so that each one is the flag
of the same name (`--batch_size`, `--vta_max_seg_len`), as in the prototype; `--help` lists them by group.

Defaults are the current DreamerV3 (2024 algorithm, dreamer.md) including its official default model size,
size200m; the 2023 choices are one preset away (`dreamer2023`). This module imports no JAX at load time.
"""

import argparse
import dataclasses
import difflib
import json
import math
import numbers
import os
import pathlib
from typing import Any, Iterable, Mapping, Sequence

from dreamer_jax.status import write_atomic


class ConfigError(ValueError):
    """A setting a user asked for is invalid; the message names the field, the bad value and the fix."""


# Value checks: (predicate, requirement as shown to the user).
_POSITIVE = (lambda v: v > 0, "must be positive")
_NONNEG = (lambda v: v >= 0, "must be 0 or more")
_FRACTION = (lambda v: 0 <= v < 1, "must be in [0, 1)")
_RATE = (lambda v: 0 < v <= 1, "must be in (0, 1]")
_UNIT = (lambda v: 0 <= v <= 1, "must be in [0, 1]")
_PERCENT = (lambda v: 0 <= v <= 100, "must be a percentile in [0, 100]")
_SEQUENCE = (lambda v: v >= 2, "must be at least 2 (sequence models learn from transitions between steps)")
_ODD = (lambda v: v >= 3 and v % 2 == 1, "must be odd and at least 3 (bins mirror around a centre bin at 0)")
_IMAGE_SIZE = (lambda v: v in (16, 32, 64), "must be 16, 32 or 64 (pinpad draws 16 x 16 cells of 1, 2 or 4 pixels)")
_REPEAT_1 = (lambda v: v == 1, "must be 1 (action repeat is not supported; pinpad moves one cell per action)")

_GROUPS = {
    "run": "run: what to train, for how long, where and how",
    "data": "environment and replay",
    "model": "model sizes and architecture",
    "loss": "loss scales",
    "ac": "actor-critic (in imagination)",
    "opt": "optimisation",
    "vta": "VTA dynamics (read when --dynamics vta)",
}
_PRECISION_ALIASES = {"16": "bf16", "bfloat16": "bf16", "32": "fp32", "float32": "fp32"}


def _field(default: Any, group: str, help: str, check=None, choices=None, aliases=None, flags=()) -> Any:
    """A dataclass field that carries its --help text, help group, value check, choices and flag aliases."""
    meta = {"group": group, "help": help, "check": check, "choices": choices, "aliases": aliases or {}, "flags": flags}
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass(frozen=True)
class Config:
    """Every setting of a run; validated at construction, so an existing Config is always a valid one."""

    # run
    logdir: str = _field("", "run", "run directory (config.json, metrics.jsonl, checkpoints/); required to train")
    task: str = _field("pinpad_eight", "run", "task name; the entry point checks it against the env's tasks")
    seed: int = _field(0, "run", "random seed (of the first seed when --num_seeds > 1)", _NONNEG)
    steps: int = _field(1_000_000, "run", "env steps to train for, summed over the parallel envs", _POSITIVE)
    envs: int = _field(16, "run", "parallel training environments", _POSITIVE)
    prefill: int = _field(2500, "run", "env steps collected before training starts", _NONNEG)
    train_ratio: float = _field(
        32.0, "run", "replayed steps per env step; updates per env step = train_ratio / (batch_size * batch_length)",
        _POSITIVE)
    precision: str = _field(
        "bf16", "run", "compute dtype: bf16 (bfloat16) or fp32; 16, 32, bfloat16, float32 accepted; parameters, "
        "optimiser state, logits, noise, KLs and losses stay float32", choices=("bf16", "fp32"),
        aliases=_PRECISION_ALIASES)
    compile: bool = _field(True, "run", "jit the training and acting steps; False runs eagerly, for debugging")
    eval_every: int = _field(10_000, "run", "env steps between evaluations; 0 never evaluates", _NONNEG)
    eval_episodes: int = _field(10, "run", "episodes per evaluation", _POSITIVE)
    log_every: int = _field(1_000, "run", "env steps between lines of metrics.jsonl", _POSITIVE)
    save_every: int = _field(10_000, "run", "env steps between checkpoints; 0 saves only at the end", _NONNEG)
    num_seeds: int = _field(1, "run", "seeds trained side by side in one process (seed, seed + 1, ...), each in "
                            "its own run directory: put {seed} in --logdir", _POSITIVE)
    devices: int = _field(1, "run", "devices each training batch is split over (data parallel; batch_size must "
                          "divide by it)", _POSITIVE)
    distributed: bool = _field(False, "run", "join a multi-host job first (jax.distributed.initialize, with "
                               "JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID, or from SLURM or "
                               "Open MPI); --devices then counts every process's devices")

    # environment and replay
    time_limit: int = _field(2000, "data", "episode length in env steps (pinpad's default length is 2000)", _POSITIVE)
    action_repeat: int = _field(1, "data", "env steps per agent action; only 1 is supported", _REPEAT_1)
    size: int = _field(64, "data", "image height and width: 64 (the reference's), or 32 and 16, the same cells at 2 "
                       "and 1 pixels each; the CNNs halve down to 4 x 4", _IMAGE_SIZE)
    batch_size: int = _field(16, "data", "sequences per training batch", _POSITIVE)
    batch_length: int = _field(64, "data", "steps per training sequence", _SEQUENCE)
    replay_size: int = _field(1_000_000, "data", "replay capacity in env steps (uint8 images on the device)",
                              _POSITIVE)
    replay_online: bool = _field(True, "data", "train on each newly completed sequence of every env once, soon "
                                 "after it arrives (an online queue), and fill the rest of each batch uniformly")

    # model
    dynamics: str = _field("rssm", "model", "dynamics model: rssm, or vta (learned temporal abstraction)",
                           choices=("rssm", "vta"), flags=("--dynamics_type",))
    deter: int = _field(8192, "model", "deterministic state size D (size200m, the official default)", _POSITIVE)
    hidden: int = _field(1024, "model", "hidden width of the dynamics (core inputs, prior, posterior)", _POSITIVE)
    stoch: int = _field(32, "model", "stochastic latents S, each a categorical over --classes", _POSITIVE)
    classes: int = _field(64, "model", "classes per stochastic latent C", _POSITIVE)
    blocks: int = _field(8, "model", "GRU groups G of the block GRU; deter must divide by it", _POSITIVE)
    depth: int = _field(64, "model", "CNN base channels; stages use depth * [2, 3, 4, 4]", _POSITIVE)
    enc_depth: int = _field(0, "model", "the encoder's base channels; 0 takes --depth (the official: one depth for "
                            "both); the decoder needs the channels to draw, the encoder only to tell", _NONNEG)
    enc_kernel: int = _field(5, "model", "the encoder's square conv kernel (the official 5; the decoder keeps 5)",
                             (lambda v: v >= 1 and v % 2 == 1, "must be odd and at least 1 (a SAME conv centred "
                              "on its pixel)"))
    units: int = _field(1024, "model", "MLP width of the heads, actor and critic", _POSITIVE)
    mlp_layers: int = _field(3, "model", "hidden layers of the actor and critic MLPs", _POSITIVE)
    head_layers: int = _field(1, "model", "hidden layers of the reward and continue heads", _POSITIVE)
    core: str = _field("blockgru", "model", "recurrent cell: blockgru (2024, RMSNorm) or gru2023 (LayerNorm GRU)",
                       choices=("blockgru", "gru2023"))
    initial: str = _field("zeros", "model", "initial deterministic state: zeros (2024) or learned (2023)",
                          choices=("zeros", "learned"))
    unimix: float = _field(0.01, "model", "uniform mixture in the categorical latents", _FRACTION)
    latent_logit_scale: float = _field(1.0, "model", "the latent heads' logits times this before the unimix (1: the "
                                       "official): above 1 the prior and posterior start sharper, so that a sample "
                                       "carries what the encoder sees sooner (on pinpad at 16x16, the agent)",
                                       _POSITIVE)
    free_nats: float = _field(1.0, "model", "KL free nats, applied after summing over latents", _NONNEG)
    bins: int = _field(255, "model", "two-hot bins of the reward head and critic", _ODD)
    scan_unroll: int = _field(1, "model", "time steps per loop iteration of the observe and imagine scans "
                              "(lax.scan's unroll): the same maths in fewer, larger loop bodies", _POSITIVE)

    # loss scales
    rec_scale: float = _field(1.0, "loss", "image reconstruction loss scale", _NONNEG)
    rew_scale: float = _field(1.0, "loss", "reward loss scale", _NONNEG)
    con_scale: float = _field(1.0, "loss", "continue loss scale", _NONNEG)
    dyn_scale: float = _field(1.0, "loss", "dynamics KL scale, KL(sg(post) || prior) (0.5 in 2023)", _NONNEG)
    rep_scale: float = _field(0.1, "loss", "representation KL scale, KL(post || sg(prior))", _NONNEG)
    actor_scale: float = _field(1.0, "loss", "policy loss scale", _NONNEG)
    critic_scale: float = _field(1.0, "loss", "critic loss scale on imagined returns", _NONNEG)
    repval_scale: float = _field(0.3, "loss", "replay value loss scale (critic on replayed posterior states)",
                                 _NONNEG)
    repval_grad: bool = _field(True, "loss", "the replay value loss trains the world model through the posterior "
                               "features (official); False stops its gradient there")

    # actor-critic
    horizon: int = _field(15, "ac", "imagination steps from each start state", _POSITIVE)
    imag_last: int = _field(0, "ac", "imagine from (and train the replay value on) the last K steps of each "
                            "replayed sequence; 0 takes all of them (official)", _NONNEG)
    discount_horizon: int = _field(333, "ac", "discount horizon H: continue target (1 - is_terminal) * (1 - 1/H)",
                                   _POSITIVE)
    return_lambda: float = _field(0.95, "ac", "lambda of the lambda-returns", _UNIT)
    actor_entropy: float = _field(3e-4, "ac", "policy entropy bonus", _NONNEG)
    actor_outscale: float = _field(0.01, "ac", "scale of the policy output layer's initial weights (of their std)",
                                   _NONNEG)
    actor_unimix: float = _field(0.0, "ac", "uniform mixture in the categorical policy (0 as the official; 0.01 in "
                                 "2023)", _FRACTION)
    slow_target: bool = _field(False, "ac", "returns and the advantage baseline from the slow critic instead of the "
                               "online one (the official reads the online critic; the slow one is the "
                               "regulariser's target either way)")
    slow_critic_rate: float = _field(0.02, "ac", "EMA rate of the slow critic per update", _RATE)
    slow_critic_reg: float = _field(1.0, "ac", "weight of the critic's regulariser towards the slow critic",
                                    _NONNEG)
    retnorm_rate: float = _field(0.01, "ac", "EMA rate of the return percentiles", _RATE)
    retnorm_low: float = _field(5.0, "ac", "lower return percentile; advantages / max(1, high - low)", _PERCENT)
    retnorm_high: float = _field(95.0, "ac", "upper return percentile", _PERCENT)

    # optimisation
    optimizer: str = _field("laprop", "opt", "laprop (2024: one optimiser, AGC, RMS then momentum) or adam2023 "
                            "(three Adams with the model_*, actor_*, critic_* settings)",
                            choices=("laprop", "adam2023"))
    lr: float = _field(4e-5, "opt", "learning rate (laprop)", _POSITIVE)
    ac_lr_scale: float = _field(1.0, "opt", "actor and critic learning rate as a multiple of lr (laprop)", _POSITIVE)
    warmup: int = _field(1000, "opt", "updates of linear learning-rate warm-up (every optimiser)", _NONNEG)
    agc: float = _field(0.3, "opt", "adaptive gradient clipping, per tensor, relative to max(1e-3, |param|)",
                        _POSITIVE)
    beta2: float = _field(0.999, "opt", "second-moment decay (laprop and adam2023)", _FRACTION)
    momentum: float = _field(0.9, "opt", "momentum, the first-moment decay (laprop and adam2023)", _FRACTION)
    eps: float = _field(1e-20, "opt", "epsilon of the RMS scaling (laprop)", _POSITIVE)
    model_lr: float = _field(1e-4, "opt", "world-model learning rate (adam2023)", _POSITIVE)
    model_eps: float = _field(1e-8, "opt", "world-model Adam epsilon (adam2023)", _POSITIVE)
    model_clip: float = _field(1000.0, "opt", "world-model global gradient-norm clip (adam2023)", _POSITIVE)
    actor_lr: float = _field(3e-5, "opt", "actor learning rate (adam2023)", _POSITIVE)
    actor_eps: float = _field(1e-5, "opt", "actor Adam epsilon (adam2023)", _POSITIVE)
    actor_clip: float = _field(100.0, "opt", "actor global gradient-norm clip (adam2023)", _POSITIVE)
    critic_lr: float = _field(3e-5, "opt", "critic learning rate (adam2023)", _POSITIVE)
    critic_eps: float = _field(1e-5, "opt", "critic Adam epsilon (adam2023)", _POSITIVE)
    critic_clip: float = _field(100.0, "opt", "critic global gradient-norm clip (adam2023)", _POSITIVE)

    # VTA
    vta_max_seg_len: int = _field(30, "vta", "prior forced to READ after this many steps in a segment "
                                  "(the prototype's 30; the original VTA used 8)", _POSITIVE)
    vta_max_seg_num: int = _field(16, "vta", "prior forced to COPY after this many segments in a training sequence; "
                                  "READ wins over it (the original: 5 per 20 steps)", _POSITIVE)
    vta_boundary_force_scale: float = _field(0.0, "vta", "posterior logits set to +-scale at forced steps; 0 disables",
                                             _NONNEG)
    vta_boundary_temp: float = _field(1.0, "vta", "straight-through Gumbel temperature (changes gradients only)",
                                      _POSITIVE)
    vta_boundary_rate: float = _field(0.0, "vta", "target READ rate of the rate regulariser (mean segment 1/rate)",
                                      _FRACTION)
    vta_boundary_scale: float = _field(0.0, "vta", "scale of the rate regulariser KL(Bern(q) || Bern(rate)); "
                                       "0 disables", _NONNEG)
    vta_boundary_reward_input: bool = _field(False, "vta", "give the reward to the posterior boundary detector")
    vta_rate_mode: str = _field("step", "vta", "rate regulariser on each step's q (step, the prototype's) or on "
                                "the batch-mean q (batch)", choices=("step", "batch"))
    vta_force_final: float = _field(0.0, "vta", "force scale reached at the end of the schedule", _NONNEG)
    vta_temp_final: float = _field(1.0, "vta", "temperature reached at the end of the schedule", _POSITIVE)
    vta_schedule_steps: int = _field(0, "vta", "updates of linear decay of force scale and temperature to their "
                                     "*_final values; 0 keeps them constant", _NONNEG)
    vta_lookahead: int = _field(0, "vta", "future frames the posterior boundary sees; 0 is causal, > 0 is for "
                                "world-model analysis only and refused for acting", _NONNEG)
    vta_boundary_logit_clip: float = _field(10.0, "vta", "soft clip c of boundary logits, c * tanh(l / c)",
                                            _POSITIVE)
    vta_boundary_dyn_scale: float = _field(1.0, "vta", "boundary KL scale that trains the prior detector, "
                                           "KL(sg(q) || p)", _NONNEG)
    vta_boundary_rep_scale: float = _field(0.1, "vta", "boundary KL scale that trains the posterior detector, "
                                           "KL(q || sg(p))", _NONNEG)
    vta_value_mix: float = _field(1.0, "vta", "psi of the critic target psi * lambda-return + (1 - psi) * the "
                                  "abstract model's segment return (THICK Dreamer); below 1 the abstract model is "
                                  "built and trained; 1 is off", _UNIT)

    def __post_init__(self) -> None:
        """Coerce values to their field types (ints to floats, aliases to names), then validate."""
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, _coerce(f, getattr(self, f.name)))
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError for the first invalid field or combination of fields."""
        for f in dataclasses.fields(self):
            _check_field(f, getattr(self, f.name))
        _check_combinations(self)

    @property
    def updates_per_env_step(self) -> float:
        """Gradient updates per env step, so that each env step is replayed train_ratio times on average."""
        return self.train_ratio / (self.batch_size * self.batch_length)


_FIELDS = {f.name: f for f in dataclasses.fields(Config)}


# Fields added after runs had been saved, with the value that reproduces those runs: a config saved without one of
# them loads with this value. Every other missing field is refused.
ADDED_FIELDS = {"scan_unroll": 1, "vta_value_mix": 1.0, "latent_logit_scale": 1.0, "enc_depth": 0, "enc_kernel": 5}

# Fields that only the host loop reads (where a run writes, its seed, how long it trains, how often it logs, evaluates
# and saves, how it is launched): no compiled program depends on them.
HOST_FIELDS = ("logdir", "seed", "steps", "prefill", "compile", "eval_every", "eval_episodes", "log_every",
               "save_every", "num_seeds", "devices", "distributed")


def model_config(config: Config) -> Config:
    """`config` with its host-loop fields at their defaults: what the compiled programs see, so that runs of the same
    model share one `Learner` and with it every compiled program (jit keys its cache on the Learner)."""
    return dataclasses.replace(config, **{name: _FIELDS[name].default for name in HOST_FIELDS})


def linear_schedule(start: float, final: float, steps: int, update: Any) -> Any:
    """`start` decayed linearly to `final` over `steps` updates, then held; steps 0 means constant `start`."""
    if steps == 0:
        return start
    import jax.numpy as jnp

    return start + (final - start) * jnp.clip(update / steps, 0.0, 1.0)


def _invalid(name: str, value: Any, problem: str, fix: str) -> ConfigError:
    """The one message format for a bad value: field, value, problem, fix."""
    return ConfigError(f"invalid --{name}={value!r}: {problem}; {fix}")


def _coerce(f: dataclasses.Field, value: Any) -> Any:
    """`value` as the field's plain Python type (aliases resolved, integral numbers to int); else ConfigError."""
    if isinstance(value, str):
        value = f.metadata["aliases"].get(value, value)
    number = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if f.type is int and number and math.isfinite(value) and float(value).is_integer():
        return int(value)
    if f.type is float and number and math.isfinite(value):
        return float(value)
    if isinstance(value, f.type) and f.type in (bool, str):
        return value
    kind = {bool: "a boolean (True/False)", int: "an integer", float: "a finite number", str: "a string"}[f.type]
    raise _invalid(f.name, value, f"expected {kind}", f"pass e.g. --{f.name} {_show(f.default)}")


def _check_field(f: dataclasses.Field, value: Any) -> None:
    """Raise ConfigError if `value` is outside the field's choices or fails its check."""
    choices, check = f.metadata["choices"], f.metadata["check"]
    if choices and value not in choices:
        also = f" (or {', '.join(f.metadata['aliases'])})" if f.metadata["aliases"] else ""
        raise _invalid(f.name, value, "unknown value", f"choose one of {', '.join(choices)}{also}")
    if check and not check[0](value):
        raise _invalid(f.name, value, check[1], f"pass e.g. --{f.name} {_show(f.default)}")


def _check_combinations(c: Config) -> None:
    """Raise ConfigError for fields that are valid alone but not together."""
    if c.deter % c.blocks:
        raise _invalid("deter", c.deter, f"must be divisible by --blocks={c.blocks} (the block GRU splits the "
                       "state into equal groups)", f"pick a multiple of {c.blocks}, or change --blocks")
    if c.retnorm_low >= c.retnorm_high:
        raise _invalid("retnorm_low", c.retnorm_low, f"must be below --retnorm_high={c.retnorm_high}",
                       "pass e.g. --retnorm_low 5 --retnorm_high 95")
    if c.vta_boundary_scale > 0 and c.vta_boundary_rate == 0:
        raise _invalid("vta_boundary_rate", c.vta_boundary_rate, f"must be in (0, 1) when --vta_boundary_scale="
                       f"{c.vta_boundary_scale} (the KL to Bern(0) is infinite)",
                       "pass e.g. --vta_boundary_rate 0.1, or --vta_boundary_scale 0 to disable the regulariser")
    if c.batch_size % c.devices:
        raise _invalid("devices", c.devices, f"must divide --batch_size={c.batch_size} (each device takes an equal "
                       "share of every batch)",
                       f"pass a batch size that is a multiple of {c.devices}, or fewer devices")
    if c.num_seeds > 1 and c.logdir and "{seed}" not in c.logdir:
        raise _invalid("logdir", c.logdir, f"must contain {{seed}} with --num_seeds={c.num_seeds} (each seed writes "
                       "its own run directory)", f"pass e.g. --logdir {c.logdir}_seed{{seed}}")
    if c.imag_last > c.batch_length:
        raise _invalid("imag_last", c.imag_last, f"must be at most --batch_length={c.batch_length} (it counts steps "
                       "of each replayed sequence)", "pass 0 to imagine from every step")
    if c.vta_value_mix < 1 and c.dynamics != "vta":
        raise _invalid("vta_value_mix", c.vta_value_mix, f"mixes in the VTA abstract model's return, which "
                       f"--dynamics {c.dynamics} has not", "pass --dynamics vta, or --vta_value_mix 1")
    if c.replay_size < c.batch_length:
        raise _invalid("replay_size", c.replay_size, f"must hold at least one sequence of --batch_length="
                       f"{c.batch_length} steps", f"pass --replay_size {c.batch_length} or more")


def check_task(config: Config, tasks: Iterable[str]) -> None:
    """Refuse a task name the environment does not know, listing the ones it does."""
    tasks = list(tasks)
    if config.task not in tasks:
        raise _invalid("task", config.task, "unknown task", f"choose one of {', '.join(tasks)}")


def check_for_acting(config: Config) -> None:
    """Refuse settings that only make sense for world-model analysis, before an agent acts or is evaluated."""
    if config.vta_lookahead > 0:
        raise _invalid("vta_lookahead", config.vta_lookahead, "a posterior that sees future frames cannot act "
                       "online (lookahead is for world-model analysis only)", "pass --vta_lookahead 0 to act")


_SIZES = {  # name: (deter, hidden, classes, depth, units), all with 32 latents and 8 GRU blocks
    "size1m": (512, 64, 4, 4, 64),
    "size12m": (2048, 256, 16, 16, 256),
    "size25m": (3072, 384, 24, 24, 384),
    "size50m": (4096, 512, 32, 32, 512),
    "size100m": (6144, 768, 48, 48, 768),
    "size200m": (8192, 1024, 64, 64, 1024),
    "size400m": (12288, 1536, 96, 96, 1536),
}

_PRESETS: dict[str, dict[str, Any]] = {
    # The smallest model that runs every code path, for CPU tests: 8 GRU blocks of 8, 4x4 latents, 16x16 images,
    # short sequences and episodes (so resets and VTA's forced READ and COPY all happen), a higher lr.
    "debug": dict(
        size=16, deter=64, hidden=32, stoch=4, classes=4, blocks=8, depth=4, units=32, mlp_layers=2,
        envs=2, steps=256, prefill=64, batch_size=2, batch_length=8, train_ratio=8.0, horizon=4,
        time_limit=50, replay_size=1024, eval_every=128, eval_episodes=1, log_every=64, save_every=128,
        lr=3e-4, warmup=8, vta_max_seg_len=4, vta_max_seg_num=3,
    ),
    **{
        name: dict(deter=d, hidden=h, stoch=32, classes=c, blocks=8, depth=k, units=u)
        for name, (d, h, c, k, u) in _SIZES.items()
    },
    # The prototype's pinpad run (its model size is not set here: add a size preset, e.g. size12m).
    "pinpad": dict(
        task="pinpad_eight", envs=1, prefill=1200, batch_size=12, batch_length=40, train_ratio=320.0,
        time_limit=1000, steps=40_000, eval_every=10_000, log_every=10_000, action_repeat=1, size=64,
        replay_size=40_000,  # the whole run stays in replay (about 0.5 GB of images)
    ),
    # The first CPU setting, behind the committed learning and study results: 16x16 images (exactly the 64x64
    # information), a small model, a short warm-up, imagination from the last 8 steps of each sequence, lr 1e-4 (at
    # 3e-4 the policy collapsed before any reward), 1000-step episodes, fp32. Its world model never draws the agent.
    "pinpad_cpu_v1": dict(
        size=16, deter=256, hidden=64, stoch=16, classes=8, depth=4, units=64, batch_size=16, batch_length=32,
        imag_last=8, train_ratio=128.0, lr=1e-4, warmup=100, envs=4, time_limit=1000, prefill=2000, steps=40_000,
        replay_size=100_000, eval_every=2500, eval_episodes=4, log_every=2500, save_every=10_000, precision="fp32",
    ),
    # The second CPU setting (2026-12-02), behind the pinpad_cpu_rssm_seed0/1 results: pinpad_cpu_v1 with a world
    # model that draws the one-pixel agent (docs/dreamer_defaults.md says why each): CNN depth 16 and lr 3e-4 for
    # the world model (the decoder draws it at all), the actor and critic still at 1e-4, latent logits x3 (a
    # straight-through sample carries it), the reconstruction weighed as at 64x64, (64 / 16)^2 (the KL terms do
    # not outweigh it), and 8 episodes per periodic evaluation.
    "pinpad_cpu_v2": dict(
        size=16, deter=256, hidden=64, stoch=16, classes=8, depth=16, units=64, batch_size=16, batch_length=32,
        imag_last=8, train_ratio=128.0, lr=3e-4, ac_lr_scale=1 / 3, latent_logit_scale=3.0, rec_scale=16.0,
        warmup=100, envs=4, time_limit=1000, prefill=2000, steps=40_000, replay_size=100_000, eval_every=2500,
        eval_episodes=8, log_every=2500, save_every=10_000, precision="fp32",
    ),
    # The third CPU setting (2026-12-04), behind the campaign's first pilots (benchmarks/campaign.json): pinpad_cpu_v2
    # at under a third of its CPU seconds per env step (benchmarks.cost_profile): an encoder of 3x3 kernels at half
    # the channels and one update per 8 env steps. No seed of it earned by 40k env steps.
    "pinpad_cpu_v3": dict(enc_depth=8, enc_kernel=3, train_ratio=64.0),
    # The CPU setting of the learning benchmark (benchmarks/learning.py) and the study (experiments/study.py), chosen
    # by "Every seed learns" (docs/dreamer_defaults.md): pinpad_cpu_v1's model and learning rates, the only setting
    # at which more than one seed learned, with 8 episodes per periodic evaluation: the campaign's rssm and vta.
    "pinpad_cpu": dict(enc_depth=4, eval_episodes=8),
    # The 2023 (arXiv) DreamerV3 where it differs from the 2024 defaults.
    "dreamer2023": dict(dyn_scale=0.5, optimizer="adam2023", warmup=0, core="gru2023", initial="learned",
                        actor_unimix=0.01),
}


_PRESETS["pinpad_cpu_v3"] = {**_PRESETS["pinpad_cpu_v2"], **_PRESETS["pinpad_cpu_v3"]}
_PRESETS["pinpad_cpu"] = {**_PRESETS["pinpad_cpu_v1"], **_PRESETS["pinpad_cpu"]}


def presets() -> dict[str, dict[str, Any]]:
    """A copy of the named presets: name -> the fields it sets."""
    return {name: dict(values) for name, values in _PRESETS.items()}


def make(*names: str, base: Config | None = None, **overrides: Any) -> Config:
    """A Config from `base` (else the defaults), the named presets in order, then `overrides`."""
    values = to_dict(base or Config())
    for name in names:
        if name not in _PRESETS:
            raise ConfigError(f"unknown preset {name!r} in --configs; valid presets: {', '.join(_PRESETS)}")
        values.update(_PRESETS[name])
    unknown = [key for key in overrides if key not in _FIELDS]
    if unknown:
        raise ConfigError(f"unknown config fields {unknown}; run with --help to list every field")
    values.update(overrides)
    return Config(**values)


def parse(argv: Sequence[str] | None = None, tasks: Iterable[str] | None = None,
          base: Config | None = None) -> Config:
    """A Config from command-line flags: `base` (else defaults), then --configs presets in order, then flags."""
    namespace, unknown = _parser().parse_known_args(argv)
    if unknown:
        raise ConfigError(_unknown_message(unknown))
    given = vars(namespace)
    names = given.pop("configs", [])
    config = make(*names, base=base, **{name: _convert(_FIELDS[name], text) for name, text in given.items()})
    if tasks is not None:
        check_task(config, tasks)
    return config


def _parser() -> argparse.ArgumentParser:
    """The flag parser: only flags given on the command line land in the namespace, all as strings."""
    parser = argparse.ArgumentParser(
        description="Train DreamerV3 with RSSM or VTA dynamics. Presets (--configs) apply in order, later ones "
        "override earlier ones; explicit flags override presets. Booleans: True/False/true/false/1/0.",
        usage="%(prog)s [-h] [--configs PRESET [PRESET ...]] [--FIELD VALUE ...]",
        epilog=f"presets: {', '.join(_PRESETS)}", allow_abbrev=False, argument_default=argparse.SUPPRESS,
        formatter_class=lambda prog: argparse.HelpFormatter(prog, max_help_position=36, width=110))
    groups = {key: parser.add_argument_group(title) for key, title in _GROUPS.items()}
    groups["run"].add_argument("--configs", nargs="+", action="extend", metavar="PRESET",
                               help=f"presets to apply in order: {', '.join(_PRESETS)}")
    for f in _FIELDS.values():
        choices = f.metadata["choices"]
        metavar = "{" + ",".join(choices) + "}" if choices else f.type.__name__.upper()
        text = f"{f.metadata['help']} (default: {_show(f.default)})".replace("%", "%%")
        groups[f.metadata["group"]].add_argument(f"--{f.name}", *f.metadata["flags"], dest=f.name, metavar=metavar,
                                                 help=text)
    return parser


def _show(value: Any) -> str:
    """A default as it would be typed on the command line."""
    return repr(value) if value == "" else str(value)


def _convert(f: dataclasses.Field, text: str) -> Any:
    """A flag's text as the field's type; ConfigError naming the flag when it does not parse."""
    if f.type is bool:
        if text.lower() in ("true", "1"):
            return True
        if text.lower() in ("false", "0"):
            return False
        raise _invalid(f.name, text, "not a boolean", "use True/False/true/false/1/0")
    if f.type in (int, float):
        try:
            return int(text) if f.type is int and text.lstrip("+-").isdigit() else float(text)
        except ValueError:
            raise _invalid(f.name, text, "not a number", f"pass e.g. --{f.name} {_show(f.default)}") from None
    return text


def _unknown_message(unknown: list[str]) -> str:
    """Name the unknown flags (with close matches) and point to --help."""
    flags = [token.split("=")[0] for token in unknown if token.startswith("-")]
    if not flags:
        return f"unexpected arguments {unknown}: every setting is a flag (--name value); run with --help"
    known = ["--configs"] + [flag for f in _FIELDS.values() for flag in (f"--{f.name}", *f.metadata["flags"])]
    parts = []
    for flag in flags:
        close = difflib.get_close_matches(flag, known, n=1)
        parts.append(flag + (f" (did you mean {close[0]}?)" if close else ""))
    return f"unknown flag {', '.join(parts)}; run with --help to list every flag"


def to_dict(config: Config) -> dict[str, Any]:
    """The config as a flat JSON-ready dict, in field order."""
    return dataclasses.asdict(config)


def from_dict(values: Mapping[str, Any]) -> Config:
    """A Config from a saved dict; refuses missing or unknown fields rather than filling in defaults, except the
    fields of `ADDED_FIELDS`, which get the value that runs saved before them used."""
    values = {**{name: value for name, value in ADDED_FIELDS.items() if name not in values}, **values}
    missing = [name for name in _FIELDS if name not in values]
    unknown = [name for name in values if name not in _FIELDS]
    if missing or unknown:
        raise ConfigError(f"saved configuration does not match this version (missing fields {missing}, unknown "
                          f"fields {unknown}); use the dreamer_jax version that wrote it, or edit the file")
    return Config(**values)


def diff(a: Config, b: Config) -> dict[str, tuple[Any, Any]]:
    """The fields whose values differ between `a` and `b`: name -> (a's value, b's value), in field order."""
    return {name: (getattr(a, name), getattr(b, name)) for name in _FIELDS if getattr(a, name) != getattr(b, name)}


def run_diff(saved: Config, wanted: Config) -> dict[str, tuple[Any, Any]]:
    """`diff` without the run directory: the fields by which a saved run is not the run `wanted` describes."""
    return {name: values for name, values in diff(saved, wanted).items() if name != "logdir"}


def save(config: Config, path: str | os.PathLike) -> None:
    """Write the config as JSON, atomically (a reader never sees half a file)."""
    write_atomic(path, json.dumps(to_dict(config), indent=2) + "\n")


def load(path: str | os.PathLike) -> Config:
    """Read a config saved by `save`; ConfigError if it is missing or not a valid configuration."""
    path = pathlib.Path(path)
    try:
        values = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"no saved configuration at {path}; check the --logdir or checkpoint path") from None
    except json.JSONDecodeError as error:
        raise ConfigError(f"{path} is not valid JSON ({error}); restore or delete the file") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path} does not hold a configuration object; restore or delete the file")
    return from_dict(values)
