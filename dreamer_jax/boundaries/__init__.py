"""Judging learned boundaries: load a run, collect episodes, filter them, score and draw (also in notebooks).

    run = boundaries.load_run(logdir, env)
    trace = boundaries.trace(run, boundaries.collect(run, env, 20, key, policy), key)
    result = boundaries.evaluate(trace)
    boundaries.figures.grid(trace)
"""

import importlib

from dreamer_jax.boundaries import metrics, table
from dreamer_jax.boundaries.analysis import Run, RunError, collect, load_config, load_run, trace
from dreamer_jax.boundaries.metrics import evaluate
from dreamer_jax.boundaries.trace import EVENT_TYPES, Trace

__all__ = ["EVENT_TYPES", "Run", "RunError", "Trace", "collect", "evaluate", "figures", "load_config", "load_run",
           "metrics", "table", "trace"]


def __getattr__(name: str):
    """`figures` is imported on first use: it loads matplotlib, which a training process (it imports `analysis`)
    never needs."""
    if name == "figures":
        return importlib.import_module(f"{__name__}.figures")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
