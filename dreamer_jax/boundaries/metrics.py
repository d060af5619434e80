"""Boundary metrics: how well a model's READ decisions (its segment boundaries) line up with ground-truth events.

Chance levels are taken within each episode (stratified), so episodes busy with both boundaries and events cannot
pass for alignment against idle ones.

Pure numpy and scipy on (E, T) = (episodes, steps) arrays. A boundary at t means step t starts a new segment. Step 0
of every episode is the episode start (a forced READ) and is never scored: `valid` masks say which steps count
(default: t >= 1). Episode-level statistics take optional bootstrap `weights` (B, E), how often each episode is drawn
in each resample, and then return one value per resample, so the bootstrap over episodes reuses the code of the point
estimate. An undefined value (a rate with nothing to count) is NaN, never 0; `evaluate` writes it as None.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os

import numpy as np
from scipy import special

from dreamer_jax.boundaries.trace import Trace
from dreamer_jax.resampling import bootstrap_weights, percentile_interval

LAGS = tuple(range(-10, 11))
# The layout of an evaluation's result: raised when the metrics change, so that results of older code are computed
# again (2: the exact circular-shift p and progress_vs_distractor; 3: the detections saved beside it, separate random
# streams for detecting and scoring; 4: pinpad's rewarded and countdown entries out of progress and distractor, whose
# exact p is matched on the frame delta; 5: the RSSM surprise baseline's ties broken on a random stream of its own).
FORMAT = 5


# ---------------------------------------------------------------------------------------------------------------------
# Shared reductions


def default_valid(shape: tuple[int, int]) -> np.ndarray:
    """Scored steps (E, T): every step but the episode start t = 0, which is a forced READ."""
    valid = np.ones(shape, bool)
    valid[:, 0] = False
    return valid


def _valid(valid: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray:
    """The given mask as bool, or the default (every step but t = 0)."""
    return default_valid(shape) if valid is None else np.asarray(valid, bool)


def _weighted(per_episode: np.ndarray, weights: np.ndarray | None):
    """Sum of per-episode values (E, ...) over episodes; with weights (B, E) one sum per bootstrap resample (B, ...)."""
    return per_episode.sum(axis=0) if weights is None else weights @ per_episode


def _episode_totals(x: np.ndarray, weights: np.ndarray | None):
    """Sum of x (E, T) over steps and episodes, or per resample with weights (B, E)."""
    return _weighted(np.asarray(x).reshape(len(x), -1).sum(axis=1), weights)


def _ratio(num, den):
    """num / den, NaN where den is 0: an undefined rate stays visible instead of becoming 0."""
    num, den = np.broadcast_arrays(np.asarray(num, float), np.asarray(den, float))
    out = np.full(num.shape, np.nan)
    np.divide(num, den, out=out, where=den != 0)
    return out[()]


def _nan(weights: np.ndarray | None):
    """An undefined value, shaped like the result for these weights."""
    return np.nan if weights is None else np.full(len(weights), np.nan)


def _episode_counts(boundaries, events, valid):
    """Per episode (E,): valid steps, events, boundaries and boundaries on events, all at valid steps."""
    count = lambda x: np.asarray(x & valid).reshape(len(valid), int(np.prod(np.shape(valid)[1:]))).sum(axis=1)  # noqa: E731
    return count(np.ones_like(valid)), count(events), count(boundaries), count(boundaries & events)


# ---------------------------------------------------------------------------------------------------------------------
# Rates (the prototype's metrics)


def boundary_count(boundaries: np.ndarray, valid: np.ndarray | None = None, weights: np.ndarray | None = None):
    """Number of scored boundaries (READs at valid steps)."""
    return _episode_totals(boundaries & _valid(valid, boundaries.shape), weights)


def boundary_rate(boundaries: np.ndarray, valid: np.ndarray | None = None, weights: np.ndarray | None = None):
    """Fraction of valid steps that are boundaries."""
    valid = _valid(valid, boundaries.shape)
    return _ratio(boundary_count(boundaries, valid, weights), _episode_totals(valid, weights))


def event_rate(events: np.ndarray, valid: np.ndarray | None = None, weights: np.ndarray | None = None):
    """Fraction of valid steps that are events: the chance level of event_at_boundary (and AUPRC's base rate)."""
    valid = _valid(valid, events.shape)
    return _ratio(_episode_totals(events & valid, weights), _episode_totals(valid, weights))


def event_at_boundary(boundaries, events, valid=None, weights=None):
    """Fraction of boundaries that fall on an event step."""
    valid = _valid(valid, boundaries.shape)
    return _ratio(_episode_totals(boundaries & events & valid, weights), _episode_totals(boundaries & valid, weights))


def event_at_nonboundary(boundaries, events, valid=None, weights=None):
    """Fraction of non-boundary valid steps that are events (what event_at_boundary should exceed)."""
    valid, other = _valid(valid, boundaries.shape), ~np.asarray(boundaries, bool)
    return _ratio(_episode_totals(other & events & valid, weights), _episode_totals(other & valid, weights))


def lift_over_event_rate(boundaries, events, valid=None, weights=None):
    """Boundaries on events over the number expected if each episode's boundaries fell on random steps of that
    episode: sum_e hits_e / sum_e (boundaries_e x event rate_e). Stratified by episode, so episodes busy with both
    boundaries and events cannot fake a lift over idle ones; for one episode it is event_at_boundary / event_rate."""
    valid = _valid(valid, boundaries.shape)
    total, successes, draws, hits = _episode_counts(boundaries, events, valid)
    expected = np.divide(draws * successes, total, out=np.zeros(len(total)), where=total > 0)  # no steps: none
    return _ratio(_weighted(hits, weights), _weighted(expected, weights))


# ---------------------------------------------------------------------------------------------------------------------
# Null tests


def _log_choose(n, k):
    """log of the binomial coefficient C(n, k), through betaln (no cancellation of huge log-factorials)."""
    return -np.log1p(n) - special.betaln(n - k + 1, k + 1)


def _hypergeom_log_pmf(total: int, successes: int, draws: int) -> np.ndarray:
    """ln P(X = k) for k = 0 .. min(successes, draws), X ~ Hypergeometric(total, successes, draws); -inf where
    impossible."""
    k = np.arange(min(successes, draws) + 1)
    possible = k >= draws - (total - successes)
    log_pmf = np.full(len(k), -np.inf)
    kept = k[possible]
    log_pmf[possible] = (_log_choose(successes, kept) + _log_choose(total - successes, draws - kept)
                         - _log_choose(total, draws))
    return log_pmf


def _log_convolve(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The distribution of a sum of two independent counts, from and to natural-log pmfs (no underflow)."""
    grid = np.full((len(a) + len(b) - 1, len(b)), -np.inf)
    for j, log_b in enumerate(b):
        grid[j:j + len(a), j] = a + log_b
    return special.logsumexp(grid, axis=1)


def stratified_hypergeom_log_p(boundaries, events, valid=None) -> float:
    """Natural log of the exact P(sum_e X_e >= observed hits), with independent X_e ~ Hypergeometric(valid steps_e,
    events_e, boundaries_e): each episode's boundaries placed at random among its own valid steps.

    Stratified by episode, so that episodes rich in both boundaries and events (busy against idle ones) do not pass
    for alignment, as they do in the pooled test. The per-episode pmfs are convolved in log space: finite where the
    p-value underflows; -inf where the observed hits cannot happen.
    """
    total, successes, draws, hits = _episode_counts(boundaries, events, _valid(valid, boundaries.shape))
    log_pmf = np.zeros(1)
    for episode in zip(total, successes, draws):
        log_pmf = _log_convolve(log_pmf, _hypergeom_log_pmf(*map(int, episode)))
    return _upper_tail_log_p(log_pmf, int(hits.sum()))


def stratified_hypergeom_p(boundaries, events, valid=None) -> float:
    """Exact one-sided p-value of the boundaries on events under random placement within each episode (see
    `stratified_hypergeom_log_p`); for one episode it is the hypergeometric upper tail."""
    return math.exp(stratified_hypergeom_log_p(boundaries, events, valid))


def _permutation_p(null: np.ndarray, observed) -> float:
    """(1 + #null >= observed) / (1 + resamples): a Monte-Carlo p-value that is never 0."""
    return (1 + int(np.count_nonzero(null >= observed))) / (1 + len(null))


def perm_p_value(boundaries, events, valid=None, resamples: int = 999, rng=0) -> float:
    """Uniform null: each episode's boundaries placed at random among its valid steps, same count per episode.

    The statistic is the number of boundaries on events summed over episodes. Under this null an episode's count is
    exactly hypergeometric, so it is drawn directly (the same distribution as placing the boundaries, far cheaper).
    """
    valid = _valid(valid, boundaries.shape)
    count = (boundaries & valid).sum(axis=1)
    positive = (events & valid).sum(axis=1)
    null = np.random.default_rng(rng).hypergeometric(
        positive, valid.sum(axis=1) - positive, count, size=(resamples, len(count))).sum(axis=1)
    return _permutation_p(null, (boundaries & events & valid).sum())


def _rolled_hits(boundaries: np.ndarray, events: np.ndarray) -> np.ndarray:
    """Boundaries on events (n,) after rolling one episode's boundary sequence (n,) by each offset 0..n-1."""
    b, e = np.flatnonzero(boundaries), np.flatnonzero(events)
    return np.bincount(((e[None, :] - b[:, None]) % len(boundaries)).ravel(), minlength=len(boundaries))


def _upper_tail_log_p(log_pmf: np.ndarray, observed: int) -> float:
    """Natural log of P(X >= observed) from X's natural-log pmf over 0..len-1: 0 at or below the fewest possible
    counts, -inf above the most."""
    if observed <= np.argmax(np.isfinite(log_pmf)):
        return 0.0
    if observed >= len(log_pmf):
        return -math.inf
    return min(0.0, float(special.logsumexp(log_pmf[observed:])))


def _scored_rolled_hits(boundaries, events, valid) -> list[np.ndarray]:
    """`_rolled_hits` of each episode that has valid steps, on its valid steps."""
    valid = _valid(valid, boundaries.shape)
    return [_rolled_hits(boundaries[e][valid[e]], events[e][valid[e]]) for e in range(len(valid)) if valid[e].any()]


def circular_shift_log_p(boundaries, events, valid=None) -> float:
    """Natural log of the exact circular-shift p-value (see `circular_shift_p`).

    Under the null an episode's hit count is its `_rolled_hits` at a uniform offset, so its pmf is the histogram of
    those counts over the offsets; the pmfs of the episodes are convolved in log space, finite where the p-value
    underflows.
    """
    hits = _scored_rolled_hits(boundaries, events, valid)
    log_pmf = np.zeros(1)
    for h in hits:
        offsets = np.bincount(h)  # how many offsets give each count; a count none gives is impossible (-inf)
        log_pmf = _log_convolve(log_pmf, np.log(offsets, out=np.full(len(offsets), -np.inf), where=offsets > 0)
                                - math.log(len(h)))
    return _upper_tail_log_p(log_pmf, int(sum(h[0] for h in hits)))


def circular_shift_log10_p(boundaries, events, valid=None) -> float:
    """log10 of the exact circular-shift p-value, for p-values that underflow a float."""
    return circular_shift_log_p(boundaries, events, valid) / math.log(10)


def circular_shift_p(boundaries, events, valid=None, resamples: int | None = None, rng=0) -> float:
    """Circular-shift null: each episode's boundaries (on its valid steps) rolled by an independent uniform offset.

    Keeps the count and the spacing of the boundaries, so clustered boundaries meeting clustered events by chance do
    not look significant, as they do under tests that take steps as exchangeable. Statistic: boundaries on events
    summed over episodes. Exact (every offset of every episode, convolved) when `resamples` is None; otherwise a
    Monte-Carlo estimate from that many random offset draws, never below 1 / (resamples + 1).
    """
    if resamples is None:
        return math.exp(circular_shift_log_p(boundaries, events, valid))
    hits = _scored_rolled_hits(boundaries, events, valid)
    if not hits:
        return _permutation_p(np.zeros(resamples), 0)
    length = np.array([len(h) for h in hits])
    offsets = np.random.default_rng(rng).integers(0, length, size=(resamples, len(hits)))
    start = np.concatenate([[0], np.cumsum(length)[:-1]])
    null = np.concatenate(hits)[offsets + start].sum(axis=1)
    return _permutation_p(null, sum(h[0] for h in hits))


# ---------------------------------------------------------------------------------------------------------------------
# Progress against distractor pads: boundaries that mean more than a flash


def _progress_and_distractor(progress, distractor, valid):
    """Progress and distractor entries within the valid steps of the episodes that have both kinds."""
    progress, distractor = progress & valid, distractor & valid
    both = (progress.any(axis=1) & distractor.any(axis=1))[:, None]
    return progress & both, distractor & both


def progress_distractor_rates(boundaries, progress, distractor, valid=None, weights=None) -> dict:
    """Hit rates of boundaries on progress and on distractor entries, over the episodes that have both, and their
    difference; with `weights` (1 + B, E) row 0 is the value, the rest resamples."""
    progress, distractor = _progress_and_distractor(progress, distractor, _valid(valid, boundaries.shape))
    rates = {name: _ratio(_episode_totals(boundaries & entries, weights), _episode_totals(entries, weights))
             for name, entries in (("progress", progress), ("distractor", distractor))}
    return {"progress_hit_rate": rates["progress"], "distractor_hit_rate": rates["distractor"],
            "difference": rates["progress"] - rates["distractor"]}


def by_flash(flash, entries) -> tuple[np.ndarray, np.ndarray]:
    """Strata of the entries (E, T), one per episode and distinct flash value (e.g. the frame delta) at its entries:
    (the episode of each stratum (S,), the stratum's entries (S, T)). Entries in one stratum look the same to a
    detector of that flash."""
    flash, entries = np.asarray(flash), np.asarray(entries, bool)
    pairs = [(e, entries[e] & (flash[e] == value)) for e in range(len(entries))
             for value in np.unique(flash[e][entries[e]])]
    episode = np.array([e for e, _ in pairs], int)
    return episode, np.array([m for _, m in pairs], bool).reshape(len(pairs), entries.shape[1])


def excess_rate(boundaries, events, strata) -> float:
    """(hits - expected hits) / events: how far above chance the boundaries' hit rate on `events` is, chance being the
    boundaries that fall on each stratum's steps (S, T) placed at random among them; NaN without events."""
    n, positive, draws, hits = _episode_counts(boundaries, events, strata)
    expected = _ratio(draws * positive, n)
    return float(_ratio(hits.sum() - np.nansum(expected), positive.sum()))


def progress_vs_distractor(boundaries, progress, distractor, valid=None, weights=None, flash=None) -> dict:
    """`progress_distractor_rates` with the entry counts, the exact p of progress above distractor and the excess
    hit rate on progress entries.

    `progress_log10_p` is exact: in each stratum, given how many of its boundaries fall on its entries, which entries
    they fall on is at random (hypergeometric), the strata convolved as in `stratified_hypergeom_log_p`; one-sided,
    progress above distractor. `progress_excess` is the progress hit rate above that chance (`excess_rate`). The strata
    are the episodes, or with `flash` (E, T) (the frame delta) the entries of one episode with one flash value
    (`by_flash`), so that only entries that flash alike are compared: on scripted episodes a distractor entry more
    often shifts a full history (every status slot changes) than a progress entry does, which pixel change alone tells
    apart. `episode_log10_p` is the episode-stratified p either way.
    """
    valid = _valid(valid, boundaries.shape)
    progress, distractor = _progress_and_distractor(progress, distractor, valid)
    entries = progress | distractor
    episode_log_p = stratified_hypergeom_log_p(boundaries, progress, entries)
    episode, strata = (np.arange(len(entries)), entries) if flash is None else by_flash(flash, entries)
    marks, right = boundaries[episode] & strata, progress[episode] & strata
    log_p = stratified_hypergeom_log_p(marks, right, strata)
    return {"episodes": int((progress.any(axis=1)).sum()), "progress_count": int(progress.sum()),
            "distractor_count": int(distractor.sum()),
            "rates": progress_distractor_rates(boundaries, progress, distractor, valid, weights),
            "progress_excess": excess_rate(marks, right, strata), "progress_log10_p": log_p / math.log(10),
            "episode_log10_p": episode_log_p / math.log(10), "flash_matched": flash is not None}


# ---------------------------------------------------------------------------------------------------------------------
# Periodic baseline


def _periodic_hits(boundaries, events, valid):
    """Events hit (E, P) by evenly spaced boundaries (each episode's count, over its valid steps) at phases 0..P-1.

    Positions at phase p are (p + floor(j n / k)) mod n, j < k, for n valid steps and k boundaries; P is the largest
    spacing ceil(n / k) over episodes. Also returns the counts k (E,).
    """
    count = (boundaries & valid).sum(axis=1)
    n = valid.sum(axis=1)
    phases = np.arange(max([math.ceil(a / b) for a, b in zip(n, count) if b] or [1]))
    hits = np.zeros((len(count), len(phases)), int)
    for e in np.flatnonzero(count):
        on_event = events[e][valid[e]]
        positions = (phases[:, None] + np.arange(count[e]) * n[e] // count[e]) % n[e]
        hits[e] = on_event[positions].sum(axis=1)
    return hits, count


def periodic_baseline(boundaries, events, valid=None, weights=None):
    """Event rate at evenly spaced boundaries of the same count per episode, phase 0 (the prototype's baseline)."""
    hits, count = _periodic_hits(boundaries, events, _valid(valid, boundaries.shape))
    return _ratio(_weighted(hits[:, 0], weights), _weighted(count, weights))


def periodic_best(boundaries, events, valid=None, weights=None):
    """Best event rate over all phases of the evenly spaced baseline: what a tuned fixed period could reach."""
    hits, count = _periodic_hits(boundaries, events, _valid(valid, boundaries.shape))
    return np.max(_ratio(_weighted(hits, weights), _weighted(count, weights)[..., None]), axis=-1)


# ---------------------------------------------------------------------------------------------------------------------
# Matching at a tolerance


def matches(boundaries, events, valid=None, tau: int = 0) -> np.ndarray:
    """One-to-one boundary-event pairs with |t_b - t_e| <= tau, per episode (E,).

    A sweep in time order gives a maximum matching on a line: pair the earliest unused boundary and event when they are
    within tau; otherwise drop the earlier of the two, which is too early for everything after the other.
    """
    valid = _valid(valid, boundaries.shape)
    out = np.zeros(len(valid), int)
    for e in range(len(valid)):
        b, v = np.flatnonzero(boundaries[e] & valid[e]).tolist(), np.flatnonzero(events[e] & valid[e]).tolist()
        i = j = matched = 0
        n_b, n_v = len(b), len(v)
        while i < n_b and j < n_v:
            gap = b[i] - v[j]
            if -tau <= gap <= tau:
                matched, i, j = matched + 1, i + 1, j + 1
            elif gap < 0:
                i += 1
            else:
                j += 1
        out[e] = matched
    return out


def precision(matched, n_boundaries):
    """Matched boundaries / boundaries."""
    return _ratio(matched, n_boundaries)


def recall(matched, n_events):
    """Matched events / events (the hit rate)."""
    return _ratio(matched, n_events)


def f1(matched, n_boundaries, n_events):
    """Harmonic mean of precision and recall, 2 matched / (boundaries + events): 0 when nothing matches."""
    return _ratio(2 * np.asarray(matched, float), np.asarray(n_boundaries) + np.asarray(n_events))


def r_value(matched, n_boundaries, n_events):
    """R-value of Rasanen, Laine & Altosaar (2009): penalises over-segmentation, which F1 rewards at a loose tau.

    HR = recall, OS = recall / precision - 1 = boundaries / events - 1 (so defined when no boundary matched),
    r1 = sqrt((1 - HR)^2 + OS^2), r2 = (-OS + HR - 1) / sqrt(2), R = 1 - (|r1| + |r2|) / 2.
    """
    hit_rate = recall(matched, n_events)
    over = _ratio(n_boundaries, n_events) - 1
    r1 = np.sqrt((1 - hit_rate) ** 2 + over**2)
    r2 = (-over + hit_rate - 1) / np.sqrt(2)
    return 1 - (np.abs(r1) + np.abs(r2)) / 2


# ---------------------------------------------------------------------------------------------------------------------
# READ probability as a detector


def _ranked_counts(score, events, valid):
    """Per-episode counts (G, E) at each distinct valid score that some event has, highest score first: events at
    that score, events at or above it, steps at or above it, non-events at it; and the non-events per episode (E,).

    Only scores held by an event enter AUROC and AUPRC, which keeps the bootstrap small. None if a valid score is not
    finite (ranking it would be arbitrary).
    """
    valid = _valid(valid, score.shape)
    values, label = np.asarray(score, float)[valid], np.asarray(events, bool)[valid]
    if not np.all(np.isfinite(values)):
        return None
    _, group = np.unique(-values, return_inverse=True)
    cells = (group.max(initial=-1) + 1, len(valid))
    flat = np.ravel_multi_index((group, np.nonzero(valid)[0]), cells)
    positive, negative = (np.bincount(flat, weights=w, minlength=cells[0] * cells[1]).reshape(cells)
                          for w in (label, ~label))
    held = positive.sum(axis=1) > 0
    return (positive[held], np.cumsum(positive, axis=0)[held], np.cumsum(positive + negative, axis=0)[held],
            negative[held], negative.sum(axis=0))


def auroc(score, events, valid=None, weights=None):
    """ROC AUC of a per-step score for events: P(score at an event > at a non-event), ties counted one half.

    The Mann-Whitney statistic (average ranks) as pair counts between episodes, so episode weights apply exactly.
    """
    counts = _ranked_counts(score, events, valid)
    if counts is None:
        return _nan(weights)
    positive, true_pos, ranked, negative, n_neg = counts
    below = n_neg[None, :] - (ranked - true_pos) + 0.5 * negative  # non-events below each event score, ties one half
    pairs = positive.T @ below  # (E, E): events of episode e above non-events of episode f
    u = pairs.sum() if weights is None else ((weights @ pairs) * weights).sum(axis=-1)
    return _ratio(u, _weighted(positive.sum(axis=0), weights) * _weighted(n_neg, weights))


def auprc(score, events, valid=None, weights=None):
    """Average precision of a per-step score for events: sum_n (R_n - R_{n-1}) P_n over distinct score thresholds
    (sklearn's average_precision_score); its chance level is the event rate."""
    counts = _ranked_counts(score, events, valid)
    if counts is None:
        return _nan(weights)
    positive, true_pos, ranked = (_weighted(c.T, weights) for c in counts[:3])
    gain = np.where(positive > 0, positive * _ratio(true_pos, ranked), 0.0).sum(axis=-1)
    return _ratio(gain, positive.sum(axis=-1))


def peth(values, events, valid=None, lags=LAGS) -> np.ndarray:
    """Peri-event time histogram: mean of values (E, T) at t + lag over valid event steps t, per lag (L,).

    Only pairs with t + lag inside the episode and valid count; a lag with no pair is NaN.
    """
    valid = _valid(valid, events.shape)
    values, source = np.asarray(values, float), events & valid
    steps = valid.shape[1]
    out = np.full(len(lags), np.nan)
    for i, lag in enumerate(lags):
        lo, hi = max(0, -lag), min(steps, steps - lag)
        if hi > lo:
            pairs = source[:, lo:hi] & valid[:, lo + lag:hi + lag]
            out[i] = _ratio(values[:, lo + lag:hi + lag][pairs].sum(), pairs.sum())
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Frame change


def frame_delta(frames: np.ndarray) -> np.ndarray:
    """Mean absolute difference (E, T) between frames t and t-1 over pixels and channels; NaN at t = 0."""
    delta = np.full(frames.shape[:2], np.nan)
    for e, episode in enumerate(frames):
        delta[e, 1:] = np.abs(np.diff(episode.astype(np.int16), axis=0)).reshape(len(episode) - 1, -1).mean(axis=1)
    return delta


def frame_delta_events(delta, valid=None, percentile: float = 90.0, rng=0) -> np.ndarray:
    """The prototype's event: the valid steps of largest frame delta, (100 - percentile)% of all valid steps
    (rounded), ties broken at random with `rng`. Pinpad's deltas take few values, so a plain `>= percentile` would
    mark far more steps than asked."""
    valid = _valid(valid, delta.shape)
    return threshold_at_count(delta, round(valid.sum() * (1 - percentile / 100)), valid, rng)


def frame_delta_cohen_d(delta, boundaries, valid=None, weights=None):
    """Cohen's d (pooled SD) of frame delta at boundary against non-boundary valid steps: do READs follow pixels?"""
    valid = _valid(valid, delta.shape)
    if not valid.any():
        return _nan(weights)
    centred = np.where(valid, delta - delta[valid].mean(), 0.0)  # d is shift-invariant; centring avoids cancellation
    moments = []
    for group in (boundaries & valid, ~np.asarray(boundaries, bool) & valid):
        n = _episode_totals(group, weights)
        total = _episode_totals(np.where(group, centred, 0.0), weights)
        squares = _episode_totals(np.where(group, centred**2, 0.0), weights)
        mean = _ratio(total, n)
        moments.append((n, mean, squares - total * mean))
    (n1, mean1, ss1), (n0, mean0, ss0) = moments
    pooled_sd = np.sqrt(np.maximum(_ratio(ss1 + ss0, n1 + n0 - 2), 0.0))
    return _ratio(mean1 - mean0, pooled_sd)


# ---------------------------------------------------------------------------------------------------------------------
# Baselines and segments


def threshold_at_count(score, count, valid=None, rng=0) -> np.ndarray:
    """Boundaries (E, T) at the highest-scoring valid steps: `count` of them pooled over episodes for an int, or
    count[e] in episode e for an (E,) array. Baselines at the model's boundary count. Ties are broken at random
    (seeded by `rng`), so a score that takes few values does not pile its marks up at the earliest steps."""
    valid = _valid(valid, score.shape)
    key = np.where(valid, -np.asarray(score, float), np.inf)
    tiebreak = np.random.default_rng(rng).random(valid.shape)
    out = np.zeros(valid.shape, bool)
    if np.ndim(count) == 0:
        out.flat[np.lexsort((tiebreak.ravel(), key.ravel()))[:count]] = True
    else:
        order = np.lexsort((tiebreak, key), axis=1)
        np.put_along_axis(out, order, np.arange(valid.shape[1]) < np.asarray(count)[:, None], axis=1)
    return out & valid


def intervals(marks, valid=None) -> list[np.ndarray]:
    """Steps between consecutive marked valid steps, per episode: segment lengths for boundaries, gaps for events.

    Only complete intervals count: the censored ones before the first mark and after the last are dropped, for
    segments and pad intervals alike, so both distributions are estimated the same way (both lose their longest,
    most often censored intervals alike)."""
    valid = _valid(valid, marks.shape)
    return [np.diff(np.flatnonzero(m & v)) for m, v in zip(marks, valid)]


def _pool(per_episode: list[np.ndarray], counts) -> np.ndarray:
    """Concatenate per-episode arrays, episode e repeated counts[e] times (a bootstrap resample of episodes)."""
    return np.concatenate([x for x, c in zip(per_episode, counts) for _ in range(int(c))] + [np.zeros(0, int)])


def _mean(x):
    """Mean, NaN for an empty sample."""
    return float(np.mean(x)) if len(x) else np.nan


def _median(x):
    """Median, NaN for an empty sample."""
    return float(np.median(x)) if len(x) else np.nan


def ks_distance(a, b) -> float:
    """Two-sample Kolmogorov-Smirnov distance, the largest gap between the empirical CDFs; NaN if a sample is empty."""
    if not (len(a) and len(b)):
        return np.nan
    a, b = np.sort(a), np.sort(b)
    points = np.concatenate([a, b])
    cdf_a, cdf_b = np.searchsorted(a, points, "right") / len(a), np.searchsorted(b, points, "right") / len(b)
    return float(np.max(np.abs(cdf_a - cdf_b)))


def segment_stats(boundaries, pad, valid=None, counts=None) -> dict:
    """Segment lengths (between consecutive boundaries) against intervals between consecutive pad events.

    `counts` (E,) repeats episodes (a bootstrap resample); default each episode once.
    """
    counts = np.ones(len(boundaries), int) if counts is None else counts
    segments, gaps = (_pool(intervals(x, valid), counts) for x in (boundaries, pad))
    return {"mean_length": _mean(segments), "median_length": _median(segments), "pad_interval_mean": _mean(gaps),
            "pad_interval_median": _median(gaps), "ks_distance": ks_distance(segments, gaps)}


# ---------------------------------------------------------------------------------------------------------------------
# Bootstrap intervals and the full evaluation


def _with_intervals(values: dict) -> dict:
    """Row 0 of each (1 + B,) array is the point estimate, rows 1.. the bootstrap: metric x and x_ci = [low, high]."""
    out = {}
    for name, row in values.items():
        out[name] = row[0]
        out[f"{name}_ci"] = percentile_interval(row[1:]) if len(row) > 1 else None
    return out


def _boundary_block(boundaries, events, valid, delta, tolerances, weights, resamples, rng) -> dict:
    """Every metric of one boundary set against one event type; weights (1 + B, E) with row 0 all ones."""
    block = _with_intervals({
        "boundary_count": boundary_count(boundaries, valid, weights),
        "boundary_rate": boundary_rate(boundaries, valid, weights),
        "event_rate": event_rate(events, valid, weights),
        "event_at_boundary": event_at_boundary(boundaries, events, valid, weights),
        "event_at_nonboundary": event_at_nonboundary(boundaries, events, valid, weights),
        "lift_over_event_rate": lift_over_event_rate(boundaries, events, valid, weights),
        "periodic_baseline": periodic_baseline(boundaries, events, valid, weights),
        "periodic_best": periodic_best(boundaries, events, valid, weights),
        "frame_delta_cohen_d": frame_delta_cohen_d(delta, boundaries, valid, weights),
    })
    log_p = stratified_hypergeom_log_p(boundaries, events, valid)
    block["hypergeom_p"] = math.exp(log_p)
    block["hypergeom_log10_p"] = log_p / math.log(10)
    block["perm_p_value"] = perm_p_value(boundaries, events, valid, resamples, rng)
    circular_log_p = circular_shift_log_p(boundaries, events, valid)
    block["circular_shift_p"] = math.exp(circular_log_p)
    block["circular_shift_log10_p"] = circular_log_p / math.log(10)
    block["tolerance"] = {str(tau): _with_intervals(tolerance_scores(boundaries, events, valid, tau, weights))
                          for tau in tolerances}
    return block


def tolerance_scores(boundaries, events, valid=None, tau: int = 0, weights=None) -> dict:
    """Precision, recall, F1 and R-value of boundaries against events matched within `tau` steps, pooled over the
    episodes (one value each, or one per resample with weights (B, E))."""
    valid = _valid(valid, boundaries.shape)
    n_boundaries, n_events = boundary_count(boundaries, valid, weights), _episode_totals(events & valid, weights)
    matched = _weighted(matches(boundaries, events, valid, tau), weights)
    return {"precision": precision(matched, n_boundaries), "recall": recall(matched, n_events),
            "f1": f1(matched, n_boundaries, n_events), "r_value": r_value(matched, n_boundaries, n_events)}


def _progress_block(boundaries, events, valid, weights, flash) -> dict:
    """`progress_vs_distractor`, matched on `flash`, with each rate's bootstrap interval."""
    block = progress_vs_distractor(boundaries, events["progress"], events["distractor"], valid, weights, flash)
    return {**{k: v for k, v in block.items() if k != "rates"}, **_with_intervals(block["rates"])}


def _score_block(score, events, valid, weights) -> dict:
    """AUROC and AUPRC of a per-step score for events, with AUPRC's chance level; all None without a score."""
    if score is None:
        return {name: None for name in ("auroc", "auroc_ci", "auprc", "auprc_ci", "base_rate", "base_rate_ci")}
    return _with_intervals({"auroc": auroc(score, events, valid, weights),
                            "auprc": auprc(score, events, valid, weights),
                            "base_rate": event_rate(events, valid, weights)})


def _segments_block(boundaries, pad, valid, weights) -> dict:
    """Segment statistics with bootstrap intervals (weights (1 + B, E), row 0 all ones)."""
    rows = [segment_stats(boundaries, pad, valid, counts) for counts in weights]
    return _with_intervals({name: np.array([row[name] for row in rows]) for name in rows[0]})


def _model_boundaries(trace: Trace, source: str, valid: np.ndarray, rng):
    """(boundaries, forced, READ probability, score, boundaries_from, score name) of a trace; an RSSM's boundaries
    come from its surprise (see evaluate)."""
    if trace.has_boundaries:
        forced = np.zeros(valid.shape, bool) if trace.forced is None else trace.forced.astype(bool)
        prob = trace.probabilities(source)
        name, prob_name = {"posterior": ("read", "read_prob"), "prior": ("read_prior", "read_prob_prior")}[source]
        return trace.boundaries(source).astype(bool), forced, prob, prob, name, None if prob is None else prob_name
    boundaries = threshold_at_count(trace.kl_obs, int((trace.events["pad"] & valid).sum()), valid, rng)
    return boundaries, np.zeros(valid.shape, bool), None, trace.kl_obs, "rssm_surprise", "kl_obs"


def plain(x):
    """JSON-ready copy: numpy scalars and arrays to Python numbers and lists, NaN and infinities to None."""
    if isinstance(x, dict):
        return {str(k): plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, np.ndarray)):
        return [plain(v) for v in x]
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    return x


BASELINE_SCORES = {"pixel_change": "frame_delta", "rssm_surprise": "surprise_kl"}  # baseline -> its score's name


@dataclasses.dataclass(frozen=True)
class Detections:
    """Every detector's marks and scores on one trace, with the scored steps and the events: all that the scores read.

    Detectors: "model" (its boundaries and READ probability, or an RSSM's surprise), "pixel_change" and, given a
    baseline RSSM, "rssm_surprise"; each baseline marks as many steps per episode as the model does. Saved beside an
    evaluation (`save`, `load`), so that a study can resample seeds and episodes without the models.
    """

    source: str  # posterior or prior READs
    boundaries_from: str  # read, read_prior or rssm_surprise
    score_name: str | None  # the model's score: read_prob, read_prob_prior, kl_obs
    delta_percentile: float  # frame-delta events: the steps above this percentile of the frame delta
    valid: np.ndarray  # (E, T) bool: scored steps
    forced: np.ndarray  # (E, T) bool: boundaries a constraint or the episode start decided
    delta: np.ndarray  # (E, T) float: frame delta (pixel change)
    read_prob: np.ndarray | None  # (E, T) float: the model's READ probability (None for an RSSM)
    events: dict  # name -> (E, T) bool at valid steps: the trace's events and frame_delta
    marks: dict  # detector -> (E, T) bool: its boundaries
    scores: dict  # detector -> (E, T) float or None: the score it ranks steps by
    at_pad_count: dict  # detector -> (E, T) bool: its score thresholded at the pad-event count, pooled over episodes

    _GROUPS = ("events", "marks", "scores", "at_pad_count")

    def save(self, path: str | os.PathLike) -> None:
        """Write every array, exactly, to one compressed .npz."""
        arrays = {"valid": self.valid, "forced": self.forced, "delta": self.delta}
        if self.read_prob is not None:
            arrays["read_prob"] = self.read_prob
        for group in self._GROUPS:
            arrays.update({f"{group}.{name}": x for name, x in getattr(self, group).items() if x is not None})
        meta = {name: getattr(self, name) for name in ("source", "boundaries_from", "score_name", "delta_percentile")}
        np.savez_compressed(path, meta=json.dumps(meta), **arrays)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Detections":
        """Read what `save` wrote."""
        with np.load(path) as data:
            arrays = {name: data[name] for name in data.files}
        groups = {group: {name.split(".", 1)[1]: x for name, x in arrays.items() if name.startswith(f"{group}.")}
                  for group in cls._GROUPS}
        groups["scores"] = {name: groups["scores"].get(name) for name in groups["marks"]}
        return cls(**json.loads(str(arrays["meta"])), valid=arrays["valid"], forced=arrays["forced"],
                   delta=arrays["delta"], read_prob=arrays.get("read_prob"), **groups)


def detect(trace: Trace, source: str = "posterior", delta_percentile: float = 90.0, seed: int = 0,
           surprise=None) -> Detections:
    """Every detector of a trace: the model's boundaries (an RSSM's: its surprise kl_obs thresholded at the number of
    valid pad events, pooled), pixel change and, given `surprise` (E, T), an RSSM's KL (`with_surprise`), at the
    model's per-episode boundary count; each score also thresholded at the pad-event count; and the frame-delta events
    (the steps above `delta_percentile` of the frame delta). Ties break at random, deterministically given `seed`."""
    rng = np.random.default_rng([seed, 0])
    valid = default_valid(trace.shape)
    boundaries, forced, prob, score, boundaries_from, score_name = _model_boundaries(trace, source, valid, rng)
    delta = frame_delta(trace.frames)
    events = {name: np.asarray(x, bool) & valid for name, x in trace.events.items()}
    events["frame_delta"] = frame_delta_events(delta, valid, delta_percentile, rng)
    per_episode = (boundaries & valid).sum(axis=1)
    scores = {"model": score, "pixel_change": delta}
    marks = {"model": boundaries, "pixel_change": threshold_at_count(delta, per_episode, valid, rng)}
    pad_count = int(events["pad"].sum())
    at_pad_count = {name: threshold_at_count(np.asarray(x, float), pad_count, valid, rng)
                    for name, x in scores.items() if x is not None}
    detections = Detections(source=source, boundaries_from=boundaries_from, score_name=score_name,
                            delta_percentile=delta_percentile, valid=valid, forced=forced, delta=delta,
                            read_prob=prob, events=events, marks=marks, scores=scores, at_pad_count=at_pad_count)
    return detections if surprise is None else with_surprise(detections, surprise, seed)


def with_surprise(d: Detections, surprise, seed: int = 0) -> Detections:
    """`d` with an RSSM's surprise KL(posterior || prior) (E, T) on the same episodes as a baseline: thresholded at the
    model's boundary count per episode and at the pad-event count. Its ties break on a random stream of its own, so
    that adding it later, from the RSSM run's own evaluation of the same episodes, marks what `detect` marks."""
    score = np.asarray(surprise, float)
    if score.shape != d.valid.shape:
        raise ValueError(f"the surprise has shape {score.shape}, the episodes {d.valid.shape}: it must score the same "
                         "episodes")
    rng = np.random.default_rng([seed, 2])
    per_episode = (d.marks["model"] & d.valid).sum(axis=1)
    return dataclasses.replace(
        d, scores={**d.scores, "rssm_surprise": score},
        marks={**d.marks, "rssm_surprise": threshold_at_count(score, per_episode, d.valid, rng)},
        at_pad_count={**d.at_pad_count,
                      "rssm_surprise": threshold_at_count(score, int(d.events["pad"].sum()), d.valid, rng)})


def score(d: Detections, tolerances=(0, 1, 2), resamples: int = 999, bootstrap: int = 200, seed: int = 0) -> dict:
    """All boundary metrics of a trace's detections, per event type, for all and for free boundaries, with baselines;
    JSON-ready (see `evaluate`). Deterministic given `seed`."""
    rng = np.random.default_rng([seed, 1])
    valid, boundaries, forced, delta = d.valid, d.marks["model"], d.forced, d.delta
    episodes = len(valid)
    weights = np.vstack([np.ones((1, episodes)), bootstrap_weights(episodes, bootstrap, rng)]).astype(float)
    free = boundaries & ~forced
    baselines = [name for name in d.marks if name != "model"]
    result_events = {}
    model_parts = (("all", boundaries, valid), ("free", free, valid & ~forced))  # free: forced steps not scored
    for name, ev in d.events.items():
        model = {}
        for part, marks, scored in model_parts:
            scores = _score_block(d.scores["model"], ev, scored, weights)
            read_prob = np.full(len(LAGS), np.nan) if d.read_prob is None else peth(d.read_prob, ev, scored)
            model[part] = {**_boundary_block(marks, ev, scored, delta, tolerances, weights, resamples, rng), **scores,
                           "auc_read_prob": scores["auroc"], "auc_read_prob_ci": scores["auroc_ci"],
                           "peth": {"lags": list(LAGS), "read_prob": read_prob, "read_rate": peth(marks, ev, scored)}}
        model["baselines"] = {
            base: {**_boundary_block(d.marks[base], ev, valid, delta, tolerances, weights, resamples, rng),
                   **_score_block(d.scores[base], ev, valid, weights), "score": BASELINE_SCORES[base]}
            for base in baselines}
        result_events[name] = {"event_count": int(ev.sum()), **model}
    split = {"progress", "distractor"} <= set(d.events)  # traces of envs before the split have neither
    progress = {name: _progress_block(marks, d.events, valid, weights, delta)
                for name, marks in d.marks.items()} if split else None
    at_pad_count = {name: {**_boundary_block(marks, d.events["pad"], valid, delta, tolerances, weights, resamples, rng),
                           "progress_vs_distractor": _progress_block(marks, d.events, valid, weights, delta)
                           if split else None}
                    for name, marks in d.at_pad_count.items()}
    return plain({
        "source": d.source, "boundaries_from": d.boundaries_from, "score": d.score_name,
        "episodes": episodes, "steps": valid.shape[1], "scored_steps": int(valid.sum()),
        "boundary_count": int((boundaries & valid).sum()), "forced_count": int((boundaries & forced & valid).sum()),
        "free_count": int((free & valid).sum()), "resamples": resamples, "bootstrap": bootstrap,
        "tolerances": list(tolerances), "delta_percentile": d.delta_percentile, "seed": seed,
        "events": result_events, "progress_vs_distractor": progress, "at_pad_count": at_pad_count,
        "segments": _segments_block(boundaries, d.events.get("pad", np.zeros_like(valid)), valid, weights),
    })


def evaluate(trace: Trace, source: str = "posterior", tolerances=(0, 1, 2), resamples: int = 999,
             delta_percentile: float = 90.0, seed: int = 0, bootstrap: int = 200, surprise=None) -> dict:
    """All boundary metrics of a trace, per event type, for all and for free boundaries, with baselines; JSON-ready.

    The headline p-value is the exact circular-shift one (`circular_shift_log10_p`: each episode's boundaries rolled,
    their count and spacing kept), calibrated where boundaries and events both come in runs; the stratified
    hypergeometric p (`hypergeom_log10_p`, boundaries at random within each episode) takes steps as exchangeable and
    rejects too often there. `lift_over_event_rate` is stratified by episode. "free" scores only the steps where the
    boundary was not forced: forced steps leave the population, not only the hits.

    `source` picks the posterior or the prior READs and probabilities (the trace's `forced` flags serve both). An RSSM
    trace (no READs) is scored on its own surprise ("boundaries_from": "rssm_surprise"), and kl_obs replaces the READ
    probability ("score": "kl_obs"; the PETH then has no read_prob). Baselines (see `detect`): pixel change and, given
    `surprise` (E, T), an RSSM's KL. `progress_vs_distractor` compares, for the model and each baseline, the hit rates
    on entries of the right next pad and of other pads, its exact p matched on the frame delta (None for a trace
    without those events). `at_pad_count` scores every detector at one common rate: its score thresholded at as many
    boundaries as there are pad events, pooled over episodes. Deterministic given `seed`.
    """
    return score(detect(trace, source, delta_percentile, seed, surprise), tolerances, resamples, bootstrap, seed)
