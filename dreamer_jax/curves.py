"""Learning curves of training runs: read `metrics.jsonl`, group seeds into conditions, mean and 95% interval.

A run is a directory with a `metrics.jsonl`. Under a log root, runs are grouped into conditions by their
directory name with a trailing `_seed<N>` removed (the names `experiments.sweep` and the learning benchmark
give), so `pinpad_three_rssm_seed0` and `..._seed1` are two seeds of `pinpad_three_rssm`. The x axis is env
steps (`step`), gradient updates (`updates`) or training time (`time`: seconds summed over the log windows,
each window's env steps over its env steps per second, so time spent stopped between resumes does not count).
Imports no JAX.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import re
from typing import Iterable, Mapping, Sequence

import numpy as np

from dreamer_jax.resampling import bootstrap_weights

X_AXES = ("step", "updates", "time")
# Fewest runs whose 95% interval is shaded: the bootstrap's over two runs is the span between them, so two runs are
# shown as themselves.
MIN_RUNS_SHADED = 3
BOOTSTRAP_RESAMPLES = 2000  # of the runs, for the interval of their mean
BOOTSTRAP_SEED = 0
DEFAULT_METRICS = ("eval_return", "train_return", "loss_rec", "loss_rew", "loss_dyn", "policy_entropy")
_SEED = re.compile(r"_seed\d+$")


class CurveError(ValueError):
    """Curves that cannot be drawn as asked; the message names the problem and the fix."""


def read_metrics(logdir: str | os.PathLike) -> list[dict]:
    """The lines of a run's metrics.jsonl, with `time` (training seconds so far) added to each."""
    path = pathlib.Path(logdir) / "metrics.jsonl"
    if not path.exists():
        raise CurveError(f"{logdir} has no metrics.jsonl; point --logdir at a training run's directory")
    lines = [json.loads(text) for text in path.read_text().splitlines() if text.strip()]
    elapsed, previous = 0.0, 0
    for line in lines:
        rate = line.get("env_steps_per_s") or 0.0
        elapsed += (line["step"] - previous) / rate if rate > 0 else 0.0
        previous = line["step"]
        line["time"] = elapsed
    return lines


def condition_of(logdir: str | os.PathLike) -> str:
    """The condition a run belongs to: its directory name without a trailing `_seed<N>`."""
    return _SEED.sub("", pathlib.Path(logdir).name)


def find_runs(logroot: str | os.PathLike) -> dict[str, list[pathlib.Path]]:
    """Every run under `logroot` (any depth), grouped by condition: conditions by name, runs by seed."""
    root = pathlib.Path(logroot)
    if not root.is_dir():
        raise CurveError(f"log root {root} is not a directory; pass the folder that holds the runs")
    groups: dict[str, list[pathlib.Path]] = {}
    for path in root.rglob("metrics.jsonl"):
        groups.setdefault(condition_of(path.parent), []).append(path.parent)
    if not groups:
        raise CurveError(f"no runs under {root} (no metrics.jsonl found); train one there first, or pass another "
                         "--logroot")
    seed = lambda d: int(d.name.rsplit("_seed", 1)[1]) if _SEED.search(d.name) else -1  # noqa: E731
    return {name: sorted(groups[name], key=lambda d: (seed(d), d.name)) for name in sorted(groups)}


def series(lines: Sequence[Mapping], metric: str, x: str = "step") -> tuple[np.ndarray, np.ndarray]:
    """(x values, metric values) of the lines that carry a finite value of `metric`."""
    points = [(line[x], line[metric]) for line in lines
              if isinstance(line.get(metric), (int, float)) and math.isfinite(line[metric])]
    xs, ys = (np.array(v, np.float64) for v in zip(*points)) if points else (np.zeros(0), np.zeros(0))
    return xs, ys


