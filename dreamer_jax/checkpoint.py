"""Orbax checkpoints of the whole training state, each with the resolved configuration saved beside it."""

from __future__ import annotations

import pathlib

import jax
import orbax.checkpoint as ocp

from dreamer_jax import config as cfg


def manager(logdir: str | pathlib.Path, keep: int = 2) -> ocp.CheckpointManager:
    """The run's CheckpointManager on `logdir/checkpoints` (synchronous, so a finished save is complete)."""
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=False)
    return ocp.CheckpointManager(pathlib.Path(logdir).absolute() / "checkpoints", options=options)


def save(mgr: ocp.CheckpointManager, step: int, state, config: cfg.Config) -> None:
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
