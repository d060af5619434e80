"""Faults a user meets are clear errors, not tracebacks: a file as --logdir or --out, damaged checkpoints."""

import dataclasses
import json
import pathlib
import shutil

import pytest

from dreamer_jax import config as cfg, train as train_lib
from dreamer_jax.boundaries import analysis
from experiments import eval_boundaries, train
from experiments.envs import make_env

# A restore that fails on damaged array data leaves tensorstore's other reads to finish on orbax's closed
# event loop; pytest reports each as an unraisable exception (a CLI run shows nothing).
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

TINY = ["--configs", "debug", "--steps", "128", "--save_every", "64", "--eval_every", "0"]

# Each kind of file orbax writes into a checkpoint (relative to the step's folder; a glob picks its largest
# match), and whether restoring fails once it is truncated (False: a restore does not need what was cut).
KINDS = {
    "_CHECKPOINT_METADATA": False,
    "commit_success.txt": False,
    "config/metadata": True,  # the saved configuration (JSON)
    "config/commit_success.txt": False,
    "state/_METADATA": True,  # the tree's structure (JSON)
    "state/_sharding": False,
    "state/array_metadatas/process_0": True,
    "state/commit_success.txt": False,
    "state/manifest.ocdbt": True,  # the merged OCDBT database's manifest
    "state/d/*": True,  # its B-tree root
    "state/ocdbt.process_0/manifest.ocdbt": False,
    "state/ocdbt.process_0/d/*": True,  # array data
}
BREAKING = [kind for kind, breaks in KINDS.items() if breaks]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One tiny finished run with checkpoints at steps 64 and 128, shared by every test (each damages a copy)."""
    logdir = tmp_path_factory.mktemp("run") / "rssm"
    assert train.main([*TINY, "--logdir", str(logdir)]) == 0
    assert sorted(p.name for p in (logdir / "checkpoints").iterdir()) == ["128", "64"]
    return logdir


def snapshot(folder: pathlib.Path) -> dict:
    """Every file below `folder` with its bytes, to show that nothing was written, moved or lost."""
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def damaged_copy(run: pathlib.Path, dest: pathlib.Path, kind: str, steps=("128",)) -> pathlib.Path:
    """A copy of the run (its config naming the copy) with the file `kind` of checkpoint(s) `steps` cut to half."""
    shutil.copytree(run, dest)
    cfg.save(dataclasses.replace(cfg.load(dest / "config.json"), logdir=str(dest)), dest / "config.json")
    for step in steps:
        path = max((dest / "checkpoints" / step).glob(kind), key=lambda p: p.stat().st_size)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return dest


def messages(stderr: str) -> list[str]:
    """The warning and error lines of stderr (the progress bar writes there too)."""
    return [line for line in stderr.splitlines() if line.startswith(("warning:", "error:", "Traceback"))]


def steps_logged(logdir: pathlib.Path) -> list[int]:
    """The steps of the run's metrics lines."""
    return [json.loads(line)["step"] for line in (logdir / "metrics.jsonl").read_text().splitlines()]


def test_the_kinds_cover_every_file_of_a_checkpoint(run):
    step = run / "checkpoints" / "128"
    assert {p for kind in KINDS for p in step.glob(kind)} == {p for p in step.rglob("*") if p.is_file()}


