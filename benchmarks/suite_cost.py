"""What the test suite costs, side by side: `make test`'s command on a fresh compilation cache for a baseline commit,
then for HEAD, one after the other on this machine.

    python -m benchmarks.suite_cost --baseline 995147f        # docs/results/suite_cost.json
    python -m benchmarks.suite_cost --baseline HEAD --tests tests/test_status.py --out /tmp/suite_cost.json

Each side runs in a git worktree of its commit (uncommitted changes are not measured), with PYTHONPATH on it and an
empty JAX_COMPILATION_CACHE_DIR, as a fresh clone runs: its wall seconds, the user and system CPU seconds of the
whole pytest process tree (its workers and every subprocess they waited for), the tests passed and failed (and which
failed), per test file its wall and CPU seconds (benchmarks/suite_probe.py), and whether the tests ran the worktree's
code. The ratios are HEAD's over the baseline's. The CPU's model and clock are written beside them: CPU seconds
compare only on one machine.
Exit status: 0, or 1 when a side's suite failed (its figures are still written), 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time

from benchmarks import record

REPO = pathlib.Path(__file__).resolve().parent.parent
OUT = REPO / "docs" / "results" / "suite_cost.json"
PYTEST_ARGS = ("-n", "2", "--dist", "loadfile", "--no-loadscope-reorder")  # make test's (the Makefile's test recipe)
PROBE = pathlib.Path(__file__).with_name("suite_probe.py")
_COUNT = re.compile(r"(\d+) (passed|failed|errors?)\b")


class SuiteCostError(ValueError):
    """A baseline that is not a commit of this repository; the message names the fix."""


def resolve(ref: str) -> str:
    """The commit `ref` names in this repository."""
    done = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--verify", f"{ref}^{{commit}}"], capture_output=True,
                          text=True)
    if done.returncode:
        raise SuiteCostError(f"--baseline {ref!r} is not a commit of {REPO}; give a commit, tag or branch "
                             "(git log --oneline lists them)")
    return done.stdout.strip()


def cpu() -> dict:
    """The processor's model and clock as the kernel reports them (empty where it does not)."""
    try:
        lines = pathlib.Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return {}
    fields = {key.strip(): value.strip() for key, value in (line.split(":", 1) for line in lines if ":" in line)}
    return {key: fields[name] for key, name in (("model", "model name"), ("mhz", "cpu MHz")) if name in fields}


def counts(summary: str) -> dict[str, int]:
    """Tests passed, failed and in error, from pytest's last line."""
    found = {kind.rstrip("s"): int(n) for n, kind in _COUNT.findall(summary)}
    return {kind: found.get(kind, 0) for kind in ("passed", "failed", "error")}


def by_file(lines: list[dict]) -> dict[str, dict[str, float]]:
    """Each test file's wall and CPU seconds (its tests', with their fixtures and subprocesses), costliest first."""
    files: dict[str, dict[str, float]] = {}
    for line in lines:
        entry = files.setdefault(line["test"].split("::")[0], {"wall_s": 0.0, "cpu_s": 0.0})
        entry["wall_s"] += line["wall_s"]
        entry["cpu_s"] += line["cpu_s"] + line["children_cpu_s"]
    return dict(sorted(files.items(), key=lambda item: -item[1]["cpu_s"]))


def measure(commit: str, tests: list[str], work: pathlib.Path, name: str) -> dict:
    """Run make test's command on a worktree of `commit` with a fresh compilation cache; what it cost."""
    tree, cache, probe = work / f"tree_{name}", work / f"cache_{name}", work / f"probe_{name}.jsonl"
    cache.mkdir()
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), commit], check=True,
                   capture_output=True)
    try:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree), str(work)]),
               "JAX_COMPILATION_CACHE_DIR": str(cache), "SUITE_PROBE_OUT": str(probe)}
        argv = [sys.executable, "-m", "pytest", *PYTEST_ARGS, "-p", PROBE.stem, "-q", "-rfE", "-p", "no:cacheprovider",
                *tests]
        before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic()
        done = subprocess.run(argv, cwd=tree, env=env, capture_output=True, text=True)
        wall, after = time.monotonic() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)], capture_output=True)
    lines = [json.loads(line) for line in probe.read_text().splitlines()] if probe.exists() else []
    last = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr.strip()[-300:]
    code = {line["code"] for line in lines if line["code"]}
    failures = [line.split(" ", 1)[1] for line in done.stdout.splitlines() if line.startswith(("FAILED ", "ERROR "))]
    return {"commit": commit, "exit_status": done.returncode, **counts(last), "summary": last, "failures": failures,
            "wall_s": wall,
            "user_s": after.ru_utime - before.ru_utime, "sys_s": after.ru_stime - before.ru_stime,
            "code_from_its_tree": code == {str(tree)}, "files": by_file(lines)}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.suite_cost", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--baseline", required=True, help="the commit to compare HEAD with")
    p.add_argument("--tests", nargs="*", default=[], help="test files or node ids (default: the whole suite)")
    p.add_argument("--out", type=pathlib.Path, default=OUT, help="the results file (JSON)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        sides = {"baseline": resolve(args.baseline), "head": resolve("HEAD")}
    except SuiteCostError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="suite_cost_") as work:
        shutil.copy(PROBE, pathlib.Path(work) / PROBE.name)  # the plugin both sides load (PYTHONPATH holds `work`)
        results = {}
        for name, commit in sides.items():
            print(f"{name} ({commit[:10]}): running the suite on a fresh compilation cache ...", flush=True)
            results[name] = measure(commit, args.tests, pathlib.Path(work), name)
            side = results[name]
            failed = "".join(f"\n  failed: {test}" for test in side["failures"])
            print(f"  {side['summary']}; {side['wall_s']:.0f} s wall, {side['user_s']:.0f} s user, "
                  f"{side['sys_s']:.0f} s system CPU{failed}", flush=True)
    ratios = {key: results["head"][key] / results["baseline"][key] for key in ("wall_s", "user_s")}
    record.write(args.out, "benchmarks.suite_cost", argv, cpu=cpu(), pytest_args=list(PYTEST_ARGS), tests=args.tests,
                 sides=results, head_over_baseline=ratios)
    print(f"HEAD over the baseline: {ratios['wall_s']:.2f}x the wall time, {ratios['user_s']:.2f}x the user CPU\n"
          f"results: {args.out}")
    return 1 if any(side["exit_status"] for side in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
