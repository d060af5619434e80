"""Inference over seeds and episodes: a two-stage bootstrap (seeds, then each drawn seed's episodes), its percentile
interval and p-value, and Holm's correction over a family of verdicts.

A study's runs differ in two ways that both matter: the seed (the model a run learned) and the episodes it was judged
on. Resampling only seeds ignores the second; a Student-t over three seeds gives bounds outside [0, 1] for bounded
measures. Percentile intervals of the two-stage bootstrap stay inside a measure's range.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from dreamer_jax.resampling import bootstrap_weights, percentile_interval

# statistic(seed index, episode weights (K, E_s)) -> (K,) values: row k weighs the seed's episodes by weights[k]
Statistic = Callable[[int, np.ndarray], np.ndarray]


def two_stage_bootstrap(statistic: Statistic, episodes: Sequence[int], resamples: int, rng=0) -> np.ndarray:
    """`resamples` bootstrap replicates (resamples,) of the mean over seeds of a per-seed statistic.

    Each replicate draws len(episodes) seeds with replacement and, for every draw, that seed's episodes with
    replacement (a seed drawn twice gets two independent episode resamples), and averages the draws' values. A replicate
    with an undefined draw (NaN) is NaN; `percentile_interval` leaves it out.
    """
    rng = np.random.default_rng(rng)
    seeds = len(episodes)
    draws = rng.integers(0, seeds, size=(resamples, seeds))
    values = np.empty((resamples, seeds))
    for s in range(seeds):
        where = draws == s
        if where.any():
            values[where] = statistic(s, bootstrap_weights(episodes[s], int(where.sum()), rng).astype(float))
    return values.mean(axis=1)


def bootstrap_p(replicates: np.ndarray, null: float = 0.0) -> float | None:
    """Two-sided bootstrap p-value of `null`: twice the smaller share of the defined replicates on either side of it
    (each share counted with one more, (k + 1) / (B + 1), so that it is never 0), at most 1; None if none is defined.
    It is the smallest level at which the percentile interval excludes `null`."""
    replicates = np.asarray(replicates, float)
    replicates = replicates[np.isfinite(replicates)]
    if not len(replicates):
        return None
    below, above = ((replicates <= null).sum(), (replicates >= null).sum())
    return float(min(1.0, 2 * (min(below, above) + 1) / (len(replicates) + 1)))


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (same order as given): the i-th smallest p times (m - i + 1), made
    non-decreasing in that order, at most 1. Rejecting where the adjusted p < alpha holds the family-wise error rate
    at alpha for any dependence between the tests."""
    p = np.asarray(p_values, float)
    order = np.argsort(p, kind="stable")
    scaled = p[order] * (len(p) - np.arange(len(p)))
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate(scaled))
    return adjusted


def summarise(statistic: Statistic, episodes: Sequence[int], resamples: int, rng=0, test: bool = False) -> dict:
    """A measure over seeds: its mean, the 95% percentile interval of the two-stage bootstrap, each seed's own value
    and, with `test` (a difference), the bootstrap p-value of 0."""
    replicates = two_stage_bootstrap(statistic, episodes, resamples, rng)
    per_seed = [float(statistic(s, np.ones((1, n)))[0]) for s, n in enumerate(episodes)]
    out = {"mean": float(np.mean(per_seed)), "ci95": percentile_interval(replicates), "per_seed": per_seed}
    if test:
        out["p"] = bootstrap_p(replicates)
    return out
