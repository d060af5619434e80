"""The boundary figures of the evaluation: frames with their READ/COPY bar, internals over time, fired frames, PETH.

Every function returns a `matplotlib.figure.Figure` built without pyplot, so scripts save PNGs with no display
and notebooks show the returned figure inline.
"""

from __future__ import annotations

import pathlib

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle

from dreamer_jax.boundaries import metrics
from dreamer_jax.boundaries.trace import EVENT_TYPES, Trace

READ_COLOUR = "tab:red"
COPY_COLOUR = "tab:blue"
PRIOR_COLOUR = "black"
FORCED_HATCH = "////"
EVENT_STYLE = {  # marker and colour per event type; red and blue stay reserved for READ and COPY
    "pad": ("o", "tab:orange"),
    "progress": ("^", "tab:olive"),
    "distractor": ("v", "tab:brown"),
    "reward": ("*", "tab:green"),
    "countdown_pad": ("P", "tab:pink"),
    "respawn": ("X", "tab:purple"),
    "pad_visual": ("s", "tab:cyan"),
    "frame_delta": ("D", "tab:gray"),
}
DEFAULT_LENGTH = 60  # steps drawn by `grid` and `internal` unless told otherwise
GRID_COLUMNS = 20
FIRED_COLUMNS = 12
PETH_LAGS = 10
DPI = 110
FILE_NAMES = {name: f"boundary_{name}.png" for name in ("grid", "internal", "fired", "peth")}


def peth(signal: np.ndarray, events: np.ndarray, lags: int = PETH_LAGS) -> np.ndarray:
    """Mean of `signal` (E, T) at lags -lags..lags around every True of `events` (E, T): the peri-event time histogram.

    Step 0 (the forced READ of an episode start) and steps outside the episode are left out; a lag with no sample is
    NaN. Returns an array of length 2 * lags + 1, lag -lags first (the metrics' PETH with its default scored steps).
    """
    signal, events = np.atleast_2d(signal), np.atleast_2d(np.asarray(events, bool))
    return metrics.peth(signal, events, lags=range(-lags, lags + 1))


def trace_peth(trace: Trace, source: str = "posterior", lags: int = PETH_LAGS) -> tuple[dict, dict]:
    """The PETH of READ probability and READ rate per event type of a trace, and the overall READ rate (t > 0).

    Returned in the evaluation JSON's format, ready for `peth_figure`; both dicts are empty for an RSSM trace.
    """
    if not trace.has_boundaries:
        return {}, {}
    prob, read = trace.probabilities(source), trace.boundaries(source)
    curves = {
        name: {"lags": list(range(-lags, lags + 1)), "read_prob": peth(prob, hits, lags),
               "read_rate": peth(read, hits, lags)}
        for name, hits in trace.events.items()
    }
    rate = float(metrics.boundary_rate(read))
    return curves, {name: rate for name in curves}


def frame_difference(frames: np.ndarray) -> np.ndarray:
    """Mean absolute pixel change from the previous frame, per step of one episode's frames (T, H, W, C); 0 at t = 0,
    which has no previous frame (frame_delta leaves it undefined)."""
    delta = metrics.frame_delta(frames[None])[0]
    delta[0] = 0.0
    return delta


def _window(trace: Trace, start: int, length: int | None) -> np.ndarray:
    """The steps start .. start + length - 1 of an episode, by default up to DEFAULT_LENGTH of them."""
    steps = trace.shape[1]
    length = min(steps - start, DEFAULT_LENGTH) if length is None else length
    if start < 0 or length < 1 or start + length > steps:
        raise ValueError(f"window start={start}, length={length} does not fit episodes of {steps} steps")
    return np.arange(start, start + length)


def _event_names(trace: Trace) -> list[str]:
    """The trace's event types in the order of EVENT_TYPES."""
    return [name for name in EVENT_TYPES if name in trace.events]


def _events_at(trace: Trace, episode: int, t: int) -> list[str]:
    """The event types that happened at step t of an episode."""
    return [name for name in _event_names(trace) if trace.events[name][episode, t]]


def _message(text: str) -> Figure:
    """A figure that only says something (nothing to draw); on a hidden axes, as notebooks skip axes-less figures."""
    fig = Figure(figsize=(6, 1.5))
    ax = fig.add_subplot()
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=11, transform=ax.transAxes)
    return fig


