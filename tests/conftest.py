"""Shared test settings: where the reference recordings live, one compilation cache for the session, and
the release of each test module's programs."""

import os
import pathlib

import pytest


REPO = pathlib.Path(__file__).resolve().parents[1]
FIXTURES_ENV = "DREAMER_JAX_FIXTURES"


def fixtures_root() -> pathlib.Path:
    """The reference fixtures folder: $DREAMER_JAX_FIXTURES, else the recordings shipped in tests/data."""
    return pathlib.Path(os.environ.get(FIXTURES_ENV, REPO / "tests" / "data"))


# One persistent compilation cache for the whole test session, shared with the CLI runs the
# tests start as subprocesses, so each distinct program compiles once.
_CACHE = pathlib.Path(os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(REPO / ".pytest_cache" / "jax")))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
# No size limit (JAX's default): with one, every write lists and reads the whole cache under a file lock to find
# what to evict (0.3 s per write at 4400 files). Without it a fresh clone's small programs took 119 CPU-s to compile
# instead of 481, and the suite 19:00 instead of 21:40. A process that reads an entry another is still writing fails
# to decompress it, and JAX compiles the program instead.
# Tiny test programs run for milliseconds but compile for tens of seconds: skip XLA's costly CPU
# optimisations (about half the compile time), and compile fusions with XLA:CPU's older emitter and without
# copy-insertion's region analysis (a debug update then compiles in 10 s instead of 16, a VTA update in 16
# instead of 26, and runs no slower). Set XLA_FLAGS to test with the usual pipeline.
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true "
                      "--xla_cpu_use_fusion_emitters=false --xla_cpu_copy_insertion_use_region_analysis=false")


# The modules that take longest on a fresh clone (end-to-end runs in subprocesses), longest first: `make test` hands
# them out first (--no-loadscope-reorder keeps this order), so that neither worker is left with a long one at the end.
LONGEST_FIRST = ("test_sweep", "test_multihost", "test_scale", "test_eval_boundaries", "test_study",
                 "test_learning_benchmark", "test_vta_train", "test_faults", "test_world_model", "test_benchmarks",
                 "test_train_cli", "test_networks")


def pytest_collection_modifyitems(items):
    """Put the longest modules first, in LONGEST_FIRST's order; the rest keep theirs."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.module.__name__, len(rank)))


def run_main(main, argv, capsys) -> tuple[int, str, str]:
    """A command's `main(argv)` run in this process, as `python -m` would: (exit status, stdout, stderr), argparse's
    exits included. Bad-input tests use it; each command also has an end-to-end test in a subprocess."""
    try:
        code = main([str(arg) for arg in argv])
    except SystemExit as exit:
        code = exit.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(autouse=True, scope="module")
def _release_programs():
    """Drop each test module's compiled programs after it: a worker runs many modules, and the programs' memory
    maps would otherwise add up to the kernel's limit (a segfault inside XLA; see `train.release_programs`)."""
    yield
    from dreamer_jax.train import release_programs  # not at the top: JAX must read the settings above first
    release_programs()
