"""Training runs on the host side: run directory, resume, logging, evaluation, checkpoints, signals.

`train(config, env)` is what `python -m experiments.train` calls and what a notebook calls.
Everything per env step happens on the device inside `Learner.chunk`; the host only
schedules chunks, writes a line of metrics now and then and saves checkpoints.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import pathlib
import signal
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dreamer_jax import checkpoint, config as cfg
from dreamer_jax.progress import Bar
from dreamer_jax.train import Learner, TrainState, steps_per_iteration

# Fields a resumed run may change; any other difference means a different run.
RESUMABLE = ("logdir", "steps", "eval_every", "eval_episodes", "log_every", "save_every", "compile")
# Metrics that are running totals rather than per-update values: logged as their latest value.
TOTALS = ("skipped_updates",)
CHUNK_STEPS = 1000  # env steps per chunk at most, so progress and signals are seen often


class RunDirInUse(RuntimeError):
    """Another live process trains in this run directory."""


def check_resume(saved: cfg.Config, config: cfg.Config) -> None:
    """Refuse to continue a run with settings that would make it a different run."""
    conflicts = {k: v for k, v in cfg.diff(saved, config).items() if k not in RESUMABLE}
    if conflicts:
        listed = ", ".join(f"--{k} {new!r} (saved: {old!r})" for k, (old, new) in conflicts.items())
        raise cfg.ConfigError(
            f"{config.logdir} holds a run with other settings: {listed}. Use a new --logdir for a new run, "
            f"or drop these flags to resume it (only {', '.join(RESUMABLE[1:])} may change on resume).")


@contextlib.contextmanager
def _lock(logdir: pathlib.Path):
    """Hold `logdir/.lock` with our pid; a lock left by a dead process is taken over."""
    path = logdir / ".lock"
    if path.exists():
        try:
            pid = int(path.read_text().strip())
            os.kill(pid, 0)
        except (ValueError, ProcessLookupError):
            pass
        except PermissionError:
            raise RunDirInUse(f"{logdir} is in use by process {path.read_text().strip()}")
        else:
            if pid != os.getpid():
                raise RunDirInUse(f"{logdir} is in use by process {pid}; wait for it or stop it, "
                                  "or train in another --logdir")
    path.write_text(str(os.getpid()))
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def _stop_requests():
    """Turn SIGINT and SIGTERM into a request to save and stop after the current chunk."""
    requested: list[int] = []
    handler = lambda signum, frame: requested.append(signum)  # noqa: E731
    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield requested
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _truncate_metrics(path: pathlib.Path, step: int) -> None:
    """Drop lines logged after `step` (by a run killed after its last checkpoint)."""
    if path.exists():
        lines = [ln for ln in path.read_text().splitlines() if ln and json.loads(ln)["step"] <= step]
        path.write_text("".join(ln + "\n" for ln in lines))


class _Window:
    """Update metrics, counts and wall time since the last log line."""

    def __init__(self, env_steps: int, updates: int):
        self.sums: dict[str, float] = {}
        self.count = 0
        self.latest: dict[str, float] = {}
        self.start = (time.monotonic(), env_steps, updates)

    def add(self, metrics: dict) -> None:
        metrics = jax.device_get(metrics)
        for k, v in metrics.items():
            if k in TOTALS:
                self.latest[k] = float(v[-1])
            else:
                self.sums[k] = self.sums.get(k, 0.0) + float(np.sum(v))
        self.count += len(next(iter(metrics.values()))) if metrics else 0

    def summary(self, env_steps: int, updates: int) -> dict:
        seconds = max(time.monotonic() - self.start[0], 1e-9)
        out = {"env_steps_per_s": (env_steps - self.start[1]) / seconds,
               "updates_per_s": (updates - self.start[2]) / seconds}
        out.update({k: v / self.count for k, v in self.sums.items()} if self.count else {})
        out.update(self.latest)
        return out


def _episode_summary(state: TrainState) -> tuple[dict, TrainState]:
    """Mean return and length of the episodes finished since the last call, then clear the sums."""
    ep = jax.device_get(state.episodes)
    count = float(ep.done_count)
    summary = {"episodes": count,
               "train_return": float(ep.done_return) / count if count else None,
               "train_length": float(ep.done_length) / count if count else None}
    zero = lambda: jnp.zeros((), jnp.float32)  # noqa: E731
    episodes = state.episodes._replace(done_return=zero(), done_length=zero(), done_count=zero())
    return summary, state._replace(episodes=episodes)


def _due(before: int, after: int, every: int) -> bool:
    """Whether a multiple of `every` lies in (before, after]."""
    return every > 0 and after // every > before // every


def _chunk_iterations(config: cfg.Config, env_steps: int, train_from: int, per_iteration: int) -> int:
    """Iterations up to the next event (end of prefill, log, eval, save, end), at most CHUNK_STEPS env steps."""
    events = [config.steps] + [train_from] * (env_steps < train_from) + [
        (env_steps // every + 1) * every for every in (config.log_every, config.eval_every, config.save_every) if every]
    steps = min(min(events) - env_steps, CHUNK_STEPS)
    return max(1, math.ceil(steps / per_iteration))


def train(config: cfg.Config, env, eval_env=None, progress: bool = True) -> dict[str, Any]:
    """Train (or resume) the run in `config.logdir` with `env`; returns the last metrics line.

    `eval_env` (default `env`) runs `eval_episodes` episodes every `eval_every` env steps.
    SIGINT or SIGTERM saves a checkpoint and returns; the next call resumes from it.
    """
    if not config.logdir:
        raise cfg.ConfigError("no run directory: give --logdir DIR")
    logdir = pathlib.Path(config.logdir)
    saved_path = logdir / "config.json"
    if saved_path.exists():
        check_resume(cfg.load(saved_path), config)
    logdir.mkdir(parents=True, exist_ok=True)
    with _lock(logdir), _stop_requests() as stops, jax.disable_jit(not config.compile):
        cfg.save(config, saved_path)
        return _loop(config, env, eval_env or env, logdir, stops, progress)


def _loop(config, env, eval_env, logdir, stops, progress) -> dict[str, Any]:
    metrics_path = logdir / "metrics.jsonl"
    mgr = checkpoint.manager(logdir)
    learner, state = Learner.create(config, env, jax.random.PRNGKey(config.seed))
    eval_learner = Learner(config, eval_env, learner.graphdef, learner.critic_graphdef)
    if mgr.latest_step() is not None:
        state, _ = checkpoint.restore(mgr, state)
        _truncate_metrics(metrics_path, int(state.env_steps))
    per_iteration = steps_per_iteration(config)[0] * config.envs
    train_from = max(config.prefill, config.batch_length * config.envs)
    env_steps, updates = int(state.env_steps), int(state.updates)
    window = _Window(env_steps, updates)
    bar = Bar(config.steps, desc=f"{config.dynamics} {config.task}") if progress else None
    line: dict[str, Any] = {}
    while env_steps < config.steps and not stops:
        iterations = _chunk_iterations(config, env_steps, train_from, per_iteration)
        state, metrics = learner.chunk(state, iterations, env_steps >= train_from)
        window.add(metrics)
        before, env_steps, updates = env_steps, int(state.env_steps), int(state.updates)
        evaluated = _due(before, env_steps, config.eval_every)
        if evaluated or _due(before, env_steps, config.log_every) or env_steps >= config.steps:
            episodes, state = _episode_summary(state)
            line = {"step": env_steps, "updates": updates, **episodes, **window.summary(env_steps, updates)}
            if evaluated:
                key = jax.random.fold_in(jax.random.PRNGKey(config.seed + 1), env_steps)
                ret, length = eval_learner.evaluate(state.params, config.eval_episodes, key)
                line.update(eval_return=float(ret), eval_length=float(length))
            with metrics_path.open("a") as f:
                f.write(json.dumps(line) + "\n")
            window = _Window(env_steps, updates)
        if _due(before, env_steps, config.save_every):
            checkpoint.save(mgr, env_steps, state, config)
        if bar:
            ret = line.get("train_return")
            bar.update(min(env_steps, config.steps), "" if ret is None else f"return {ret:.1f}")
    if bar:
        bar.close()
    if mgr.latest_step() != env_steps:
        checkpoint.save(mgr, env_steps, state, config)
    if stops:
        print(f"stopped by signal {stops[0]} at step {env_steps}; checkpoint saved in {mgr.directory}; "
              "run the same command again to resume", flush=True)
    return line
