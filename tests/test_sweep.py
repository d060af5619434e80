"""Sweeps: conditions, run names, planning and seed groups; `python -m experiments.sweep` end to end on the debug
preset (a condition's seeds trained in one process, a failing condition, a status file read while it changes, a second
invocation, a stop and a resume, jobs through submitit's local executor); cluster jobs that fail or are cancelled; bad
input."""

import ast
import json
import os
import signal
import subprocess
import sys
import time
import types

import matplotlib.image
import pytest
import submitit

from conftest import REPO
from dreamer_jax import config as cfg, sweep, sweep_view
from dreamer_jax.boundaries import metrics
from dreamer_jax.ledger import Current, Ledger, leading
from dreamer_jax.status import read_status, write_status
from experiments import launchers, sweep as sweep_cli

SWEEP = [sys.executable, "-m", "experiments.sweep"]
TINY = ["--configs", "debug", "--eval-args", "--episodes 2"]
# The sweep of the fixture trains (updates from env step 32). The tests of stopping, cluster jobs and requeueing check
# what happens around the training process, so their runs only collect (a prefill longer than the run): the same
# process, loop, checkpoints and signals, without tracing an update (about 15 CPU-s per process).
TRAINS, COLLECTS = ["--prefill", "32"], ["--prefill", "100000"]
CONDITIONS = "# one condition trains, the other fails when its flags are parsed\nrssm --dynamics rssm\n" \
             "bad --vta_max_seg_len 0  # must be positive\n"
# Reads the status file 20 times a second while a sweep runs (a torn write would fail to parse); prints what it saw
# as JSON.
WATCH = """
import json, sys, time
from dreamer_jax.status import read_status
path, deadline, seen, errors, reads, state = sys.argv[1], time.monotonic() + 900, set(), [], 0, None
while state not in ("done", "stopped", "crashed") and time.monotonic() < deadline:
    try:
        fields = read_status(path)
    except FileNotFoundError:
        time.sleep(0.05)
        continue
    except Exception as error:
        errors.append(repr(error))
        continue
    reads, state = reads + 1, fields["SWEEP_STATE"]
    seen.add((state, fields["CURRENT_PHASE"], int(fields["CURRENT_STEP"]) > 0, len(fields)))
    time.sleep(0.05)
print(json.dumps({"reads": reads, "errors": errors, "seen": sorted(seen)}))
"""