def _read_handles() -> list:
    """Legend entries of the READ/COPY bar."""
    return [
        Patch(facecolor=READ_COLOUR, label="READ"),
        Patch(facecolor=READ_COLOUR, edgecolor="black", linewidth=0, hatch=FORCED_HATCH, label="forced READ"),
        Patch(facecolor=COPY_COLOUR, label="COPY"),
    ]


def _event_handles(names: list[str], counts: dict | None = None) -> list:
    """Legend entries of event types: their markers, or with counts given, their vertical lines and counts."""
    if counts is None:
        return [Line2D([], [], marker=EVENT_STYLE[name][0], color=EVENT_STYLE[name][1], ls="", ms=7, label=name)
                for name in names]
    return [Line2D([], [], color=EVENT_STYLE[name][1], lw=2, label=f"{name} ({counts[name]})") for name in names]


def _draw_frame(ax, frame: np.ndarray, label: str, read: bool | None, forced: bool, events: list[str]):
    """One frame with its label above, its READ/COPY bar (none when read is None) and event markers below."""
    ax.imshow(frame, interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(label, fontsize=8, pad=2)
    if read is not None:
        ax.add_patch(Rectangle(
            (0, -0.17), 1, 0.12, transform=ax.transAxes, clip_on=False, linewidth=0, edgecolor="black",
            facecolor=READ_COLOUR if read else COPY_COLOUR, hatch=FORCED_HATCH if forced else None,
        ))
    for i, name in enumerate(events):
        marker, colour = EVENT_STYLE[name]
        x = 0.5 + (i - (len(events) - 1) / 2) * 0.25
        ax.plot([x], [-0.33], marker=marker, color=colour, ms=6, ls="", transform=ax.transAxes, clip_on=False)


def _frame_strip(trace: Trace, episode: int, steps: np.ndarray, labels: list[str], reads: np.ndarray | None,
                 columns: int, title: str) -> Figure:
    """Frames of `steps` in rows of `columns`, each with its label, READ/COPY bar and events, plus a legend."""
    columns = min(len(steps), columns)
    rows = -(-len(steps) // columns)
    cell, head, foot = 0.85, 0.55, 0.7
    height = 1.5 * cell * rows + head + foot
    fig = Figure(figsize=(cell * columns + 0.4, height))
    layout = fig.add_gridspec(rows, columns, left=0.2 / (cell * columns + 0.4), right=1 - 0.2 / (cell * columns + 0.4),
                              top=1 - head / height, bottom=foot / height, wspace=0.08, hspace=0.65)
    for i, (t, label) in enumerate(zip(steps, labels)):
        ax = fig.add_subplot(layout[i // columns, i % columns])
        read, forced = (None, False) if reads is None else (bool(reads[episode, t]), bool(trace.forced[episode, t]))
        _draw_frame(ax, trace.frames[episode, t], label, read, forced, _events_at(trace, episode, t))
    handles = (_read_handles() if reads is not None else []) + _event_handles(_event_names(trace))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=10, y=1 - 0.12 / height)
    return fig


def grid(trace: Trace, episode: int = 0, start: int = 0, length: int | None = None,
         source: str = "posterior") -> Figure:
    """Frames of an episode window with a READ (red) / COPY (blue) bar under each, forced READs hatched, and events."""
    steps = _window(trace, start, length)
    reads = trace.boundaries(source)
    span = f"episode {episode}, steps {steps[0]}-{steps[-1]}"
    if reads is None:
        title = f"{span}: no boundaries (RSSM)"
    else:
        count, forced = int(reads[episode, steps].sum()), int((reads & trace.forced)[episode, steps].sum())
        title = f"{span}: {count} {source} READs ({forced} forced) in {len(steps)} steps"
    return _frame_strip(trace, episode, steps, [str(t) for t in steps], reads, GRID_COLUMNS, title)


def fired(trace: Trace, episode: int = 0, source: str = "posterior", max_frames: int = 48) -> Figure:
    """Only the frames where READ fired after t = 0, labelled with their step (and 'forced'), at most max_frames."""
    reads = trace.boundaries(source)
    if reads is None:
        return _message(f"episode {episode}: no boundaries (RSSM), nothing fired")
    times = np.flatnonzero(reads[episode, 1:]) + 1
    if not len(times):
        return _message(f"episode {episode}: {source} READ never fired after t = 0")
    shown = times[:max_frames]
    labels = [f"t={t}" + (" forced" if trace.forced[episode, t] else "") for t in shown]
    title = f"episode {episode}: {len(times)} {source} READs after t = 0"
    title += f", first {len(shown)} shown" if len(shown) < len(times) else ""
    return _frame_strip(trace, episode, shown, labels, reads, FIRED_COLUMNS, title)


def _plot_read_prob(ax, trace: Trace, episode: int, steps: np.ndarray):
    """READ probability of posterior and prior, with their hard READs as ticks above (posterior) and below (prior)."""
    for source, colour, style, y in (("posterior", READ_COLOUR, "-", 1.1), ("prior", PRIOR_COLOUR, "--", -0.1)):
        ax.plot(steps, trace.probabilities(source)[episode, steps], style, color=colour, lw=1.2,
                label=f"{source} p(READ)")
        hard = steps[trace.boundaries(source)[episode, steps]]
        ax.plot(hard, np.full(len(hard), y), "|", color=colour, ms=9, mew=1.5, label=f"{source} READ")
    ax.set_ylim(-0.2, 1.2)
    ax.set_ylabel("READ prob", fontsize=8)
    _side_legend(ax)


def _plot_segments(ax, trace: Trace, episode: int, steps: np.ndarray):
    """Segment length (left axis) and segment count (right axis)."""
    ax.step(steps, trace.seg_len[episode, steps], where="mid", color="tab:brown", label="segment length")
    ax.set_ylabel("length", fontsize=8)
    count = ax.twinx()
    count.step(steps, trace.seg_num[episode, steps], where="mid", color="0.4", ls="--", label="segment count")
    count.set_ylabel("count", fontsize=8)
    _side_legend(ax, count)


def _plot_series(ax, steps: np.ndarray, values: np.ndarray, label: str, colour: str, bars: bool = False):
    """One quantity over time, as a line or, for sparse ones, as bars."""
    if bars:
        ax.bar(steps, values, width=0.8, color=colour, label=label)
    else:
        ax.plot(steps, values, color=colour, lw=1.2, label=label)
    ax.set_ylabel(label.split(" (")[0], fontsize=8)
    _side_legend(ax)


def _side_legend(ax, *twins):
    """A legend right of a panel for its own artists and those of its twin axes."""
    pairs = [other.get_legend_handles_labels() for other in (ax, *twins)]
    handles, labels = [h for pair in pairs for h in pair[0]], [label for pair in pairs for label in pair[1]]
    ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=7, frameon=False)


def _mark_events(ax, trace: Trace, episode: int, steps: np.ndarray):
    """A vertical line at every event step, one colour per event type; types at the same step sit side by side."""
    for t in steps:
        names = _events_at(trace, episode, t)
        for i, name in enumerate(names):
            x = t + (i - (len(names) - 1) / 2) * 0.25
            ax.axvline(x, color=EVENT_STYLE[name][1], lw=1.4, alpha=0.7, zorder=0)


def internal(trace: Trace, episode: int = 0, start: int = 0, length: int | None = None) -> Figure:
    """The model's boundary internals over an episode window, on one time axis, with event lines.

    Panels: READ probability (posterior, prior, hard READs), segment length and count, abstract KL, observation
    KL, reward, frame difference; an RSSM trace has only the last three.
    """
    steps = _window(trace, start, length)
    series = [
        ("observation KL (nats)", trace.kl_obs[episode, steps], "tab:olive", False),
        ("reward", trace.reward[episode, steps], "tab:green", True),
        ("frame difference (mean |dx|)", frame_difference(trace.frames[episode])[steps], "0.3", False),
    ]
    if trace.has_boundaries:
        series.insert(0, ("abstract KL (nats, READ steps)", trace.kl_abstract[episode, steps], READ_COLOUR, True))
    panels = len(series) + 2 * trace.has_boundaries
    fig = Figure(figsize=(12, 1.35 * panels + 1.0), layout="constrained")
    axes = list(fig.subplots(panels, 1, sharex=True, squeeze=False)[:, 0])
    if trace.has_boundaries:
        _plot_read_prob(axes[0], trace, episode, steps)
        _plot_segments(axes[1], trace, episode, steps)
    for ax, (label, values, colour, bars) in zip(axes[-len(series):], series):
        _plot_series(ax, steps, values, label, colour, bars)
    for ax in axes:
        _mark_events(ax, trace, episode, steps)
        ax.grid(axis="x", color="0.9", lw=0.5)
    axes[-1].set_xlabel("step")
    axes[-1].set_xlim(steps[0] - 0.5, steps[-1] + 0.5)
    counts = {name: int(trace.events[name][episode, steps].sum()) for name in _event_names(trace)}
    fig.legend(handles=_event_handles(list(counts), counts), loc="outside lower center", ncol=len(counts),
               fontsize=8, frameon=False, title="events in this window (vertical lines)", title_fontsize=8)
    kind = "" if trace.has_boundaries else " (RSSM: no boundaries)"
    fig.suptitle(f"episode {episode}, steps {steps[0]}-{steps[-1]}{kind}", fontsize=10)
    return fig


def _floats(values, size: int) -> np.ndarray:
    """A JSON list of floats or None (or None for the whole list) as a float array, None as NaN."""
    if values is None:
        return np.full(size, np.nan)
    return np.array([np.nan if v is None else v for v in values], np.float64)


def _plot_peth(ax, name: str, curve: dict, base: float | None):
    """READ probability and rate around one event type, lag 0 and the overall READ rate marked."""
    lags = np.asarray(curve["lags"])
    prob, rate = (_floats(curve.get(key), len(lags)) for key in ("read_prob", "read_rate"))
    ax.set_title(name, fontsize=10)
    ax.set_xlabel("lag (steps from event)")
    if np.isnan(prob).all() and np.isnan(rate).all():
        ax.text(0.5, 0.5, f"no {name} events", ha="center", va="center", transform=ax.transAxes, fontsize=10)
        return
    ax.axvline(0, color="0.5", ls=":", lw=1)
    ax.plot(lags, prob, "o-", color=READ_COLOUR, ms=3, lw=1.2)
    ax.plot(lags, rate, "s-", color="0.2", ms=3, lw=1, alpha=0.8)
    if base is not None:
        ax.axhline(base, color="0.4", ls="--", lw=1)


def peth_figure(peth: dict, base_rate: dict | None = None) -> Figure:
    """READ probability and READ rate at lags around each event type (one panel each), overall READ rate dashed.

    `peth[event] = {"lags", "read_prob", "read_rate"}` as in the evaluation JSON (None for a lag with no data);
    `base_rate[event]` is the overall READ rate.
    """
    names = [name for name in EVENT_TYPES if name in peth] + [name for name in peth if name not in EVENT_TYPES]
    if not names:
        return _message("no PETH to draw (no boundaries or no events)")
    fig = Figure(figsize=(3.0 * len(names) + 0.5, 3.4), layout="constrained")
    axes = fig.subplots(1, len(names), sharey=True, squeeze=False)[0]
    for ax, name in zip(axes, names):
        _plot_peth(ax, name, peth[name], (base_rate or {}).get(name))
    axes[0].set_ylabel("READ probability / rate")
    axes[0].set_ylim(bottom=0)
    handles = [
        Line2D([], [], marker="o", color=READ_COLOUR, ms=3, label="mean READ probability"),
        Line2D([], [], marker="s", color="0.2", ms=3, label="READ rate"),
        Line2D([], [], color="0.4", ls="--", label="overall READ rate"),
        Line2D([], [], color="0.5", ls=":", label="event (lag 0)"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=8, frameon=False)
    fig.suptitle("READ around events", fontsize=10)
    return fig


def _result_peth(result: dict) -> tuple[dict, dict]:
    """The PETH and overall READ rate per event type from an evaluation result (boundary_eval.json)."""
    scores = {name: entry["all"] for name, entry in result["events"].items() if entry["all"].get("peth")}
    return ({name: s["peth"] for name, s in scores.items()},
            {name: s["boundary_rate"] for name, s in scores.items()})


def save_figures(trace: Trace, out_dir, result: dict | None = None, episode: int = 0, start: int = 0,
                 length: int | None = None, source: str = "posterior") -> dict[str, pathlib.Path]:
    """Write the four boundary PNGs into out_dir and return their paths by name (grid, internal, fired, peth).

    The PETH comes from `result` (the evaluation JSON) when given, else from the trace itself (`trace_peth`).
    """
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    curves, base = _result_peth(result) if result is not None else trace_peth(trace, source)
    figures = {
        "grid": grid(trace, episode, start, length, source),
        "internal": internal(trace, episode, start, length),
        "fired": fired(trace, episode, source),
        "peth": peth_figure(curves, base),
    }
    paths = {}
    for name, fig in figures.items():
        paths[name] = out / FILE_NAMES[name]
        fig.savefig(paths[name], dpi=DPI)
    return paths
