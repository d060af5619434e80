"""Boundary figures (dreamer_jax/boundaries/figures.py): what each figure draws, the PETH helper, the saved PNGs.

Synthetic traces with known READs and events: two episodes of 40 steps of 64x64 frames with a moving square.
"""

import dataclasses

import matplotlib.colors as mcolors
import matplotlib.image as mimage
import numpy as np
import pytest
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from dreamer_jax.boundaries import figures
from dreamer_jax.boundaries.trace import Trace

E, T = 2, 40
READS = {0: (0, 5, 12, 13, 20, 33), 1: (0, 7, 8, 30)}  # step 0 is the episode start's forced READ
FORCED = {0: (0, 20), 1: (0,)}
EVENTS = {
    "pad": {0: (5, 12, 25), 1: (7, 30)},
    "reward": {0: (25,), 1: ()},
    "respawn": {0: (30,), 1: ()},
    "pad_visual": {0: (4, 5, 11, 12, 24, 25), 1: (7, 29, 30)},
}


def _mask(steps_by_episode: dict) -> np.ndarray:
    mask = np.zeros((E, T), bool)
    for episode, steps in steps_by_episode.items():
        mask[episode, list(steps)] = True
    return mask


def _frames() -> np.ndarray:
    """A 6x6 white square moving one pixel a step over a dark background."""
    frames = np.full((E, T, 64, 64, 3), 20, np.uint8)
    for t in range(T):
        frames[:, t, 10:16, t:t + 6] = 255
    return frames


def _trace(boundaries: bool = True) -> Trace:
    read, forced = _mask(READS), _mask(FORCED)
    events = {name: _mask(steps) for name, steps in EVENTS.items()}
    rng = np.random.default_rng(0)
    common = {"frames": _frames(), "reward": events["reward"].astype(np.float32), "action": np.zeros((E, T), np.int32),
              "events": events, "kl_obs": rng.gamma(2.0, 0.5, (E, T)).astype(np.float32)}
    if not boundaries:
        return Trace(**common)
    seg_len = np.zeros((E, T), np.int32)
    for t in range(T):
        seg_len[:, t] = np.where(read[:, t], 1, seg_len[:, t - 1] + 1) if t else 1
    prior = read.copy()
    prior[0, 14] = True
    return Trace(**common, read=read, read_prob=np.where(read, 0.9, 0.1).astype(np.float32), read_prior=prior,
                 read_prob_prior=np.where(prior, 0.8, 0.2).astype(np.float32), forced=forced, seg_len=seg_len,
                 seg_num=np.cumsum(read, 1).astype(np.int32),
                 kl_abstract=np.where(read, 2.0, 0.0).astype(np.float32))


def _image_axes(fig: Figure) -> list:
    return [ax for ax in fig.axes if ax.images]


def _bar(ax) -> Rectangle:
    (bar,) = [patch for patch in ax.patches if isinstance(patch, Rectangle)]
    return bar


def _all_text(fig: Figure) -> str:
    return " ".join(text.get_text() for text in fig.findobj(lambda artist: hasattr(artist, "get_text")))


def test_peth_hand_worked():
    signal = np.array([[0.9, 0.1, 0.2, 0.3, 0.4, 0.5], [0.7, 0.6, 0.5, 0.4, 0.3, 0.2]])
    events = np.zeros((2, 6), bool)
    events[0, [1, 4]] = True
    events[1, 5] = True
    # Lag -2: steps 2 (ep 0), 3 (ep 1); -1: 3, 4 (step 0 left out); 0: 1, 4, 5; +1: 2, 5 (6 is past the end); +2: 3.
    expected = [(0.2 + 0.4) / 2, (0.3 + 0.3) / 2, (0.1 + 0.4 + 0.2) / 3, (0.2 + 0.5) / 2, 0.3]
    np.testing.assert_allclose(figures.peth(signal, events, lags=2), expected)


def test_peth_is_nan_where_no_data_and_empty_without_events():
    signal = np.array([[0.5, 0.25]])
    events = np.array([[False, True]])
    np.testing.assert_array_equal(figures.peth(signal, events, lags=2), [np.nan, np.nan, 0.25, np.nan, np.nan])
    assert np.isnan(figures.peth(signal, np.zeros_like(events), lags=3)).all()
    assert figures.peth(signal, events).shape == (2 * figures.PETH_LAGS + 1,)


def test_trace_peth_reads_the_trace():
    trace = _trace()
    curves, base = figures.trace_peth(trace)
    assert set(curves) == set(EVENTS) and set(base) == set(EVENTS)
    assert base["pad"] == pytest.approx(trace.read[:, 1:].mean())
    np.testing.assert_array_equal(curves["pad"]["read_rate"], figures.peth(trace.read, trace.events["pad"]))
    assert curves["pad"]["lags"] == list(range(-10, 11))
    assert figures.trace_peth(_trace(boundaries=False)) == ({}, {})


def test_frame_difference():
    frames = np.zeros((3, 2, 2, 3), np.uint8)
    frames[1] = 12
    frames[2, 0] = 255
    np.testing.assert_allclose(figures.frame_difference(frames), [0.0, 12.0, (243 + 12) / 2])


def test_grid_draws_each_frame_with_its_bar():
    trace = _trace()
    fig = figures.grid(trace)
    assert isinstance(fig, Figure) and len(_image_axes(fig)) == T  # default window: min(T, 60)
    fig = figures.grid(trace, episode=0, start=3, length=25)
    axes = _image_axes(fig)
    assert len(axes) == 25
    for t, ax in zip(range(3, 28), axes):
        assert ax.get_title() == str(t)
        red, _, blue, _ = mcolors.to_rgba(_bar(ax).get_facecolor())
        assert (red > blue) == bool(trace.read[0, t]), t
        assert bool(_bar(ax).get_hatch()) == bool(trace.forced[0, t]), t
    assert "steps 3-27: 4 posterior READs (1 forced)" in fig.get_suptitle()


