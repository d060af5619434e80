"""Many runs' boundary evaluations in one table: a row per run (CSV), conditions x seeds with mean ± sd (Markdown)."""

from __future__ import annotations

import csv
import pathlib
import re
import statistics

TABLE_EVENTS = ("pad", "reward", "frame_delta")
EVENT_METRICS = ("lift_over_event_rate", "hypergeom_p", "circular_shift_p", "f1_tau1", "auprc", "periodic_baseline",
                 "periodic_best")
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


def summary(rows: list[dict]) -> list[dict]:
    """Per (task, condition): number of seeds, and mean and sample standard deviation of every numeric column over the
    seeds where it is defined (sd None with fewer than two)."""
    groups = {}
    for r in rows:
        groups.setdefault((r["task"], r["condition"]), []).append(r)
    out = []
    for (task, condition), members in sorted(groups.items(), key=lambda kv: (str(kv[0][0]), kv[0][1])):
        entry = {"task": task, "condition": condition, "seeds": len(members)}
        for column in NUMERIC:
            values = [r[column] for r in members if r.get(column) is not None]
            entry[f"{column}_mean"] = statistics.fmean(values) if values else None
            entry[f"{column}_sd"] = statistics.stdev(values) if len(values) > 1 else None
        out.append(entry)
    return out


def _cell(x) -> str:
    """A Markdown cell: three significant digits for floats, n/a for a missing or undefined value."""
    if x is None:
        return "n/a"
    return f"{x:.3g}" if isinstance(x, float) else str(x)


def _mean_sd(mean, sd) -> str:
    """mean ± sd for a summary cell; n/a alone when no seed defines the value."""
    return "n/a" if mean is None else f"{_cell(mean)} ± {_cell(sd)}"


def _markdown_table(header: list[str], body: list[list[str]]) -> list[str]:
    """Lines of a Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(cells) + " |" for cells in body]


def markdown(rows: list[dict], skipped=()) -> str:
    """The Markdown report: per-condition mean ± sd over seeds, every run, and the runs that were skipped and why."""
    conditions = _markdown_table(
        ["task", "condition", "seeds", *NUMERIC],
        [[_cell(s["task"]), s["condition"], str(s["seeds"]),
          *(_mean_sd(s[f"{c}_mean"], s[f"{c}_sd"]) for c in NUMERIC)] for s in summary(rows)])
    ordered = sorted(rows, key=lambda r: (str(r["task"]), r["condition"], -1 if r["seed"] is None else r["seed"]))
    runs = _markdown_table(list(COLUMNS), [[_cell(r[c]) for c in COLUMNS] for r in ordered])
    lines = ["# Boundary evaluation", "", "## Per condition (mean ± sd over seeds)", "", *conditions, "",
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
