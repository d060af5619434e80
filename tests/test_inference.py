"""Inference over seeds and episodes (dreamer_jax/boundaries/inference.py) against closed forms and hand examples."""

import numpy as np
import pytest

from dreamer_jax.boundaries import inference


def test_holm_matches_a_hand_worked_example():
    # sorted: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 -> raised to 0.06 (monotone)
    adjusted = inference.holm([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(adjusted, [0.03, 0.06, 0.06, 0.02], rtol=1e-12)
    np.testing.assert_allclose(inference.holm([0.3, 0.6]), [0.6, 0.6])
    np.testing.assert_allclose(inference.holm([0.7, 0.9]), [1.0, 1.0])  # capped at 1
    assert inference.holm([0.02]).tolist() == [0.02]


def test_holm_holds_the_family_wise_error_rate_under_a_null():
    rng = np.random.default_rng(0)
    p = rng.random((4000, 10))  # ten true nulls per family
    rejected = np.array([(inference.holm(row) < 0.05).any() for row in p])
    assert rejected.mean() <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / len(p))
    assert (p < 0.05).any(axis=1).mean() > 0.35  # uncorrected: about 1 - 0.95^10 = 0.40


def test_bootstrap_p_counts_the_replicates_on_each_side_of_the_null():
    assert inference.bootstrap_p(np.arange(1.0, 100.0)) == 2 / 100  # all 99 above 0: (0 + 1) / (99 + 1), doubled
    assert inference.bootstrap_p(np.array([-1.0, 1.0, 2.0, np.nan])) == 1.0  # 2 x (1 + 1) / 4 = 1
    assert inference.bootstrap_p(np.array([-3.0, -2.0, -1.0]), null=-2.5) == 2 * 2 / 4
    assert inference.bootstrap_p(np.array([np.nan])) is None


def _mean_statistic(values):
    """Seed s's weighted mean of its episodes' values, per row of weights."""
    return lambda s, weights: weights @ values[s] / weights.sum(axis=1)


def test_the_two_stage_bootstrap_has_the_closed_form_variance():
    """Replicate = mean over S drawn seeds of an episode-bootstrap mean of each: its variance is
    (var of the seed means + mean over seeds of var_s / E_s) / S, all variances with ddof 0. A seed drawn twice
    reusing one episode resample would give more."""
    rng = np.random.default_rng(1)
    values = [rng.normal(loc, scale, n) for loc, scale, n in ((0.0, 1.0, 8), (2.0, 0.5, 5), (1.0, 2.0, 12))]
    replicates = inference.two_stage_bootstrap(_mean_statistic(values), [len(v) for v in values], 40_000, rng=2)
    means = np.array([v.mean() for v in values])
    expected = (means.var() + np.mean([v.var() / len(v) for v in values])) / len(values)
    assert replicates.var() == pytest.approx(expected, rel=0.05)
    assert replicates.mean() == pytest.approx(means.mean(), abs=0.02)


def test_one_seed_is_the_episode_bootstrap_and_identical_episodes_leave_only_the_seeds():
    values = [np.array([1.0, 2.0, 4.0, 9.0])]
    replicates = inference.two_stage_bootstrap(_mean_statistic(values), [4], 20_000, rng=0)
    assert replicates.var() == pytest.approx(values[0].var() / 4, rel=0.05)
    seeds = [np.full(5, 0.2), np.full(3, 0.5), np.full(4, 0.9)]  # no spread within a seed
    replicates = inference.two_stage_bootstrap(_mean_statistic(seeds), [5, 3, 4], 5_000, rng=0)
    possible = {round((a + b + c) / 3, 12) for a in (0.2, 0.5, 0.9) for b in (0.2, 0.5, 0.9) for c in (0.2, 0.5, 0.9)}
    assert {round(r, 12) for r in replicates} <= possible and len(set(np.round(replicates, 12))) == 10


def test_an_undefined_seed_makes_its_replicates_undefined_and_summarise_reports_it():
    values = [np.array([0.1, 0.3]), np.array([np.nan, np.nan]), np.array([0.6, 0.8])]
    replicates = inference.two_stage_bootstrap(_mean_statistic(values), [2, 2, 2], 9_000, rng=0)
    assert np.isnan(replicates).mean() == pytest.approx(1 - (2 / 3) ** 3, abs=0.02)
    out = inference.summarise(_mean_statistic([values[0], values[2]]), [2, 2], 2_000, rng=0, test=True)
    assert out["per_seed"] == pytest.approx([0.2, 0.7]) and out["mean"] == pytest.approx(0.45)
    low, high = out["ci95"]
    assert 0.1 <= low <= 0.45 <= high <= 0.8 and out["p"] == 2 / 2001  # every replicate above 0
    assert "p" not in inference.summarise(_mean_statistic(values), [2, 2, 2], 100)