def test_grid_marks_events_and_wraps_rows():
    fig = figures.grid(_trace(), episode=0, start=0, length=40)
    axes = _image_axes(fig)
    rows = {round(ax.get_position().y0, 3) for ax in axes}
    assert len(rows) == 2  # 20 frames a row
    markers = [len(ax.lines) for ax in axes]
    assert markers[25] == 3 and markers[30] == 1 and markers[0] == 0  # pad + reward + pad_visual; respawn


def test_grid_of_rssm_has_frames_and_no_bar():
    fig = figures.grid(_trace(boundaries=False), start=10, length=12)
    axes = _image_axes(fig)
    assert len(axes) == 12 and not any(ax.patches for ax in axes)
    assert "no boundaries (RSSM)" in fig.get_suptitle()


@pytest.mark.parametrize("start, length", [(-1, 5), (35, 10), (0, 0)])
def test_window_outside_the_episode_is_refused(start, length):
    with pytest.raises(ValueError, match="does not fit"):
        figures.grid(_trace(), start=start, length=length)


def test_internal_panels():
    fig = figures.internal(_trace())
    assert isinstance(fig, Figure) and len(fig.axes) == 7  # six panels and the segment count's twin axis
    prob = fig.axes[0]
    np.testing.assert_allclose(prob.lines[0].get_ydata(), np.where(_trace().read[0], 0.9, 0.1))
    panel = next(ax for ax in fig.axes if ax.get_ylabel() == "frame difference")
    difference, *event_lines = panel.lines
    assert np.isfinite(difference.get_ydata()).all() and difference.get_ydata()[0] == 0
    assert len(event_lines) == sum(len(steps[0]) for steps in EVENTS.values())


def test_internal_of_rssm_draws_what_exists():
    fig = figures.internal(_trace(boundaries=False), start=5, length=20)
    assert len(fig.axes) == 3
    assert [ax.get_ylabel() for ax in fig.axes] == ["observation KL", "reward", "frame difference"]
    assert "RSSM" in fig.get_suptitle()


def test_fired_shows_the_non_initial_reads():
    trace = _trace()
    for episode in range(E):
        axes = _image_axes(figures.fired(trace, episode))
        assert [ax.get_title() for ax in axes] == [f"t={t}" + (" forced" if t in FORCED[episode] else "")
                                                  for t in READS[episode][1:]]
        assert all(mcolors.to_rgba(_bar(ax).get_facecolor())[0] > 0.5 for ax in axes)
    assert len(_image_axes(figures.fired(trace, 0, max_frames=2))) == 2
    assert len(_image_axes(figures.fired(trace, 0, source="prior"))) == len(READS[0])  # the prior adds step 14


def test_fired_without_reads_says_so():
    trace = _trace()
    fig = figures.fired(dataclasses.replace(trace, read=np.broadcast_to(np.arange(T) == 0, (E, T))))
    assert not _image_axes(fig) and "never fired" in _all_text(fig)
    fig = figures.fired(_trace(boundaries=False))
    assert not _image_axes(fig) and "no boundaries (RSSM)" in _all_text(fig)


def test_peth_figure_one_panel_per_event_type():
    none = [None] * 21
    curve = {"lags": list(range(-10, 11)), "read_prob": [0.2] * 10 + [0.9] + [0.2] * 10, "read_rate": [0.1] * 21}
    peth = {"frame_delta": curve, "pad": curve, "respawn": {"lags": curve["lags"], "read_prob": none,
                                                            "read_rate": none}}
    fig = figures.peth_figure(peth, {"pad": 0.15, "respawn": 0.15, "frame_delta": 0.15})
    assert [ax.get_title() for ax in fig.axes] == ["pad", "respawn", "frame_delta"]
    pad, respawn, _ = fig.axes
    assert len(pad.lines) == 4  # lag 0, probability, rate, base rate
    assert any(line.get_ydata()[0] == 0.15 for line in pad.lines if len(line.get_ydata()) == 2)
    assert "no respawn events" in _all_text(fig) and not respawn.lines
    assert len(figures.peth_figure(peth).axes[0].lines) == 3  # no base rate given
    empty = figures.peth_figure({})  # a message on one hidden axes, so that a notebook shows it
    assert "no PETH to draw" in _all_text(empty) and [ax.axison for ax in empty.axes] == [False]


def _result(trace: Trace) -> dict:
    """An evaluation result holding only what the figures read, with JSON's None for missing values."""
    curves, base = figures.trace_peth(trace)
    events = {name: {"all": {"peth": {"lags": curve["lags"],
                                      "read_prob": [None if np.isnan(v) else float(v) for v in curve["read_prob"]],
                                      "read_rate": [None if np.isnan(v) else float(v) for v in curve["read_rate"]]},
                             "boundary_rate": base[name]}}
              for name, curve in curves.items()}
    return {"events": events}


@pytest.mark.parametrize("boundaries, with_result", [(True, False), (True, True), (False, False)])
def test_save_figures_writes_four_pngs(tmp_path, boundaries, with_result):
    trace = _trace(boundaries)
    result = _result(trace) if with_result else None
    paths = figures.save_figures(trace, tmp_path / "figs", result=result, episode=1, start=2, length=30)
    assert set(paths) == {"grid", "internal", "fired", "peth"}
    assert {path.name for path in paths.values()} == set(figures.FILE_NAMES.values())
    for path in paths.values():
        assert 0 < path.stat().st_size < 1_000_000
        image = mimage.imread(path)
        assert image.ndim == 3 and image.shape[2] == 4 and image[..., :3].std() > 0
