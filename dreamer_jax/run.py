"""Training runs on the host side: run directory, resume, logging, evaluation, checkpoints, signals.

`train(config, env)` is what `python -m experiments.train` calls and what a notebook calls.
Everything per env step happens on the device inside `Learner.chunk`; the host only
schedules chunks, writes a line of metrics now and then and saves checkpoints.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import pathlib
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from dreamer_jax import checkpoint, config as cfg, status
from dreamer_jax.progress import Bar, clock
from dreamer_jax.stops import stop_requests
from dreamer_jax.sweep import latest_checkpoint
from dreamer_jax.train import Learner, TrainState, release_crowded_programs, steps_per_iteration

# Fields a resumed run may change; any other difference means a different run.
RESUMABLE = ("logdir", "steps", "eval_every", "eval_episodes", "log_every", "save_every", "compile")
# Metrics that are running totals rather than per-update values: logged as their latest value.
TOTALS = ("skipped_updates",)
# Metrics logged per update as a sum over the batch's events, and the metric that counts those events: a log line
# gives the mean over the window's events (absent from a window without any), not over its updates.
EVENT_MEANS = {"rew_pred_event": ("rew_pred_event_sum", "reward_events")}
# Metrics that time the run on its machine (rates, the window's CPU seconds): everything else a run logs is a
# function of its configuration and seed.
TIMING = ("env_steps_per_s", "updates_per_s", "cpu_s")
CHUNK_STEPS = 1000  # env steps per chunk at most, so progress and signals are seen often


class RunDirInUse(RuntimeError):
    """Another live process trains in this run directory."""


class JobFailed(RuntimeError):
    """A multi-host job lost a process (it died, or a collective with it failed); every process must start again."""


def check_resume(saved: cfg.Config, config: cfg.Config) -> None:
    """Refuse to continue a run with settings that would make it a different run."""
    conflicts = {k: v for k, v in cfg.diff(saved, config).items() if k not in RESUMABLE}
    if conflicts:
        listed = ", ".join(f"--{k} {new!r} (saved: {old!r})" for k, (old, new) in conflicts.items())
        raise cfg.ConfigError(
            f"{config.logdir} holds a run with other settings: {listed}. Use a new --logdir for a new run, "
            f"or drop these flags to resume it (only {', '.join(RESUMABLE[1:])} may change on resume).")


def blocking_file(path: pathlib.Path) -> pathlib.Path | None:
    """The existing file at or above `path` that stops it being a folder, if any."""
    existing = next(p for p in (path, *path.parents) if p.exists())
    return None if existing.is_dir() else existing


def check_logdir(logdir: pathlib.Path) -> None:
    """Refuse a run directory that is, or lies inside, an existing file: it must be a folder, new or a run's."""
    file = blocking_file(logdir)
    if file:
        raise cfg.ConfigError(f"--logdir {logdir}: {file} is a file, not a folder; give a folder path (a new one "
                              "starts a run, a run's folder resumes it)")


@contextlib.contextmanager
def _lock(logdir: pathlib.Path):
    """Hold `logdir/.lock` with our pid; a lock left by a dead process is taken over."""
    path = logdir / ".lock"
    if path.exists():
        text = path.read_text().strip()
        pid = int(text) if text.isdigit() else 0
        if pid != os.getpid() and status.pid_alive(pid):
            raise RunDirInUse(f"{logdir} is in use by process {pid}; wait for it or stop it, "
                              "or train in another --logdir")
    path.write_text(str(os.getpid()))
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


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
        self.start = (time.monotonic(), env_steps, updates, time.process_time())

    def add(self, metrics: dict) -> None:
        """Fold in one chunk's per-update metrics (host arrays)."""
        for k, v in metrics.items():
            if k in TOTALS:
                self.latest[k] = float(v[-1])
            else:
                self.sums[k] = self.sums.get(k, 0.0) + float(np.sum(v))
        self.count += len(next(iter(metrics.values()))) if metrics else 0

    def summary(self, env_steps: int, updates: int) -> dict:
        seconds = max(time.monotonic() - self.start[0], 1e-9)
        out = {"env_steps_per_s": (env_steps - self.start[1]) / seconds,
               "updates_per_s": (updates - self.start[2]) / seconds,
               "cpu_s": time.process_time() - self.start[3]}  # the process's, every seed's and core's, this window
        sums = dict(self.sums)
        for name, (total, events) in EVENT_MEANS.items():
            if total in sums:
                if sums[events] > 0:
                    out[name] = sums[total] / sums[events]
                del sums[total]
        out.update({k: v / self.count for k, v in sums.items()} if self.count else {})
        out.update(self.latest)
        return out


