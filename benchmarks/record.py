"""What a benchmark's results file holds beside its measurements: when, on which machine, at which commit, and the
command that wrote it, so that every figure quoted from it can be traced and rerun."""

from __future__ import annotations

import json
import os
import pathlib
import platform
import shlex
import sys
import time

import jax

from dreamer_jax.status import write_atomic
from experiments.provenance import commit


def machine() -> dict:
    """The device JAX runs on, the processor, the CPU count and the versions."""
    device = jax.devices()[0]
    return dict(platform=device.platform, device=str(device.device_kind), processor=platform.processor()
                or platform.machine(), cpus=os.cpu_count(), jax=jax.__version__, python=platform.python_version())


def write(path: str | os.PathLike, module: str, argv: list[str] | None, **results) -> pathlib.Path:
    """Write `results` to the JSON file `path` (atomically) with the date, machine, commit and command."""
    args = sys.argv[1:] if argv is None else argv
    data = {"date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "command": shlex.join(["python", "-m", module, *args]),
            "commit": commit(), "machine": machine(), **results}
    path = pathlib.Path(path)
    write_atomic(path, json.dumps(data, indent=1) + "\n")
    return path
