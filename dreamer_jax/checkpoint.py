"""Orbax checkpoints of the whole training state, each with the resolved configuration saved beside it."""

from __future__ import annotations

import contextlib
import logging
import pathlib
import sys
from typing import Callable, Sequence, TypeVar

import jax
import orbax.checkpoint as ocp

from dreamer_jax import config as cfg

T = TypeVar("T")


class CheckpointError(RuntimeError):
    """A run's checkpoints cannot be used as they are; the message names the folder and what to do."""


@contextlib.contextmanager
def _quiet(logger: str):
    """Silence a library's logger for the duration of a block."""
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        log.setLevel(level)


def manager(logdir: str | pathlib.Path, keep: int = 2) -> ocp.CheckpointManager:
    """The run's CheckpointManager on `logdir/checkpoints` (synchronous, so a finished save is complete), keeping
    the `keep` latest saves."""
    policy = ocp.checkpoint_managers.LatestN(n=keep)
    options = ocp.CheckpointManagerOptions(preservation_policy=policy, create=True, enable_async_checkpointing=False)
    with _quiet("absl"):  # it reads every step's metadata; a damaged step is reported when a restore needs it
        return ocp.CheckpointManager(pathlib.Path(logdir).absolute() / "checkpoints", options=options)


def save(mgr: ocp.CheckpointManager, step: int, state, config: cfg.Config) -> None:
    """Save `state` and `config` as checkpoint `step`, and wait until it is complete on disk."""
    mgr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                           config=ocp.args.JsonSave(cfg.to_dict(config))), force=True)
    mgr.wait_until_finished()


def restore(mgr: ocp.CheckpointManager, like, step: int | None = None):
    """(state, config) of `step` (default: the latest), the state shaped like the pytree `like`."""
    step = mgr.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError(f"no checkpoint in {mgr.directory}")
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    restored = mgr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                                         config=ocp.args.JsonRestore()))
    return restored.state, cfg.from_dict(restored.config)


def set_aside(logdir: str | pathlib.Path, steps: Sequence[int]) -> None:
    """Move the damaged checkpoints `steps` unchanged from `logdir/checkpoints` to `logdir/damaged_checkpoints`, so
    that a resumed run can save its own steps again; says where each went."""
    aside = pathlib.Path(logdir) / "damaged_checkpoints"
    aside.mkdir(exist_ok=True)
    for step in steps:
        target = next(aside / name for name in (f"{step}", *(f"{step}.{i}" for i in range(1, 1000)))
                      if not (aside / name).exists())
        (pathlib.Path(logdir) / "checkpoints" / str(step)).rename(target)
        print(f"warning: moved the damaged checkpoint {step} to {target}", file=sys.stderr, flush=True)


def reason(error: BaseException) -> str:
    """Why an operation failed, in one line: the type and first line of the innermost cause (orbax wraps them)."""
    while error.__cause__ is not None:
        error = error.__cause__
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0][:300]}" if lines else type(error).__name__


def restore_newest(mgr: ocp.CheckpointManager, restore_step: Callable[[int], T],
                   steps: Sequence[int] | None = None) -> tuple[T, int, list[int]]:
    """(restored, step, newer steps skipped): the newest of `steps` (default: all) that `restore_step` restores.

    A damaged checkpoint is skipped with one line on stderr and left as it is, so a run goes on from
    the newest one that restores; CheckpointError when none does.
    """
    steps = sorted(mgr.all_steps() if steps is None else steps, reverse=True)
    if not steps:
        raise CheckpointError(f"no checkpoint in {mgr.directory}")
    for i, step in enumerate(steps):
        try:
            with _quiet("absl"):  # orbax logs its own view of a damaged checkpoint; ours names step and cause
                return restore_step(step), step, steps[:i]
        except Exception as error:  # orbax raises many types for damaged or foreign checkpoints
            why = reason(error)
        if i + 1 < len(steps):
            print(f"warning: skipped checkpoint {step} in {mgr.directory}: it cannot be restored ({why}); "
                  f"trying step {steps[i + 1]}", file=sys.stderr, flush=True)
    raise CheckpointError(
        f"checkpoint(s) {', '.join(map(str, steps))} in {mgr.directory} cannot be restored ({steps[-1]}: {why}"
        f"{'; the newer ones: see above' if len(steps) > 1 else ''}); they are damaged or were written by another "
        "run. Move them out of that folder (nothing in them is deleted) and run again, or use a new --logdir")