def _episode_summaries(state: TrainState) -> tuple[list[dict], TrainState]:
    """Per agent: mean return and length of the episodes finished since the last call; then clear the sums."""
    ep = jax.device_get(state.episodes)
    sums = zip(*(np.atleast_1d(x).astype(float).tolist() for x in (ep.done_count, ep.done_return, ep.done_length)))
    summaries = [{"episodes": count, "train_return": ret / count if count else None,
                  "train_length": length / count if count else None} for count, ret, length in sums]
    zeros = lambda x: jax.device_put(np.zeros(x.shape, x.dtype), x.sharding)  # noqa: E731  same layout, new buffer
    episodes = state.episodes._replace(done_return=zeros(state.episodes.done_return),
                                       done_length=zeros(state.episodes.done_length),
                                       done_count=zeros(state.episodes.done_count))
    return summaries, state._replace(episodes=episodes)


def _due(before: int, after: int, every: int) -> bool:
    """Whether a multiple of `every` lies in (before, after]."""
    return every > 0 and after // every > before // every


def _chunk_iterations(config: cfg.Config, env_steps: int, train_from: int, per_iteration: int) -> int:
    """Iterations up to the next event (end of prefill, log, eval, save, end), at most CHUNK_STEPS env steps."""
    events = [config.steps] + [train_from] * (env_steps < train_from) + [
        (env_steps // every + 1) * every for every in (config.log_every, config.eval_every, config.save_every) if every]
    steps = min(min(events) - env_steps, CHUNK_STEPS)
    return max(1, math.ceil(steps / per_iteration))


def seed_configs(config: cfg.Config) -> list[cfg.Config]:
    """Each seed's run: seed, seed + 1, ..., in its own logdir ({seed} filled in), saved as a single run would be."""
    return [dataclasses.replace(config, seed=seed, num_seeds=1, logdir=config.logdir.replace("{seed}", str(seed)))
            for seed in range(config.seed, config.seed + config.num_seeds)]


def make_mesh(devices: int):
    """A one-axis ("batch") mesh over the first `devices` devices; None for one device. A multi-host job's mesh
    spans every device of every process, so that each process holds a share of every batch."""
    if jax.process_count() > 1 and devices != jax.device_count():
        raise cfg.ConfigError(
            f"--devices {devices} in a multi-host job of {jax.process_count()} processes with {jax.device_count()} "
            f"devices in all; pass --devices {jax.device_count()} (every process's devices)")
    if devices == 1:
        return None
    if jax.device_count() < devices:
        raise cfg.ConfigError(
            f"--devices {devices} but only {jax.device_count()} {jax.default_backend()} device(s) are visible; "
            f"lower --devices (on a CPU, XLA_FLAGS=--xla_force_host_platform_device_count={devices} makes "
            f"{devices} host devices for testing)")
    return jax.sharding.Mesh(np.array(jax.devices()[:devices]), ("batch",))


def train(config: cfg.Config, env, eval_env=None, progress: bool = True,
          deadline: float | None = None, probe: Callable | None = None) -> list[dict[str, Any]]:
    """Train (or resume) the run in `config.logdir` with `env`; returns the last metrics line of each seed's run.

    With `num_seeds` K > 1, K agents (seed, seed + 1, ...) train side by side in this process, each
    writing its own run directory (`{seed}` in logdir) exactly as a single run would. `eval_env`
    (default `env`) runs `eval_episodes` episodes every `eval_every` env steps; `probe(learner, params, key)`, if
    given, measures each agent's world model then too, its metrics joining the line (e.g. pinpad's agent
    tracking, `experiments.tracking.probe`). A stop signal
    (SIGINT, SIGTERM, SIGUSR2) saves a checkpoint after the current chunk and returns; the next
    call resumes from it; so does passing `deadline` (a `time.monotonic()` value), for a time budget.
    Resuming takes the newest checkpoint that restores: a damaged newer one is skipped with a warning and
    moved, unchanged, to `logdir/damaged_checkpoints/`. On return the compiled programs stay for the next run of
    the same model unless they crowd the process's memory maps (`release_crowded_programs`), so that any number
    of runs can train one after another in one process.
    """
    if not config.logdir:
        raise cfg.ConfigError("no run directory: give --logdir DIR")
    runs = seed_configs(config)
    for run in runs:
        check_logdir(pathlib.Path(run.logdir))
        saved_path = pathlib.Path(run.logdir) / "config.json"
        if saved_path.exists():
            check_resume(cfg.load(saved_path), run)
    mesh = make_mesh(config.devices)
    primary = jax.process_index() == 0  # in a multi-host job one process writes the logs
    with contextlib.ExitStack() as stack:
        for run in runs:
            logdir = pathlib.Path(run.logdir)
            logdir.mkdir(parents=True, exist_ok=True)
            if primary:
                stack.enter_context(_lock(logdir))
        stops = stack.enter_context(stop_requests())
        stack.enter_context(jax.disable_jit(not config.compile))
        if primary:
            for run in runs:
                cfg.save(run, pathlib.Path(run.logdir) / "config.json")
        try:
            return _loop(runs, env, eval_env or env, mesh, stops, progress and primary, primary, deadline, probe)
        except jax.errors.JaxRuntimeError as error:
            if jax.process_count() == 1:
                raise
            raise JobFailed(_job_failure(error, runs)) from error
        finally:
            release_crowded_programs()


def _job_failure(error: Exception, runs: list[cfg.Config]) -> str:
    """What a lost process means for the run, in one message: the cause, the checkpoint kept, how to resume."""
    logdir = pathlib.Path(runs[0].logdir)
    step = latest_checkpoint(logdir)
    kept = f"its newest checkpoint is step {step} in {logdir / 'checkpoints'}" if step is not None else (
        f"no checkpoint was saved in {logdir} yet")
    return (f"process {jax.process_index()} of the multi-host job lost contact with another process, which died or "
            f"stopped ({checkpoint.reason(error)}); {kept}. Start every process again with the same command to resume")


def _stacked(keys: list[jax.Array]) -> jax.Array:
    """One raw key per agent, stacked when there are several (the layout `Learner(seeds=K)` takes)."""
    return keys[0] if len(keys) == 1 else jnp.stack(keys)


def _agent(tree, i: int, seeds: int):
    """Agent i's part of a state or metrics tree (the tree itself for a single agent)."""
    return tree if seeds == 1 else jax.tree.map(lambda x: x[i], tree)


def _newest(mgr, like) -> tuple[Any, int | None, list[int]]:
    """(state, step, damaged newer steps skipped) of the newest checkpoint that restores; (None, None, []) if none."""
    if not mgr.all_steps():
        return None, None, []
    return checkpoint.restore_newest(mgr, lambda step: checkpoint.restore(mgr, like, step)[0])


def _restore(mgrs: list, state: TrainState, runs: list[cfg.Config]) -> tuple[TrainState, list[list[int]]]:
    """Every agent's state from its run's newest checkpoint that restores, and each run's damaged steps skipped.

    All seeds must stand at the same step.
    """
    seeds = len(runs)
    found = [_newest(mgr, _agent(state, i, seeds)) for i, mgr in enumerate(mgrs)]
    steps = [step for _, step, _ in found]
    skipped = [newer for _, _, newer in found]
    if set(steps) == {None}:
        return state, skipped
    if len(set(steps)) > 1:
        listed = ", ".join(f"{run.logdir} at {step}" for run, step in zip(runs, steps))
        raise cfg.ConfigError(f"the seeds' runs stand at different steps ({listed}); resume them one by one "
                              "(--num_seeds 1), or move the unfinished ones aside")
    parts = [part for part, _, _ in found]
    restored = parts[0] if seeds == 1 else jax.tree.map(lambda *xs: jnp.stack(xs), *parts)
    return jax.device_put(restored, jax.tree.map(lambda x: x.sharding, state)), skipped


def plan_text(config: cfg.Config, env_steps: int, logdirs: list[pathlib.Path]) -> str:
    """What a run is about to do and where to look, printed as it starts."""
    seeds = f"seeds {config.seed} to {config.seed + len(logdirs) - 1}" if len(logdirs) > 1 else f"seed {config.seed}"
    start = f"resuming at env step {env_steps}" if env_steps else f"after a prefill of {config.prefill} random steps"
    episodes = f"{config.eval_episodes} episode" + "s" * (config.eval_episodes != 1)
    evaluation = (f"an evaluation of {episodes} every {config.eval_every} env steps"
                  if config.eval_every else "no periodic evaluation")
    flag, where = ("logdir", logdirs[0]) if len(logdirs) == 1 else ("logroot", logdirs[0].parent)
    lines = [f"train: {config.dynamics} on {config.task}, {seeds}, to {config.steps} env steps, {start}; "
             f"{config.updates_per_env_step:g} updates of {config.batch_size}x{config.batch_length} per env step "
             f"(train ratio {config.train_ratio:g}); {evaluation}",
             *(f"  metrics: {logdir / 'metrics.jsonl'} (a line every {config.log_every} env steps)"
               for logdir in logdirs),
             f"  curves: python -m experiments.plot --{flag} {where}",
             f"  boundaries: python -m experiments.eval_boundaries --{flag} {where}"]
    return "\n".join(lines)


def estimate_text(rate: float, env_steps: int, total: int) -> str:
    """The time left at the rate of the first timed updates (compiling excluded; evaluations not counted)."""
    return (f"  speed: {rate:.1f} env steps/s over the first updates: about {clock(max(total - env_steps, 0) / rate)} "
            f"(h:mm:ss) to {total} env steps on this machine, evaluations aside")


def _loop(runs, env, eval_env, mesh, stops, progress, primary, deadline, probe) -> list[dict[str, Any]]:
    config, seeds = runs[0], len(runs)
    logdirs = [pathlib.Path(run.logdir) for run in runs]
    mgrs = [checkpoint.manager(logdir) for logdir in logdirs]
    learner, state = Learner.create(config, env, _stacked([jax.random.PRNGKey(run.seed) for run in runs]), seeds,
                                    mesh)
    eval_learner = dataclasses.replace(learner, env=eval_env)
    state, skipped = _restore(mgrs, state, runs)
    env_steps, updates = int(np.max(state.env_steps)), int(np.max(state.updates))
    if any(skipped):  # going on from an older checkpoint: the damaged newer ones move aside, unchanged
        if primary:
            for logdir, newer in zip(logdirs, skipped):
                checkpoint.set_aside(logdir, newer)
        if jax.process_count() > 1:  # the other processes look at the folders only once they are moved
            multihost_utils.sync_global_devices("damaged checkpoints set aside")
        mgrs = [checkpoint.manager(logdir) for logdir in logdirs]
    if primary:
        for logdir in logdirs:
            _truncate_metrics(logdir / "metrics.jsonl", env_steps)
    per_iteration = steps_per_iteration(config)[0] * config.envs
    train_from = max(config.prefill, config.batch_length * config.envs)
    windows = [_Window(env_steps, updates) for _ in runs]
    desc = f"{config.dynamics} {config.task}" + (f" x{seeds} seeds" if seeds > 1 else "")
    if progress:
        print(plan_text(config, env_steps, logdirs), flush=True)
    bar = Bar(config.steps, desc=desc) if progress else None
    compiled, timed = set(), False  # chunk shapes run once (compiled); whether the speed has been told
    lines: list[dict[str, Any]] = [{} for _ in runs]
    began = (time.monotonic(), env_steps)
    while env_steps < config.steps and not stops and (deadline is None or time.monotonic() < deadline):
        iterations = _chunk_iterations(config, env_steps, train_from, per_iteration)
        chunk_began, training = time.monotonic(), env_steps >= train_from
        shape = (iterations if learner.is_fused else 0, training)  # a fused chunk compiles once per length
        state, metrics = learner.chunk(state, iterations, training)
        if bar and training and not timed and shape in compiled:
            steps = int(np.max(state.env_steps)) - env_steps
            bar.panel.message(estimate_text(steps / (time.monotonic() - chunk_began), env_steps + steps, config.steps))
            timed = True
        compiled.add(shape)
        metrics = jax.device_get(metrics)  # one transfer; the agents' parts are sliced on the host
        for i, window in enumerate(windows):
            window.add(_agent(metrics, i, seeds))
        before, env_steps, updates = env_steps, int(np.max(state.env_steps)), int(np.max(state.updates))
        evaluated = _due(before, env_steps, config.eval_every)
        if evaluated or _due(before, env_steps, config.log_every) or env_steps >= config.steps:
            episodes, state = _episode_summaries(state)
            lines = [{"step": env_steps, "updates": updates, **ep, **window.summary(env_steps, updates)}
                     for ep, window in zip(episodes, windows)]
            if evaluated:
                keys = _stacked([jax.random.fold_in(jax.random.PRNGKey(run.seed + 1), env_steps) for run in runs])
                ret = eval_learner.evaluate(state.params, config.eval_episodes, keys)
                for line, r in zip(lines, np.atleast_1d(ret)):
                    line["eval_return"] = float(r)
                if probe is not None:
                    for i, line in enumerate(lines):
                        line.update(probe(learner, _agent(state.params, i, seeds), _agent(keys, i, seeds)))
            if primary:
                for logdir, line in zip(logdirs, lines):
                    with (logdir / "metrics.jsonl").open("a") as f:
                        f.write(json.dumps(line) + "\n")
            windows = [_Window(env_steps, updates) for _ in runs]
        if _due(before, env_steps, config.save_every):
            _save(mgrs, env_steps, state, runs)
        if primary:  # for a sweep watching these runs: where they are, read atomically by another process
            rate = (env_steps - began[1]) / max(time.monotonic() - began[0], 1e-9)
            for logdir in logdirs:
                status.write_atomic(logdir / "progress.json", json.dumps(
                    {"step": env_steps, "total": config.steps, "env_steps_per_s": rate, "time": time.time()}))
        if bar:
            ret = lines[0].get("train_return")
            bar.update(min(env_steps, config.steps), "" if ret is None else f"return {ret:.1f}")
    if bar:
        bar.close()
    if env_steps not in mgrs[0].all_steps():
        _save(mgrs, env_steps, state, runs)
    if stops and primary:
        print(f"stopped by signal {stops[0]} at step {env_steps}; checkpoint saved in "
              f"{', '.join(str(m.directory) for m in mgrs)}; run the same command again to resume", flush=True)
    return lines


def _save(mgrs: list, env_steps: int, state: TrainState, runs: list[cfg.Config]) -> None:
    """A checkpoint of every agent in its own run directory."""
    for i, (mgr, run) in enumerate(zip(mgrs, runs)):
        checkpoint.save(mgr, env_steps, _agent(state, i, len(runs)), run)