@pytest.mark.parametrize("inside", [False, True])
def test_train_refuses_a_file_as_logdir(tmp_path, capsys, inside):
    file = tmp_path / "file"
    file.write_text("mine")
    logdir = file / "run" if inside else file
    assert train.main([*TINY, "--logdir", str(logdir)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: --logdir {logdir}: {file} is a file, not a folder")
    assert snapshot(tmp_path) == {pathlib.Path("file"): b"mine"}


def test_eval_refuses_files_as_logdir_and_outputs(run, tmp_path, capsys):
    file = tmp_path / "file"
    file.write_text("mine")
    before = snapshot(run)
    cases = [(["--logdir", str(file)], "is not a directory"),
             (["--logdir", str(run), "--out", str(file)], f"{file} is a file"),
             (["--logdir", str(run), "--out", str(file / "out")], f"{file} is a file"),
             (["--logdir", str(run), "--out_json", str(tmp_path)], f"{tmp_path} is a folder")]
    for args, message in cases:
        assert eval_boundaries.main(args) == 2, args
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err
    assert snapshot(tmp_path) == {pathlib.Path("file"): b"mine"} and snapshot(run) == before


@pytest.mark.parametrize("kind", KINDS)
def test_resume_skips_a_damaged_latest_checkpoint_and_moves_it_aside(run, tmp_path, capsys, kind):
    logdir = damaged_copy(run, tmp_path / "run", kind)
    damaged = snapshot(logdir / "checkpoints" / "128")
    assert train.main(["--logdir", str(logdir)]) == 0
    lines = messages(capsys.readouterr().err)
    saved = sorted(int(p.name) for p in (logdir / "checkpoints").iterdir())
    if KINDS[kind]:  # went on from step 64 to 128 again; the damaged checkpoint moved aside, unchanged
        aside = logdir / "damaged_checkpoints" / "128"
        assert len(lines) == 2 and lines[0].startswith(f"warning: skipped checkpoint 128 in {logdir / 'checkpoints'}: "
                                                       "it cannot be restored (") and "trying step 64" in lines[0]
        assert lines[1] == f"warning: moved the damaged checkpoint 128 to {aside}"
        assert steps_logged(logdir) == [64, 128] and saved == [64, 128] and snapshot(aside) == damaged
    else:  # not read on restore: the run stands at 128, its --steps, and nothing is done
        assert lines == [] and steps_logged(logdir) == [64, 128] and saved == [64, 128]
        assert snapshot(logdir / "checkpoints" / "128") == damaged


@pytest.mark.parametrize("kind", BREAKING)
def test_no_checkpoint_that_restores_is_a_clear_error(run, tmp_path, capsys, kind):
    logdir = damaged_copy(run, tmp_path / "run", kind, steps=("64", "128"))
    before = snapshot(logdir)
    assert train.main(["--logdir", str(logdir)]) == 2
    lines = messages(capsys.readouterr().err)
    assert len(lines) == 2 and lines[0].startswith("warning: skipped checkpoint 128")
    assert lines[1].startswith(f"error: checkpoint(s) 128, 64 in {logdir / 'checkpoints'} cannot be restored (64: ")
    assert "Move them out of that folder" in lines[1] and "new --logdir" in lines[1]
    assert snapshot(logdir) == before


def test_a_single_damaged_checkpoint_is_a_clear_error(run, tmp_path, capsys):
    logdir = damaged_copy(run, tmp_path / "run", "state/_METADATA")
    shutil.rmtree(logdir / "checkpoints" / "64")
    before = snapshot(logdir)
    assert train.main(["--logdir", str(logdir)]) == 2
    lines = messages(capsys.readouterr().err)
    assert len(lines) == 1 and lines[0].startswith("error: checkpoint(s) 128 in ") and "JSONDecodeError" in lines[0]
    assert snapshot(logdir) == before


def test_evaluation_loads_the_newest_checkpoint_that_restores(run, tmp_path, capsys):
    logdir = damaged_copy(run, tmp_path / "run", "state/_METADATA")  # evaluation reads only the parameters
    config = cfg.load(logdir / "config.json")
    env = make_env(config)
    assert analysis.load_run(logdir, env).step == 64
    assert messages(capsys.readouterr().err)[0].startswith("warning: skipped checkpoint 128")
    with pytest.raises(analysis.RunError, match=r"checkpoint\(s\) 128 in .* cannot be restored"):
        analysis.load_run(logdir, env, step=128)


@pytest.mark.skipif(train_lib.memory_maps() is None, reason="counts /proc/self/maps (Linux)")
def test_a_run_keeps_its_programs_for_the_next_run_of_its_model_until_they_crowd_the_memory_maps(
        tmp_path, caplog, monkeypatch):
    """XLA:CPU maps each compiled kernel into memory and jit keeps every run's programs (the Learner is a static
    argument): a tiny run holds about 8k maps, and a process training run after run of different models would
    segfault at the kernel's limit of about 65k. A second run of the same model traces and compiles nothing;
    beyond MAPS_SHARE of the limit a run releases its programs when it ends."""
    import jax

    assert train.main([*TINY, "--logdir", str(tmp_path / "first")]) == 0
    with jax.log_compiles(True), caplog.at_level("WARNING"):
        assert train.main([*TINY, "--logdir", str(tmp_path / "second")]) == 0
    compiled = [r.getMessage().split(" with ")[0] for r in caplog.records]
    assert not [c for c in compiled if c.startswith(("Compiling jit(_single)", "Compiling jit(_fused)"))], compiled
    held, limit = train_lib.memory_maps()
    assert held < train_lib.MAPS_SHARE * limit and not train_lib.release_crowded_programs()
    monkeypatch.setattr(train_lib, "MAPS_SHARE", 0.0)
    assert train.main([*TINY, "--logdir", str(tmp_path / "third")]) == 0
    assert train_lib.memory_maps()[0] < held - 2000, (held, train_lib.memory_maps())


def test_a_run_compiles_its_update_once(tmp_path, caplog):
    """jit keys its programs on whether the arguments are committed to a device, and a state that went through a
    log line or a checkpoint is: the first state is too, so a log line after training began (at 48, prefill 32)
    does not compile the update a second and a third time."""
    import jax

    train_lib.release_programs()  # the module's earlier runs of this model left theirs
    with jax.log_compiles(True), caplog.at_level("WARNING"):
        assert train.main([*TINY, "--prefill", "32", "--log_every", "48", "--logdir", str(tmp_path / "run")]) == 0
    compiled = [r.getMessage().split(" with ")[0] for r in caplog.records]
    assert compiled.count("Compiling jit(_single)") == 1, [c for c in compiled if c.startswith("Compiling jit(")]


def test_runs_of_one_model_share_a_learner_and_so_their_programs():
    """jit keys its programs on the Learner: a run's directory, seed, length and periods must not make a new one."""
    from dreamer_jax.train import Learner

    first = cfg.make("debug", logdir="/a_{seed}", seed=3, steps=1000, eval_every=0, prefill=32, num_seeds=2,
                     compile=False)
    second = cfg.make("debug", logdir="/b", seed=4, steps=64, log_every=8, save_every=0, eval_episodes=3)
    other = cfg.make("debug", lr=1e-3)
    a, b, c = (Learner.abstract(config, make_env(config))[0] for config in (first, second, other))
    assert a == b and hash(a) == hash(b) and a != c
    model = {k: v for k, v in cfg.to_dict(first).items() if k not in cfg.HOST_FIELDS}
    assert {k: v for k, v in cfg.to_dict(a.config).items() if k not in cfg.HOST_FIELDS} == model
    assert all(getattr(a.config, name) == getattr(cfg.Config(), name) for name in cfg.HOST_FIELDS)
