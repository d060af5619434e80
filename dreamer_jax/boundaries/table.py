"""Many runs' boundary evaluations in one table: a row per run (CSV), conditions x seeds (Markdown): mean ± sd of
each measure, and for each p-value (as log10 p) how many seeds are below 0.05 and their median, never a mean of p."""

from __future__ import annotations

import csv
import math
import pathlib
import re
import statistics

TABLE_EVENTS = ("pad", "reward", "frame_delta")
EVENT_METRICS = ("lift_over_event_rate", "circular_shift_log10_p", "hypergeom_log10_p", "f1_tau1", "auprc",
                 "periodic_baseline", "periodic_best")
ALPHA = 0.05
KEYS = ("run", "task", "condition", "seed")
NUMERIC = ("boundary_count", "forced_count", *(f"{e}_{m}" for e in TABLE_EVENTS for m in EVENT_METRICS))
COLUMNS = (*KEYS, *NUMERIC)


def parse_run_name(name: str, task: str | None = None) -> tuple[str, int | None]:
    """(condition, seed) of a run directory named {task}_{condition}_seed{n}; a name off that pattern keeps what fits:
    the name without a trailing _seed{n} (seed None if there is none), without the task prefix if it has it."""
    match = re.fullmatch(r"(.+)_seed(\d+)", name)
    stem, seed = (match[1], int(match[2])) if match else (name, None)
    if task and stem.startswith(f"{task}_") and len(stem) > len(task) + 1:
        stem = stem[len(task) + 1:]
    return stem, seed


def _event_metric(result: dict, event: str, metric: str):
    """One metric of all boundaries for an event type; F1 at tau 1 from its tolerance entry; None where it is absent."""
    block = result.get("events", {}).get(event, {}).get("all", {})
    if metric == "f1_tau1":
        return block.get("tolerance", {}).get("1", {}).get("f1")
    return block.get(metric)


def row(run_name: str, config: dict, result: dict) -> dict:
    """One flat row of a run: its name, task, condition and seed, the boundary counts and the headline metrics."""
    condition, seed = parse_run_name(run_name, config.get("task"))
    out = {"run": run_name, "task": config.get("task"), "condition": condition,
           "seed": config.get("seed") if seed is None else seed,
           "boundary_count": result.get("boundary_count"), "forced_count": result.get("forced_count")}
    out.update({f"{e}_{m}": _event_metric(result, e, m) for e in TABLE_EVENTS for m in EVENT_METRICS})
    return out


def is_log10_p(column: str) -> bool:
    return column.endswith("_log10_p")


def summary(rows: list[dict]) -> list[dict]:
    """Per (task, condition): number of seeds, and over the seeds where a numeric column is defined its mean and sample
    standard deviation (sd None with fewer than two) or, for a log10 p column, the seeds below ALPHA (`_below`), the
    seeds that define it (`_defined`) and the median (`_median`)."""
    groups = {}
    for r in rows:
        groups.setdefault((r["task"], r["condition"]), []).append(r)
    out = []
    for (task, condition), members in sorted(groups.items(), key=lambda kv: (str(kv[0][0]), kv[0][1])):
        entry = {"task": task, "condition": condition, "seeds": len(members)}
        for column in NUMERIC:
            values = [r[column] for r in members if r.get(column) is not None]
            if is_log10_p(column):
                entry[f"{column}_below"] = sum(v < math.log10(ALPHA) for v in values)
                entry[f"{column}_defined"] = len(values)
                entry[f"{column}_median"] = statistics.median(values) if values else None
            else:
                entry[f"{column}_mean"] = statistics.fmean(values) if values else None
                entry[f"{column}_sd"] = statistics.stdev(values) if len(values) > 1 else None
        out.append(entry)
    return out


def _cell(x) -> str:
    """A Markdown cell: three significant digits for floats, n/a for a missing or undefined value."""
    if x is None:
        return "n/a"
    return f"{x:.3g}" if isinstance(x, float) else str(x)


def _summary_cell(entry: dict, column: str) -> str:
    """mean ± sd, or for log10 p `k of n < ALPHA (median m)`; n/a alone when no seed defines the value."""
    if is_log10_p(column):
        median = entry[f"{column}_median"]
        return "n/a" if median is None else \
            f"{entry[f'{column}_below']} of {entry[f'{column}_defined']} < {ALPHA} (median {_cell(median)})"
    mean = entry[f"{column}_mean"]
    return "n/a" if mean is None else f"{_cell(mean)} ± {_cell(entry[f'{column}_sd'])}"


def _markdown_table(header: list[str], body: list[list[str]]) -> list[str]:
    """Lines of a Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(cells) + " |" for cells in body]


def markdown(rows: list[dict], skipped=()) -> str:
    """The Markdown report: per condition over seeds (mean ± sd; log10 p: seeds below ALPHA), every run, and the runs
    that were skipped and why."""
    conditions = _markdown_table(
        ["task", "condition", "seeds", *NUMERIC],
        [[_cell(s["task"]), s["condition"], str(s["seeds"]), *(_summary_cell(s, c) for c in NUMERIC)]
         for s in summary(rows)])
    ordered = sorted(rows, key=lambda r: (str(r["task"]), r["condition"], -1 if r["seed"] is None else r["seed"]))
    runs = _markdown_table(list(COLUMNS), [[_cell(r[c]) for c in COLUMNS] for r in ordered])
    lines = ["# Boundary evaluation", "", f"## Per condition (mean ± sd over seeds; log10 p: seeds below {ALPHA})", "",
             *conditions, "",
             "## Per run", "", *runs, ""]
    if skipped:
        lines += ["## Skipped", "", *(f"- `{run}`: {reason}" for run, reason in skipped), ""]
    return "\n".join(lines)


def write(rows: list[dict], out_dir, skipped=()) -> tuple[pathlib.Path, pathlib.Path]:
    """boundary_table.csv (a row per run, empty cells for undefined values) and boundary_table.md into out_dir."""
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = out_dir / "boundary_table.csv", out_dir / "boundary_table.md"
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows({c: r.get(c) for c in COLUMNS} for r in rows)
    md_path.write_text(markdown(rows, skipped))
    return csv_path, md_path