def interval(values: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over runs (axis 0) and the percentile-bootstrap interval of that mean: the runs resampled with
    replacement BOOTSTRAP_RESAMPLES times from a fixed seed, the same draws at every x, so a figure is reproducible.
    It stays within what the runs did, where a Student-t interval over a few seeds that learned or did not reached
    below zero; like every percentile bootstrap it is narrower than the spread it estimates by about (n - 1) / n,
    and over 3 runs or fewer it is their range (a resample of one run alone is likelier than 2.5%). Collapses to
    the mean for one run."""
    values = np.asarray(values, np.float64)
    runs = values.shape[0]
    mean = values.mean(0)
    if runs < 2:
        return mean, mean, mean
    weights = bootstrap_weights(runs, BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED)
    means = np.tensordot(weights, values, axes=(1, 0)) / runs
    low, high = np.percentile(means, [50 * (1 - level), 50 * (1 + level)], axis=0)
    return mean, low, high


def aggregate(runs: Iterable[Sequence[Mapping]], metric: str, x: str = "step"):
    """Mean and 95% interval over runs on the x values they all reach (each run interpolated onto them).

    Returns (xs, mean, low, high, number of runs with the metric); all empty if no run has it.
    """
    curves = [series(lines, metric, x) for lines in runs]
    curves = [(xs, ys) for xs, ys in curves if xs.size]
    if not curves:
        return (np.zeros(0),) * 4 + (0,)
    grid = np.unique(np.concatenate([xs for xs, _ in curves]))
    grid = grid[(grid >= max(xs[0] for xs, _ in curves)) & (grid <= min(xs[-1] for xs, _ in curves))]
    stacked = np.stack([np.interp(grid, xs, ys) for xs, ys in curves])
    return (grid, *interval(stacked), len(curves))


def available_metrics(runs: Iterable[Sequence[Mapping]]) -> list[str]:
    """Every numeric metric some line of some run has, sorted."""
    names = {k for lines in runs for line in lines for k, v in line.items() if isinstance(v, (int, float))}
    return sorted(names - set(X_AXES))


def plot(groups: Mapping[str, Sequence[Sequence[Mapping]]], metrics: Sequence[str], x: str, out: str | os.PathLike,
         hlines: Mapping[str, float] | None = None, title: str = "") -> pathlib.Path:
    """One panel per metric: each condition's mean over its runs with every run drawn thin and, from
    MIN_RUNS_SHADED runs, the 95% interval shaded; `hlines` (label -> value) are drawn in every panel (e.g.
    random and scripted returns). Writes a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if x not in X_AXES:
        raise CurveError(f"unknown x axis {x!r}; choose one of {', '.join(X_AXES)}")
    if not metrics:
        raise CurveError("no metrics to plot; name at least one")
    known = available_metrics([lines for runs in groups.values() for lines in runs])
    unknown = [m for m in metrics if m not in known]
    if unknown:
        raise CurveError(f"unknown metric {', '.join(unknown)}: no run logged it; available: {', '.join(known)}")
    cols = min(3, len(metrics))
    rows = math.ceil(len(metrics) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.4 * rows), squeeze=False)
    for ax, metric in zip(axes.flat, metrics):
        for index, (name, runs) in enumerate(groups.items()):
            xs, mean, low, high, n = aggregate(runs, metric, x)
            if not n:
                continue
            colour = f"C{index}"
            for lines in runs:  # every run thin: with few seeds the interval alone says little
                ax.plot(*series(lines, metric, x), color=colour, lw=0.6, alpha=0.45)
            ax.plot(xs, mean, color=colour, label=f"{name} (n={n})")
            if n >= MIN_RUNS_SHADED:
                ax.fill_between(xs, low, high, color=colour, alpha=0.2, linewidth=0)
        for index, (label, value) in enumerate((hlines or {}).items()):
            ax.axhline(value, color="0.3", ls=("--", ":", "-.")[index % 3], lw=1, label=label)
        ax.set_title(metric)
        ax.set_xlabel({"step": "env steps", "updates": "updates", "time": "training seconds"}[x])
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = pathlib.Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