def run_sweep(*args):
    return subprocess.run([*SWEEP, *args], cwd=REPO, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """A tiny sweep of two conditions x two seeds, each condition's seeds in one process, one condition invalid,
    watched while it runs, then run again."""
    top = tmp_path_factory.mktemp("sweep")
    (top / "conditions.txt").write_text(CONDITIONS)
    root, status = top / "runs", top / "runs" / sweep.STATUS_NAME
    args = ["--logroot", str(root), "--seeds", "0", "1", "--seeds-per-process", "2", "--conditions",
            str(top / "conditions.txt"), *TRAINS, *TINY, "--steps", "64"]
    watcher = subprocess.Popen([sys.executable, "-c", WATCH, str(status)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    proc = subprocess.Popen([*SWEEP, *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while not status.exists() and proc.poll() is None:
        time.sleep(0.05)
    monitor = subprocess.Popen([sys.executable, "-m", "experiments.monitor", "--status-file", str(status),
                                "--interval", "0.2"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    out, err = proc.communicate(timeout=900)
    first = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    monitored = monitor.communicate(timeout=60)
    metrics = root / "pinpad_eight_rssm_seed0" / "metrics.jsonl"
    after_first = {"status": read_status(status), "log": (root / sweep.LOG_NAME).read_text(),
                   "metrics": metrics.read_text(), "watched": json.loads(watcher.communicate(timeout=60)[0]),
                   "monitor": (monitor.returncode, *monitored)}
    second = run_sweep(*args)
    return {"root": root, "first": first, "second": second, **after_first, "status_again": read_status(status),
            "metrics_again": metrics.read_text()}


def runs_by_name(fields):
    return {fields[f"RUN_{i}"]: {key[len(f"RUN_{i}_"):]: value for key, value in fields.items()
                                 if key.startswith(f"RUN_{i}_")} for i in range(1, int(fields["RUNS_TOTAL"]) + 1)}


def test_the_sweep_finishes_despite_a_failing_condition(swept):
    first, fields = swept["first"], swept["status"]
    assert first.returncode == 1, first.stderr[-3000:]  # 1: something failed, and the sweep still went to the end
    assert fields["SWEEP_STATE"] == "done" and fields["RUNS_TOTAL"] == "4" and fields["RUNS_ENDED"] == "4"
    assert (fields["RUNS_DONE"], fields["RUNS_FAILED"], fields["SEEDS_PER_PROCESS"]) == ("2", "2", "2")
    runs = runs_by_name(fields)
    assert list(runs) == ["pinpad_eight_rssm_seed0", "pinpad_eight_bad_seed0", "pinpad_eight_rssm_seed1",
                          "pinpad_eight_bad_seed1"]
    for seed in (0, 1):
        good, bad = runs[f"pinpad_eight_rssm_seed{seed}"], runs[f"pinpad_eight_bad_seed{seed}"]
        assert (good["TRAIN"], good["SEED"], good["GROUP"], bad["GROUP"]) == ("done", str(seed), "1", "2")
        assert bad["TRAIN"] == "failed" and bad["TRAIN_NOTE"] == (
            "error: invalid --vta_max_seg_len=0: must be positive; pass e.g. --vta_max_seg_len 30")
        assert float(good["STARTED"]) <= float(good["ENDED"]) <= float(bad["STARTED"])


def test_runs_train_in_their_named_directories(swept):
    root = swept["root"]
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == ["pinpad_eight_rssm_seed0",
                                                                   "pinpad_eight_rssm_seed1"]
    for seed in (0, 1):
        logdir = root / f"pinpad_eight_rssm_seed{seed}"
        config = cfg.load(logdir / "config.json")
        assert (config.seed, config.num_seeds) == (seed, 1)  # trained with the other seed, saved as its own run
        assert sweep.latest_checkpoint(logdir) == 64
        progress = json.loads((logdir / "progress.json").read_text())
        assert (progress["step"], progress["total"]) == (64, 64) and progress["env_steps_per_s"] > 0


def test_evaluation_is_attempted_when_a_checkpoint_exists_and_recorded(swept):
    runs = runs_by_name(swept["status"])
    for name, run in runs.items():
        if "bad" in name:
            assert (run["EVAL"], run["EVAL_NOTE"]) == ("skipped", f"no checkpoint in {run['LOGDIR']}/checkpoints")
        else:
            assert run["EVAL"] in ("done", "failed") and (run["EVAL"] == "done") == (run["EVAL_NOTE"] == "")


def test_the_table_holds_the_successful_runs(swept):
    root, fields = swept["root"], swept["status"]
    assert fields["TABLE"] == "done", fields["TABLE_NOTE"]
    table = (root / "boundary_table.csv").read_text()
    assert (root / "boundary_table.md").exists()
    assert "pinpad_eight_rssm_seed0" in table and "pinpad_eight_rssm_seed1" in table and "_bad_" not in table


def test_the_learning_curves_are_drawn_beside_the_table(swept):
    root = swept["root"]
    assert f"curves done: {root / 'curves.png'}" in swept["log"]
    image = matplotlib.image.imread(root / "curves.png")
    assert image.ndim == 3 and image.shape[1] > 500


def test_the_status_file_parses_at_every_moment(swept):
    watched = swept["watched"]
    assert watched["errors"] == [] and watched["reads"] > 100
    seen = {tuple(s) for s in watched["seen"]}
    assert len({count for *_, count in seen}) == 1  # every read held every key
    assert ("running", "train", True) in {s[:3] for s in seen} and ("done", "", False) in {s[:3] for s in seen}


def test_the_monitor_follows_the_sweep_to_its_end(swept):
    code, out, err = swept["monitor"]
    assert code == 0, err
    assert "sweep 100% |" in out and "; done" in out and "pinpad_eight_bad_seed1: train failed" in out


def test_the_run_log_holds_the_sweep_and_every_run(swept):
    log = swept["log"]
    assert "(1/4) pinpad_eight_rssm_seed0 + (3/4) pinpad_eight_rssm_seed1: training 2 seeds in one process\n" in log
    commands = [line for line in log.splitlines() if line.startswith("$ python -m experiments.train ")]
    assert len(commands) == 2 and all(command.endswith("--num_seeds 2") for command in commands)  # one per condition
    assert f"metrics: {swept['root'] / 'pinpad_eight_rssm_seed1' / 'metrics.jsonl'}" in log  # the child's stdout
    assert log.count("error: invalid --vta_max_seg_len=0") >= 2  # the child's stderr, then the sweep's note
    assert "sweep 100% |" in log and "pinpad_eight_bad_seed1: train failed" in log


def test_a_second_invocation_skips_what_is_done(swept):
    second, fields = swept["second"], swept["status_again"]
    assert second.returncode == 1, second.stderr[-3000:]
    runs = runs_by_name(fields)
    for seed in (0, 1):
        good, bad = runs[f"pinpad_eight_rssm_seed{seed}"], runs[f"pinpad_eight_bad_seed{seed}"]
        assert (good["TRAIN"], good["TRAIN_NOTE"]) == ("skipped", "finished before (checkpoint 64)")
        assert bad["TRAIN"] == "failed"
        if runs_by_name(swept["status"])[f"pinpad_eight_rssm_seed{seed}"]["EVAL"] == "done":
            assert good["EVAL"] == "skipped" and "newer than checkpoint 64" in good["EVAL_NOTE"]
    assert "already trained to step 64; training skipped" in second.stderr
    assert swept["metrics_again"] == swept["metrics"]


def test_a_stopped_sweep_records_it_and_resumes_from_the_checkpoint(tmp_path):
    (tmp_path / "conditions.txt").write_text("rssm --dynamics rssm\n")
    root, status = tmp_path / "runs", tmp_path / "runs" / sweep.STATUS_NAME
    args = ["--logroot", str(root), "--seeds", "0", "--conditions", str(tmp_path / "conditions.txt"), *COLLECTS, *TINY,
            "--log_every", "16", "--save_every", "0"]
    proc = subprocess.Popen([*SWEEP, *args, "--steps", "100000"], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    start = time.monotonic()
    while not status.exists() or int(read_status(status)["CURRENT_STEP"]) < 16:
        assert proc.poll() is None and time.monotonic() - start < 300, proc.communicate()
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    fields = read_status(status)
    step = sweep.latest_checkpoint(root / "pinpad_eight_rssm_seed0")
    assert 16 <= step < 100000
    assert (fields["SWEEP_STATE"], fields["RUN_1_TRAIN"], fields["RUN_1_EVAL"]) == ("stopped", "stopped", "pending")
    assert fields["RUN_1_TRAIN_NOTE"] == f"stopped by signal {signal.SIGTERM} at checkpoint {step}"
    assert "run the same command to resume" in fields["SWEEP_ERROR"]

    again = run_sweep(*args, "--steps", str(step + 16))
    fields = read_status(status)
    assert (fields["SWEEP_STATE"], fields["RUN_1_TRAIN"]) == ("done", "done"), again.stderr[-3000:]
    assert fields["RUN_1_TRAIN_NOTE"] == f"resumed from step {step}"
    metrics = (root / "pinpad_eight_rssm_seed0" / "metrics.jsonl").read_text().splitlines()
    assert json.loads(metrics[-1])["step"] == step + 16


def test_default_conditions_are_the_prototypes_four():
    configs = {name: cfg.parse(["--configs", "debug", *flags]) for name, flags in sweep.DEFAULT_CONDITIONS.items()}
    assert list(configs) == ["rssm", "vta_force0_t1", "vta_force10_t1", "vta_force0_t2_rate"]
    assert configs["rssm"].dynamics == "rssm"
    vta = {name: (c.dynamics, c.vta_max_seg_len, c.vta_boundary_force_scale, c.vta_boundary_temp, c.vta_boundary_rate,
                  c.vta_boundary_scale) for name, c in configs.items() if name != "rssm"}
    assert vta == {"vta_force0_t1": ("vta", 30, 0.0, 1.0, 0.0, 0.0), "vta_force10_t1": ("vta", 30, 10.0, 1.0, 0.0, 0.0),
                   "vta_force0_t2_rate": ("vta", 50, 0.0, 2.0, 0.1, 0.5)}


def test_plan_names_runs_seed_by_seed(tmp_path):
    runs = sweep.plan(tmp_path, "pinpad_three", {"a": ("--dynamics", "vta"), "b": ()}, [3, 1], ["debug"], ["--x", "1"])
    assert [(r.index, r.name) for r in runs] == [(1, "pinpad_three_a_seed3"), (2, "pinpad_three_b_seed3"),
                                                 (3, "pinpad_three_a_seed1"), (4, "pinpad_three_b_seed1")]
    assert runs[0].logdir == tmp_path / "pinpad_three_a_seed3"
    assert runs[0].argv == ("--logdir", str(tmp_path / "pinpad_three_a_seed3"), "--task", "pinpad_three", "--seed",
                            "3", "--configs", "debug", "--dynamics", "vta", "--x", "1")


def test_each_run_is_judged_against_its_own_seeds_baseline_run(tmp_path):
    runs = sweep.plan(tmp_path, "pinpad_three", {"rssm": (), "vta": ("--dynamics", "vta")}, [0, 1], ["debug"])
    argvs = {r.name: sweep.eval_argv(r, runs, ("--policy", "scripted"), "rssm") for r in runs}
    assert argvs["pinpad_three_vta_seed1"] == ("--logdir", str(tmp_path / "pinpad_three_vta_seed1"),
                                               "--baseline-logdir", str(tmp_path / "pinpad_three_rssm_seed1"),
                                               "--policy", "scripted")
    assert argvs["pinpad_three_rssm_seed0"] == ("--logdir", str(tmp_path / "pinpad_three_rssm_seed0"), "--policy",
                                                "scripted")  # the baseline's own runs have none
    assert sweep.eval_argv(runs[1], runs, ()) == ("--logdir", str(runs[1].logdir))


def test_conditions_file_format():
    text = "# comment\n\nbase   # no flags\nfast --steps 10 --vta_boundary_temp '2'\n"
    assert sweep.parse_conditions(text, "f") == {"base": (), "fast": ("--steps", "10", "--vta_boundary_temp", "2")}


@pytest.mark.parametrize("text, message", [
    ("", "f defines no conditions"),
    ("a --x 1\na --y 2\n", "f, line 2: condition 'a' is defined twice"),
    ("a b --x 1\n", "f, line 1: expected training flags after the name, got 'b'"),
    ("a/b --x 1\n", "condition name 'a/b'"),
    ("a --x 'open\n", "f, line 1: No closing quotation"),
    ("a --seed 3\n", "--seed is set by the sweep"),
])
def test_malformed_conditions_are_refused(text, message):
    with pytest.raises(sweep.SweepError, match=message):
        sweep.parse_conditions(text, "f")


def test_finished_means_a_checkpoint_at_the_steps_the_command_trains_to(tmp_path):
    run = sweep.plan(tmp_path, "pinpad_eight", {"c": ()}, [0], ["debug"], ["--steps", "64"])[0]
    assert not sweep.is_finished(run) and sweep.latest_checkpoint(run.logdir) is None
    run.logdir.mkdir()
    cfg.save(cfg.parse(run.argv), run.logdir / "config.json")
    for name in ("32", "64.orbax-checkpoint-tmp-1"):
        (run.logdir / "checkpoints" / name).mkdir(parents=True)
    assert sweep.latest_checkpoint(run.logdir) == 32 and not sweep.is_finished(run)
    (run.logdir / "checkpoints" / "64").mkdir()
    assert sweep.is_finished(run)
    longer = sweep.plan(tmp_path, "pinpad_eight", {"c": ()}, [0], ["debug"], ["--steps", "128"])[0]
    assert sweep.target_steps(longer) == 128 and not sweep.is_finished(longer)
    assert not sweep.eval_is_current(run.logdir)
    result = run.logdir / sweep.EVAL_RESULT
    result.write_text(json.dumps({"settings": {"format": metrics.FORMAT - 1}}))
    assert not sweep.eval_is_current(run.logdir)  # written by older metrics: evaluated again
    result.write_text(json.dumps({"settings": {"format": metrics.FORMAT}}))
    assert sweep.eval_is_current(run.logdir)
    result.write_text("{")  # cut short
    assert not sweep.eval_is_current(run.logdir)


@pytest.mark.parametrize("args, env, message", [
    (["--conditions", "{top}/missing.txt"], {}, "cannot read the conditions file {top}/missing.txt"),
    (["--conditions", "{top}/malformed.txt"], {}, "{top}/malformed.txt, line 2: expected training flags"),
    (["--seeds", "0", "x"], {}, "--seeds: 'x' given; seeds are integers"),
    ([], {"SEEDS": "1 -2"}, "SEEDS: '-2' given"),
    (["--seeds", "1", "1"], {}, "a seed is given twice"),
    (["--logroot", "{top}/file"], {}, "--logroot {top}/file is a file"),
    (["--seed", "3"], {}, "--seed is set by the sweep"),
    (["--stepz", "5"], {}, "unknown flag --stepz (did you mean --steps?)"),
    (["--batch_length", "1"], {}, "invalid --batch_length=1"),
    (["--task", "pinpad_nine"], {}, "pinpad_nine"),
    (["--configs", "tiny"], {}, "unknown preset 'tiny'"),
    (["--status-file", "{top}/file"], {}, "--status-file {top}/file exists and is not a sweep status file"),
    ([], {"SKIP_RSSM": "maybe"}, "SKIP_RSSM='maybe' is not a boolean"),
    (["--skip-rssm", "--conditions", "{top}/rssm.txt"], {}, "no conditions left after --skip-rssm"),
    (["--num_seeds", "2"], {}, "--num_seeds is set by the sweep"),
    (["--eval-baseline", "rsm"], {}, "--eval-baseline rsm is not a condition of this sweep (rssm, vta_force0_t1,"),
    (["--eval-baseline", "rssm", "--eval-args", "--baseline-logdir x"], {},
     "--eval-args sets --baseline-logdir and --eval-baseline sets it per run; drop one"),
    (["--seeds-per-process", "0"], {}, "--seeds-per-process 0: give a whole number, 1 or more"),
    (["--slurm-partition", "gpu"], {}, "--slurm-partition is a setting of cluster jobs; add --launcher slurm"),
    (["--launcher", "slurm"], {}, "--launcher slurm needs --slurm-time MINUTES"),
    (["--launcher", "slurm", "--slurm-time", "1h"], {}, "--slurm-time 1h: give a whole number"),
    (["--launcher", "submitit-local", "--slurm-time", "5", "--slurm-signal-delay", "0"], {},
     "--slurm-signal-delay 0: give a whole number, 1 or more"),
    (["--launcher", "slurm", "--slurm-time", "60"], {"PATH": "{top}"}, "--launcher slurm: no sbatch or srun on PATH"),
    (["--launcher", "submitit-local", "--slurm-time", "5", "--slurm-param", "account"], {},
     "--slurm-param 'account' is not KEY=VALUE"),
])
def test_bad_input_is_one_clear_error_and_writes_nothing(tmp_path, capsys, args, env, message):
    top = tmp_path / "top"
    top.mkdir()
    (top / "malformed.txt").write_text("good --steps 1\nbad steps 1\n")
    (top / "rssm.txt").write_text("rssm --dynamics rssm\n")
    (top / "file").write_text("not a directory\n")
    before = {p: p.read_bytes() for p in top.iterdir()}
    args, env = [arg.format(top=top) for arg in args], {k: v.format(top=top) for k, v in env.items()}
    code = sweep_cli.main(["--logroot", str(top / "runs"), "--configs", "debug", *args], env=env)
    err = capsys.readouterr().err
    assert code == 2 and message.format(top=top) in err and err.count("\n") == 1, err
    assert {p: p.read_bytes() for p in top.iterdir()} == before


def test_slurm_flags_become_the_jobs_submitit_parameters(tmp_path):
    options = sweep_cli.parse_options(["--logroot", str(tmp_path), "--launcher", "submitit-local", "--slurm-time",
                                       "30", "--slurm-signal-delay", "120", "--slurm-mem-gb", "8"], env={})
    assert options.slurm == {"timeout_min": 30, "signal_delay_s": 120, "mem_gb": 8}


def test_a_status_file_of_a_live_sweep_is_not_taken_over(tmp_path, capsys):
    write_status(tmp_path / "status.env", {"SWEEP_STATE": "running", "SWEEP_PID": 1})
    code = sweep_cli.main(["--logroot", str(tmp_path / "runs"), "--status-file", str(tmp_path / "status.env")], env={})
    assert code == 2 and "another sweep (process 1) is running" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_environment_variables_set_the_sweep_and_flags_win(tmp_path, capsys):
    env = {"LOGROOT": str(tmp_path / "env_root"), "TASK": "pinpad_four", "SEEDS": "5,6", "SKIP_RSSM": "1",
           "RUN_LOG": str(tmp_path / "my.log"), "STATUS_FILE": str(tmp_path / "my.env")}
    assert sweep_cli.main(["--dry-run", "--seeds", "7"], env=env) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split(" [")[0] for line in out[:3]] == [
        "(1/3) pinpad_four_vta_force0_t1_seed7", "(2/3) pinpad_four_vta_force10_t1_seed7",
        "(3/3) pinpad_four_vta_force0_t2_rate_seed7"]
    assert f"--logdir {tmp_path / 'env_root' / 'pinpad_four_vta_force0_t1_seed7'} --task pinpad_four --seed 7 " \
           "--configs pinpad size12m --dynamics vta" in out[0]
    assert out[3:] == [f"status: {tmp_path / 'my.env'}", f"log: {tmp_path / 'my.log'}"]
    assert list(tmp_path.iterdir()) == []


def test_the_slurm_launcher_without_submitit_names_the_extra_to_install(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "submitit", None)  # as if it were not installed
    code = sweep_cli.main(["--logroot", str(tmp_path / "runs"), "--launcher", "slurm", "--slurm-time", "60"], env={})
    assert code == 2 and "pip install 'dreamer_jax[cluster]'" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def runs_of(tmp_path, seeds, conditions=("a", "b")):
    """The planned runs of `conditions` (all RSSM) with `seeds`."""
    return sweep.plan(tmp_path, "pinpad_eight", {c: ("--dynamics", "rssm") for c in conditions}, seeds, ["debug"])


def test_seed_groups_are_blocks_of_consecutive_seeds_of_one_condition(tmp_path):
    runs = runs_of(tmp_path, [0, 1, 2, 4, 5])
    groups = sweep.plan_groups(runs, 2, [None] * len(runs))
    assert [[(r.condition, r.seed) for r in g.runs] for g in groups] == [
        [("a", 0), ("a", 1)], [("b", 0), ("b", 1)], [("a", 2)], [("b", 2)], [("a", 4), ("a", 5)], [("b", 4), ("b", 5)]]
    assert [g.index for g in groups] == [1, 2, 3, 4, 5, 6]
    assert groups[0].argv == ("--logdir", str(tmp_path / "pinpad_eight_a_seed{seed}"), "--task", "pinpad_eight",
                              "--seed", "0", "--configs", "debug", "--dynamics", "rssm", "--num_seeds", "2")
    assert groups[2].argv == groups[2].runs[0].argv
    config = cfg.parse(groups[4].argv)
    assert (config.seed, config.num_seeds) == (4, 2)
    assert [g.runs for g in sweep.plan_groups(runs, 1, [None] * len(runs))] == [(run,) for run in runs]


def test_runs_in_another_state_than_their_neighbours_train_alone(tmp_path):
    runs = runs_of(tmp_path, [0, 1, 2, 3], conditions=("a",))
    seeds = lambda states: [[r.seed for r in g.runs] for g in sweep.plan_groups(runs, 4, states)]  # noqa: E731
    assert seeds([(64, True)] * 4) == [[0, 1, 2, 3]]
    assert seeds([(32, False), (32, False), (None, False), (32, False)]) == [[0, 1], [2], [3]]
    assert seeds([(64, True), (32, False), (64, True), (32, False)]) == [[0], [1], [2], [3]]


def test_a_group_at_work_shows_in_every_run_and_the_bar_follows_the_furthest(tmp_path):
    runs = runs_of(tmp_path, [0, 1], conditions=("a",))
    book = Ledger(runs, {}, groups=sweep.plan_groups(runs, 2, [None, None]), started=1000.0)
    for run in runs:
        book.outcomes[run.index - 1].train = "running"
    steps = [Current(index, "train", 1000.0, step=step, total=64) for index, step in ((1, 32), (2, 48))]
    book.current = leading([Current(0, "eval", 1000.0), *steps])
    fields = book.fields()
    assert (fields["RUN_1_GROUP"], fields["RUN_2_GROUP"], fields["CURRENT"], fields["CURRENT_STEP"]) == (1, 1, 2, 48)
    assert sweep_view.render(fields, now=1010.0)[0].startswith("(2/2) pinpad_eight_a_seed1  75% |")
    assert sweep_view.render(fields, now=1010.0)[0].endswith("48/64 [00:10<00:03, 4.8/s] env steps (+1 running)")
    assert leading([]) is None


def test_jobs_through_submitit_run_all_at_once_and_record_their_ids(tmp_path):
    (tmp_path / "conditions.txt").write_text(CONDITIONS)
    result = run_sweep("--logroot", str(tmp_path / "runs"), "--conditions", str(tmp_path / "conditions.txt"), "--seeds",
                       "0", "1", "--seeds-per-process", "2", *COLLECTS, *TINY, "--steps", "64", "--launcher",
                       "submitit-local", "--slurm-time", "30")
    root = tmp_path / "runs"
    fields, log = read_status(root / sweep.STATUS_NAME), (root / sweep.LOG_NAME).read_text()
    assert result.returncode == 1, result.stderr[-3000:]  # 1: the bad condition failed
    assert (fields["SWEEP_STATE"], fields["LAUNCHER"], fields["TABLE"]) == ("done", "submitit-local", "done")
    runs = runs_by_name(fields)
    good, bad = ([runs[f"pinpad_eight_{condition}_seed{seed}"] for seed in (0, 1)] for condition in ("rssm", "bad"))
    assert all((r["TRAIN"], r["EVAL"], r["STEP"]) == ("done", "done", "64") for r in good)
    assert all(r["TRAIN"] == "failed" and r["TRAIN_NOTE"].startswith("error: invalid --vta_max_seg_len=0") for r in bad)
    jobs = {good[0]["JOB"], bad[0]["JOB"]}
    assert good[0]["JOB"] == good[1]["JOB"] and bad[0]["JOB"] == bad[1]["JOB"] and len(jobs) == 2 and "" not in jobs
    assert all(f"submitted job {job} to train 2 seeds in one process" in log for job in jobs)
    job_log = (root / launchers.JOBS_DIR / f"{good[0]['JOB']}_0_log.err").read_text()
    assert job_log.count("$ python -m experiments.train ") == 1 and "--num_seeds 2" in job_log
    assert "pinpad_eight_rssm_seed1" in (root / "boundary_table.csv").read_text()


class Jobs:
    """Stands in for submitit's executor: hands out the given jobs, or raises an exception given in their place."""

    def __init__(self, *jobs):
        self.jobs, self.submitted = list(jobs), []

    def update_parameters(self, **parameters):
        pass

    def submit(self, work, *args):
        self.submitted.append(args)
        job = self.jobs.pop(0)
        if isinstance(job, Exception):
            raise job
        return job


def cluster_sweep(tmp_path, executor, stops):
    """A sweep of two runs (conditions a and b, seed 0) by a ClusterSweeper with `executor`; its exit code, its
    status and its runs."""
    (tmp_path / "conditions.txt").write_text("a --dynamics rssm\nb --dynamics rssm\n")
    options = sweep_cli.parse_options(["--logroot", str(tmp_path / "runs"), "--seeds", "0", "--configs", "debug",
                                       "--conditions", str(tmp_path / "conditions.txt"), "--launcher",
                                       "submitit-local", "--slurm-time", "5"], env={})
    runs = sweep.plan(options.logroot, options.task, options.conditions, options.seeds, options.configs)
    options.logroot.mkdir()
    code = launchers.ClusterSweeper(options, runs, sweep.plan_groups(runs, 1, [None] * 2), stops, executor).run()
    return code, read_status(options.status_file), runs


def test_a_job_that_fails_or_is_refused_is_recorded_and_the_sweep_goes_on(tmp_path):
    real = submitit.AutoExecutor(folder=tmp_path / "jobs", cluster="local")
    real.update_parameters(timeout_min=1)
    crashed = real.submit(int, "not a number")  # a job that raises
    refused = RuntimeError("sbatch: error: invalid partition specified: gpu")
    code, fields, _ = cluster_sweep(tmp_path, Jobs(refused, crashed), [])
    assert code == 1 and fields["SWEEP_STATE"] == "done"
    assert (fields["RUN_1_TRAIN"], fields["RUN_1_TRAIN_NOTE"], fields["RUN_1_JOB"]) == (
        "failed", "not submitted: sbatch: error: invalid partition specified: gpu", "")
    assert (fields["RUN_2_TRAIN"], fields["RUN_2_JOB"]) == ("failed", crashed.job_id)
    assert fields["RUN_2_TRAIN_NOTE"] == (f"job {crashed.job_id}: ValueError: invalid literal for int() with base 10: "
                                         "'not a number'")
    assert (fields["RUN_2_EVAL"], fields["RUNS_ENDED"], fields["TABLE"]) == ("skipped", "2", "skipped")


def test_a_stopped_cluster_sweep_cancels_its_jobs(tmp_path):
    stops = []

    def job():
        """A job that runs until the sweep is asked to stop; a sleeping process stands in for its controller."""
        def done():
            stops.append(signal.SIGTERM)
            return False
        controller = subprocess.Popen(["sleep", "60"])
        return controller, types.SimpleNamespace(job_id=str(controller.pid), state="RUNNING", done=done,
                                                 paths=types.SimpleNamespace(stderr=tmp_path / "log.err"))
    (first, a), (second, b) = job(), job()
    executor = Jobs(a, b)
    code, fields, runs = cluster_sweep(tmp_path, executor, stops)
    assert code == 128 + signal.SIGTERM
    assert first.wait(timeout=10) == second.wait(timeout=10) == -signal.SIGTERM
    assert (fields["SWEEP_STATE"], fields["TABLE"]) == ("stopped", "pending")
    for i, controller in ((1, first), (2, second)):
        assert (fields[f"RUN_{i}_TRAIN"], fields[f"RUN_{i}_EVAL"]) == ("stopped", "pending")
        assert fields[f"RUN_{i}_TRAIN_NOTE"] == f"stopped by signal {signal.SIGTERM}; job {controller.pid} cancelled"
    assert executor.submitted[0] == (runs[0].argv, "", (str(runs[0].logdir),), (("--logdir", str(runs[0].logdir)),))


def test_slurm_flags_reach_the_jobs_sbatch_script(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"  # SLURM's commands, faked: sbatch keeps the script it is given
    bin_dir.mkdir()
    for command, script in (("srun", "exit 0"), ("sbatch", 'cp "$1" "$(dirname "$0")/job.sh"; echo "Submitted batch '
                                                           'job 4242"')):
        (bin_dir / command).write_text(f"#!/bin/sh\n{script}\n")
        (bin_dir / command).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    options = sweep_cli.parse_options(
        ["--logroot", str(tmp_path / "runs"), "--launcher", "slurm", "--slurm-time", "720", "--slurm-partition", "gpu",
         "--slurm-gpus-per-node", "1", "--slurm-cpus-per-task", "8", "--slurm-mem-gb", "32", "--slurm-setup",
         "source .venv/bin/activate", "--slurm-param", "account=myproject"], env=os.environ)
    assert launchers.make_executor(options).submit(print).job_id == "4242"
    script = (bin_dir / "job.sh").read_text()
    for line in ("--time=720", "--partition=gpu", "--gpus-per-node=1", "--cpus-per-task=8", "--mem=32GB",
                 "--account=myproject", f"--output={tmp_path / 'runs' / launchers.JOBS_DIR}/%j_0_log.out"):
        assert f"#SBATCH {line}\n" in script
    assert "\nsource .venv/bin/activate\n" in script


def test_a_job_warned_of_its_time_limit_saves_its_training_and_is_requeued_to_resume_it(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    logdir = tmp_path / "run"
    executor = submitit.AutoExecutor(folder=tmp_path / "jobs", cluster="local")
    executor.update_parameters(timeout_min=15)
    argv = ("--configs", "debug", "--steps", "256", *COLLECTS, "--logdir", str(logdir))
    job = executor.submit(launchers.SweepJob(), argv, "", (), ())
    deadline = time.monotonic() + 600
    while sweep.read_progress(logdir) is None and time.monotonic() < deadline:
        time.sleep(0.1)
    # SLURM's warning reaches every process of the job: the job's own and its training's.
    training = int((logdir / ".lock").read_text())
    with open(f"/proc/{training}/stat") as stat:
        worker = int(stat.read().rsplit(")", 1)[1].split()[1])
    for pid in (training, worker):
        os.kill(pid, signal.SIGUSR2)
    while not job.done() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert job.result() == (("done", ""), [])
    out, err = job.paths.stdout.read_text(), job.paths.stderr.read_text()
    stopped = [line for line in out.splitlines() if line.startswith("stopped by signal")]
    assert len(stopped) == 1 and stopped[0].startswith(f"stopped by signal {int(signal.SIGUSR2)} at step ")
    at = int(stopped[0].split(" at step ")[1].split(";")[0])
    assert 0 < at < 256 and err.count("$ python -m experiments.train ") == 2  # the requeued job trained again
    steps = [json.loads(line)["step"] for line in (logdir / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 256 and at in steps  # resumed from `at`, not from 0
    assert sweep.read_progress(logdir)["step"] == 256


def test_the_launchers_do_not_import_the_sweep_command():
    # experiments.sweep (the command line) builds on experiments.launchers, not the other way round, not even for
    # type checking: every import anywhere in launchers.py is read off its syntax tree.
    tree = ast.parse((REPO / "experiments" / "launchers.py").read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert {"dreamer_jax", "dreamer_jax.ledger", "dreamer_jax.stops", "subprocess"} <= imported  # the walk sees them
    assert not {"experiments.sweep", "experiments"} & imported, imported


def test_the_sweep_and_the_campaign_start_without_the_model():
    """The commands that only start and watch other processes import neither the model nor the checkpointer (a
    second or two per process, and memory held for hours)."""
    code = ("import sys, experiments.sweep, experiments.monitor, benchmarks.campaign; "
            "print(sorted(m for m in ('flax', 'distrax', 'orbax.checkpoint', 'dreamer_jax.train') "
            "if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr
