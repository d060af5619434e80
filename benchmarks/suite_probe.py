"""A pytest plugin that writes each test's wall and CPU seconds (its own process's and its finished subprocesses')
as a JSON line to $SUITE_PROBE_OUT, with the folder its dreamer_jax was imported from (once it is).
`benchmarks.suite_cost` loads it into every pytest process it measures."""

import json
import os
import resource
import sys
import time

import pytest


def _cpu_s() -> tuple[float, float]:
    """(user + system seconds of this process, of its children that have been waited for)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """Time one test with its setup and teardown (a module's fixture counts in its first test)."""
    start, (own, children) = time.monotonic(), _cpu_s()
    yield
    wall, (own_after, children_after) = time.monotonic() - start, _cpu_s()
    code = getattr(sys.modules.get("dreamer_jax"), "__file__", None)
    line = {"test": item.nodeid, "wall_s": wall, "cpu_s": own_after - own, "children_cpu_s": children_after - children,
            "code": code and os.path.dirname(os.path.dirname(code))}
    with open(os.environ["SUITE_PROBE_OUT"], "a") as out:
        out.write(json.dumps(line) + "\n")
