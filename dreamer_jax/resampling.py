"""Bootstrap resampling shared by the boundary statistics and the learning curves (numpy only, light to import)."""

from __future__ import annotations

import numpy as np


def bootstrap_weights(items: int, resamples: int, rng) -> np.ndarray:
    """How often each of `items` (episodes, runs) is drawn (resamples, items) when they are resampled with
    replacement."""
    return np.random.default_rng(rng).multinomial(items, np.full(items, 1.0 / items), size=resamples)


def percentile_interval(values) -> list[float] | None:
    """95% percentile interval of bootstrap values, over the resamples where the metric is defined (None if none)."""
    values = np.asarray(values, float)
    values = values[np.isfinite(values)]
    return [float(x) for x in np.percentile(values, [2.5, 97.5])] if len(values) else None
