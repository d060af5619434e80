"""A sweep's status file drawn for a terminal: its progress bars and each run's outcome.

`render(fields)` draws the bars that `python -m experiments.sweep` shows while it runs and `python -m
experiments.monitor` redraws from the status file (`dreamer_jax.ledger` lists its fields); `summary(fields)` lists
each run's outcome at the end. Imports no JAX.
"""

from __future__ import annotations

import time
from typing import Any, Mapping

from dreamer_jax.progress import Bar, clock
from dreamer_jax.status import StatusError


def _value(fields: Mapping[str, Any], key: str, kind=str) -> Any:
    """`fields[key]` as `kind`; StatusError when it is missing or malformed."""
    try:
        return kind(fields[key])
    except (KeyError, ValueError):
        raise StatusError(f"no valid {key} in the status ({fields.get(key)!r}); is this a sweep status file "
                          "written by experiments.sweep?") from None


def render(fields: Mapping[str, Any], now: float | None = None) -> list[str]:
    """The sweep's bars drawn from its status: the current run (env steps, rate, ETA; how many runs are at work when
    several are), then the whole sweep (i/N)."""
    now = time.time() if now is None else now
    total, index, phase = _value(fields, "RUNS_TOTAL", int), _value(fields, "CURRENT", int), fields.get("CURRENT_PHASE")
    lines = []
    if phase:
        elapsed = now - _value(fields, "CURRENT_STARTED", float)
        desc = f"({index}/{total}) {fields.get('CURRENT_RUN', '')}"
        if phase == "train" and _value(fields, "CURRENT_TOTAL", int):
            bar = Bar(_value(fields, "CURRENT_TOTAL", int), desc, elapsed=elapsed,
                      first_done=_value(fields, "CURRENT_FIRST_STEP", int))
            working = _value(fields, "RUNS_RUNNING", int) + _value(fields, "EVALS_RUNNING", int)
            lines.append(bar.line(_value(fields, "CURRENT_STEP", int), "env steps"
                                  + (f" (+{working - 1} running)" if working > 1 else "")))
        else:
            doing = {"train": "starting training", "eval": "evaluating boundaries"}.get(phase, "building the table")
            lines.append(f"{desc if index else 'sweep'}: {doing} {clock(elapsed)}")
    counts = {s: _value(fields, f"RUNS_{s.upper()}", int) for s in ("done", "failed", "skipped")}
    ended = _value(fields, "RUNS_ENDED", int)
    # Runs trained before take no training time: the rate counts the others.
    sweep = Bar(total, "sweep", elapsed=now - _value(fields, "SWEEP_STARTED", float),
                first_done=min(counts["skipped"], ended), per="h")
    state = _value(fields, "SWEEP_STATE")
    note = ", ".join(f"{n} {s}" for s, n in counts.items()) + ("" if state == "running" else f"; {state}")
    return lines + [sweep.line(ended, note)]


def summary(fields: Mapping[str, Any]) -> list[str]:
    """One line per run (training and evaluation outcome with their notes), then the table's outcome."""
    lines = [f"{fields.get(key, key)}: {_outcome(fields, f'{key}_TRAIN', 'train')}, "
             f"{_outcome(fields, f'{key}_EVAL', 'eval')}"
             for key in (f"RUN_{i}" for i in range(1, _value(fields, "RUNS_TOTAL", int) + 1))]
    return lines + [_outcome(fields, "TABLE", "table:")]


def _outcome(fields: Mapping[str, Any], key: str, label: str) -> str:
    """`label`, the state under `key` and, in brackets, its note (under `key`_NOTE) if it has one."""
    note = fields.get(f"{key}_NOTE")
    return f"{label} {fields.get(key, '?')}" + (f" ({note})" if note else "")
