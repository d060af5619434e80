"""Watch a sweep from another terminal: redraw its bars from its status file until it ends.

    python -m experiments.monitor --status-file runs/pinpad_sweep/pinpad_status.env

Exits 0 when the sweep is done, 1 when the file is missing or unreadable, the sweep stopped or crashed, or
it has not updated the file for --stale seconds (the sweep refreshes it every second while it runs).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time

from dreamer_jax import sweep, sweep_view
from dreamer_jax.progress import Panel
from dreamer_jax.status import StatusError, read_status


def _parser() -> argparse.ArgumentParser:
    default = os.environ.get("STATUS_FILE") or str(
        pathlib.Path(os.environ.get("LOGROOT", sweep.DEFAULT_LOGROOT)) / sweep.STATUS_NAME)
    parser = argparse.ArgumentParser(prog="python -m experiments.monitor", allow_abbrev=False,
                                     description="Redraw a sweep's progress bars from its status file until it ends.")
    parser.add_argument("--status-file", metavar="FILE", default=default,
                        help="the sweep's status file (env STATUS_FILE, else LOGROOT/%s; default %%(default)s)"
                        % sweep.STATUS_NAME)
    parser.add_argument("--interval", type=float, default=1.0, metavar="S", help="seconds between redraws "
                        "(default %(default)s)")
    parser.add_argument("--stale", type=float, default=120.0, metavar="S", help="give up when the sweep has not "
                        "updated the file for this many seconds (default %(default)s)")
    return parser


def _problem(fields: dict[str, str], path: str, stale: float, now: float) -> str | None:
    """Why watching should end without success: the sweep stopped or crashed, or stopped updating its status."""
    state = fields.get("SWEEP_STATE")
    if state == "done":
        return None
    if state != "running":
        return f"the sweep {state}: {fields.get('SWEEP_ERROR') or 'no reason recorded'}"
    silent = now - float(fields.get("SWEEP_UPDATED") or 0)
    if silent > stale:
        return (f"the sweep (process {fields.get('SWEEP_PID', '?')}) has not updated {path} for {silent:.0f} s; it "
                "has probably died: check its run log, and run the same sweep again to resume")
    return None


def _watch(path: str, interval: float, stale: float, panel: Panel) -> tuple[dict[str, str] | None, str | None]:
    """Redraw the bars until the sweep ends; its last status (None if unreadable) and what went wrong, if anything."""
    while True:
        now = time.time()
        try:
            fields = read_status(path)
            lines = sweep_view.render(fields, now)
        except FileNotFoundError:
            return None, (f"no status file at {path}: no sweep has written it yet; start one with "
                          "python -m experiments.sweep, or pass the --status-file it uses")
        except (StatusError, UnicodeDecodeError) as error:
            return None, f"cannot read {path}: {error}"
        problem = _problem(fields, path, stale, now)
        ended = fields["SWEEP_STATE"] != "running" or problem is not None
        panel.show(lines, force=ended)
        if ended:
            return fields, problem
        time.sleep(interval)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    panel = Panel(sys.stdout)
    fields, problem = _watch(args.status_file, args.interval, args.stale, panel)
    panel.close()
    if fields:
        print("\n".join(sweep_view.summary(fields)))
    if problem:
        print(f"monitor: {problem}", file=sys.stderr)
    return 1 if problem else 0


if __name__ == "__main__":
    sys.exit(main())
