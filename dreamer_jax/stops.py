"""Stop requests: the signals that ask a process to save and stop, caught and listed instead of ending it, so that
training, sweeps and campaigns stop at a point of their choosing. Imports no JAX (the launchers use it)."""

from __future__ import annotations

import contextlib
import signal

# Signals that ask a run to save and stop: ^C, kill, and the time-limit warning SLURM sends with
# --signal=USR2@SECONDS (submitit's default), which reaches every process of a job.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2)


@contextlib.contextmanager
def stop_requests(signals=STOP_SIGNALS):
    """Turn `signals` into a request to stop (the list of those received), instead of their default action."""
    requested: list[int] = []
    handler = lambda signum, frame: requested.append(signum)  # noqa: E731
    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield requested
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
