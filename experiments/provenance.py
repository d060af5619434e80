"""Where a result's numbers come from: the commit checked out and the version of the model's code. Imports no JAX, so
that the campaign's and the benchmarks' records can name them without loading a model."""

from __future__ import annotations

import pathlib
import subprocess


def commit() -> str | None:
    """The checked-out commit of this repository, or None outside a git checkout."""
    here = pathlib.Path(__file__).resolve().parent
    out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else None


def model_code() -> str | None:
    """The version of the code a run's numbers depend on: the git trees of dreamer_jax/ and pinpad/ at HEAD, with
    "+dirty" when either differs from HEAD in the work tree; None outside a git checkout."""
    root = pathlib.Path(__file__).resolve().parent.parent
    git = lambda *args: subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)  # noqa: E731
    trees = git("rev-parse", "HEAD:dreamer_jax", "HEAD:pinpad")
    if trees.returncode != 0:
        return None
    dirty = git("diff", "--quiet", "HEAD", "--", "dreamer_jax", "pinpad").returncode != 0
    return "/".join(tree[:10] for tree in trees.stdout.split()) + ("+dirty" if dirty else "")
