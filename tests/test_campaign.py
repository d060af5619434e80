"""The campaign (benchmarks/campaign.py): a tiny list of three runs trained, recorded and aggregated; the same list
stopped in the middle of a run and resumed writes the same records; the aggregate from the records equals the
learning benchmark's from the runs; the list, the budget and records of other settings."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from benchmarks import campaign, learning
from conftest import REPO, run_main
from dreamer_jax import config as cfg, run as run_lib, sweep
from dreamer_jax.status import read_status

# Three RSSM runs of the debug model that only collect (a prefill longer than the run: no update to compile), with a
# periodic evaluation every 32 env steps and a checkpoint every 64.
PLAN = {
    "preset": "debug", "flags": "--prefill 100000 --time_limit 50 --eval_every 32 --log_every 16 --save_every 64",
    "eval_args": "--policy scripted --episodes 2 --resamples 19 --bootstrap 10",
    "env_steps_per_s": {"rssm": 100, "vta": 50},
    "variants": {"rssm": "--dynamics rssm", "vta": "--dynamics vta"}, "learning": ["rssm", "vta"],
    "runs": [{"task": "pinpad_three", "variants": ["rssm"], "seeds": [0, 1, 2], "steps": 256},
             {"task": "pinpad_three", "variants": ["vta"], "seeds": [0], "steps": 512, "hold": "a test's say-so"}],
}
NAMES = [f"pinpad_three_rssm_seed{seed}" for seed in range(3)]
# What differs between two records of the same run: where and when it ran, and how fast.
VOLATILE = ("train_wall_s", "train_cpu_s", "sessions", "recorded_at", "machine", "command")


def _campaign(root, *args, argv_only=False):
    argv = [str(arg) for arg in [sys.executable, "-m", "benchmarks.campaign", "--plan", root / "plan.json", "--records",
                                 root / "records", "--state", root / "state", "--out", root / "out", *args]]
    return argv if argv_only else subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=900)


def _folder(tmp_path_factory, name, plan=PLAN):
    root = tmp_path_factory.mktemp(name)
    (root / "plan.json").write_text(json.dumps(plan))
    return root


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    """The list trained in one invocation, then its aggregate written from the records. Its budget fits one run at the
    list's first estimate (1 env step/s), so the campaign chooses again when that run ends, from its record's rate."""
    root = _folder(tmp_path_factory, "whole", {**PLAN, "env_steps_per_s": {"rssm": 1, "vta": 1}})
    done = _campaign(root, "--budget", "1300s")
    assert done.returncode == 0, done.stderr[-3000:]
    return root, done


@pytest.fixture(scope="module")
def resumed(whole, tmp_path_factory):
    """The same list on a machine that went down while the second run trained: the first run's record committed
    (copied from `whole`), then the campaign and its training killed at once (SIGKILL to the process group, no
    checkpoint saved on the way out) once the second run had a checkpoint past its first; then run again."""
    root = _folder(tmp_path_factory, "resumed")
    shutil.copytree(whole[0] / "records" / "pinpad_three" / "rssm" / "seed0",
                    root / "records" / "pinpad_three" / "rssm" / "seed0")
    argv, start = _campaign(root, argv_only=True), time.monotonic()
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    while (sweep.latest_checkpoint(root / "state" / NAMES[1]) or 0) < 64:
        assert proc.poll() is None and time.monotonic() - start < 600, proc.communicate()
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    stopped_at = sweep.latest_checkpoint(root / "state" / NAMES[1])
    again = _campaign(root)
    return root, stopped_at, again


def _record(root, name):
    folder = root / "records" / "pinpad_three" / "rssm" / name
    final = json.loads((folder / campaign.FINAL).read_text())
    lines = [{k: v for k, v in json.loads(line).items() if k not in run_lib.TIMING}
             for line in (folder / "metrics.jsonl").read_text().splitlines()]
    config = {k: v for k, v in json.loads((folder / "config.json").read_text()).items() if k != "logdir"}
    arrays = np.load(folder / "boundary_eval.npz")
    return ({k: v for k, v in final.items() if k not in VOLATILE}, lines, config,
            {k: (arrays[k].dtype, arrays[k].shape, arrays[k].tobytes()) for k in arrays.files})  # NaN equals NaN


def test_a_finished_run_leaves_a_complete_record(whole):
    root, done = whole
    assert "record done" in (root / "state" / campaign.LOG_NAME).read_text()
    first, _, later = done.stdout.partition("minutes of the budget left:")
    assert f"{NAMES[0]}: train done" in first and NAMES[1] not in first and f"{NAMES[1]}: train done" in later, \
        done.stdout  # one run fitted the budget at the list's estimate; the rest came with the time left
    for seed, name in enumerate(NAMES):
        folder = root / "records" / "pinpad_three" / "rssm" / f"seed{seed}"
        files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
        assert files == sorted([*campaign.record_files(campaign.load_plan(root / "plan.json")), campaign.FINAL]), name
        # config.json and metrics.jsonl are the run's own files, byte for byte.
        for copied in ("config.json", "metrics.jsonl"):
            assert (folder / copied).read_bytes() == (root / "state" / name / copied).read_bytes()
        final = json.loads((folder / campaign.FINAL).read_text())
        assert (final["task"], final["variant"], final["seed"], final["step"]) == ("pinpad_three", "rssm", seed, 256)
        assert final["target_return"] == learning.TARGET * final["random_return"]
        assert final["final_episodes"] == 16 and final["tracking_episodes"] == 32
        assert set(final["tracking"]["imagined"]) == {"1", "5", "15", "45"}
        assert final["train_wall_s"] > 0 and final["train_cpu_s"] > 0
        assert [s["from_step"] for s in final["sessions"]] == [0] and final["model_code"]
        assert json.loads((folder / "boundary_eval.json").read_text())["settings"]["policy"] == "scripted"
    # Each run was judged in the child that wrote its record; the status file says so (the last round's runs).
    fields = read_status(root / "state" / campaign.STATUS_NAME)
    assert [fields[f"RUN_{i}_EVAL"] for i in range(1, int(fields["RUNS_TOTAL"]) + 1)] == ["done", "done"], fields
    # The held run is not trained; a second invocation trains nothing.
    assert not (root / "state" / "pinpad_three_vta_seed0").exists()
    again = _campaign(root)
    assert again.returncode == 0 and "nothing to train" in again.stdout, again.stderr[-2000:]


def test_a_campaign_stopped_in_the_middle_and_resumed_writes_the_same_records(whole, resumed):
    root, stopped_at, again = resumed
    assert 64 <= stopped_at < 256, stopped_at
    assert again.returncode == 0, again.stderr[-3000:]
    for seed in range(3):
        assert _record(root, f"seed{seed}") == _record(whole[0], f"seed{seed}"), seed
    final = json.loads((root / "records" / "pinpad_three" / "rssm" / "seed1" / campaign.FINAL).read_text())
    assert [s["from_step"] for s in final["sessions"]] == [0, stopped_at]


def test_the_aggregate_from_the_records_equals_the_learning_benchmarks_from_the_runs(whole, capsys):
    root, _ = whole
    from_records = json.loads((root / "out" / "learning.json").read_text())
    code, _, err = run_main(learning.main, ["--setting", "tiny", "--report", "--dynamics", "rssm", "--seeds", "3",
                                            "--logroot", root / "state", "--out", root / "direct", "--no-openloop"],
                            capsys)
    assert code == 0, err
    direct = json.loads((root / "direct" / "learning.json").read_text())
    strip = lambda runs: [{k: v for k, v in r.items() if k != "logdir"} for r in runs]  # noqa: E731
    assert strip(from_records["runs"]) == strip(direct["runs"]) and len(direct["runs"]) == 3
    assert from_records["summary"] == direct["summary"]
    for key in ("random_return", "scripted_return", "target_return", "episode_length"):
        assert from_records[key] == direct[key]
    assert list(from_records["model_code"]["rssm"].values()) == [3]
    assert (root / "out" / "learning_curves.png").exists()


def test_a_record_of_other_settings_is_refused_and_nothing_is_written(whole, tmp_path, capsys):
    root, _ = whole
    records = tmp_path / "records"
    (records / "pinpad_three").mkdir(parents=True)
    subprocess.run(["cp", "-r", str(root / "records" / "pinpad_three" / "rssm"), str(records / "pinpad_three")],
                   check=True)
    config = records / "pinpad_three" / "rssm" / "seed1" / "config.json"
    config.write_text(config.read_text().replace('"depth": 4', '"depth": 8'))
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    code, _, err = run_main(campaign.main, ["--plan", root / "plan.json", "--records", records, "--state",
                                            tmp_path / "state", "--out", tmp_path / "out"], capsys)
    assert code == 2 and "seed1 was trained with other settings" in err and "depth 8 (the list: 4)" in err, err
    assert "Move the record aside" in err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_a_run_whose_evaluation_fails_gets_no_record_until_it_is_judged_again(tmp_path_factory):
    """...and then its record carries the judgements on the list's other policies' episodes too."""
    one = {**PLAN, "runs": [{"task": "pinpad_three", "variants": ["rssm"], "seeds": [0], "steps": 64}],
           "eval_policies": ["random", "agent"]}
    root = _folder(tmp_path_factory, "failed_eval", {**one, "eval_args": "--policy nonsense"})
    failed = _campaign(root)
    record = root / "records" / "pinpad_three" / "rssm" / "seed0"
    assert failed.returncode == 1 and not record.exists(), failed.stderr[-2000:]
    log = (root / "state" / campaign.LOG_NAME).read_text()
    assert f"{NAMES[0]}: record failed" in log and "invalid choice: 'nonsense'" in log, log[-3000:]
    (root / "plan.json").write_text(json.dumps(one))
    again = _campaign(root)
    assert again.returncode == 0, again.stderr[-2000:]
    for policy in sweep.EVAL_POLICIES:
        result = sweep.eval_result(record, policy)
        assert json.loads(result.read_text())["settings"]["policy"] == policy
        for path in (result, result.with_suffix(".npz")):  # the run's own files
            assert path.read_bytes() == (root / "state" / NAMES[0] / path.relative_to(record)).read_bytes()


def test_a_record_missing_or_outdated_evaluations_is_completed_from_the_runs_state(whole, tmp_path):
    """A record whose evaluation is gone, or was made by older metrics, lists it in the dry run; --complete judges it
    again from the run's checkpoint and brings it, and refuses where the checkpoint is gone."""
    root = tmp_path / "copy"
    shutil.copytree(whole[0], root)
    seed0, seed1 = (root / "records" / "pinpad_three" / "rssm" / f"seed{k}" for k in (0, 1))
    (seed0 / "boundary_eval.npz").unlink()
    kept = (seed1 / "boundary_eval.json").read_bytes()
    for path in (seed1 / "boundary_eval.json", root / "state" / NAMES[1] / "boundary_eval.json"):  # older metrics
        older = json.loads(path.read_text())
        settings = {**older["settings"], "format": older["settings"]["format"] - 1}
        path.write_text(json.dumps({**older, "settings": settings}))
    dry = _campaign(root, "--dry-run")
    assert "pinpad_three_rssm_seed0: recorded in" in dry.stdout and "lacks boundary_eval.npz (missing" in dry.stdout
    assert "lacks boundary_eval.json, boundary_eval.npz (missing" in dry.stdout  # seed 1: both, judged again
    done = _campaign(root, "--complete")
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"{NAMES[0]}: boundary_eval.npz brought from" in done.stdout
    assert (seed0 / "boundary_eval.npz").read_bytes() == (whole[0] / "records" / "pinpad_three" / "rssm" / "seed0" /
                                                          "boundary_eval.npz").read_bytes()
    judged = json.loads((seed1 / "boundary_eval.json").read_text())
    assert judged["settings"] == json.loads(kept)["settings"]  # today's metrics, from the same checkpoint
    assert "lacks" not in _campaign(root, "--dry-run").stdout
    (seed0 / "boundary_eval.npz").unlink()
    shutil.rmtree(root / "state" / NAMES[0] / "checkpoints")
    refused = _campaign(root, "--complete")
    assert refused.returncode == 1 and "move the record aside to train the run again" in refused.stderr


def test_a_record_shorter_than_the_list_asks_is_extended_from_the_runs_state(whole, tmp_path):
    """The list asks for more env steps than a record has: the run resumes from its checkpoint and its record is
    replaced by the longer one, whose metrics go on from the shorter's; a list asking for fewer is refused."""
    root = tmp_path / "copy"
    shutil.copytree(whole[0], root)
    record = root / "records" / "pinpad_three" / "rssm" / "seed0"
    before = (record / "metrics.jsonl").read_text()
    (root / "plan.json").write_text(json.dumps({**PLAN, "runs": [{"task": "pinpad_three", "variants": ["rssm"],
                                                                  "seeds": [0], "steps": 320}]}))
    dry = _campaign(root, "--dry-run")
    assert f"train  {NAMES[0]}: resumes from step 256, to 320 env steps" in dry.stdout, dry.stdout + dry.stderr
    assert "extends its record of 256 env steps" in dry.stdout
    again = _campaign(root)
    assert again.returncode == 0, again.stderr[-2000:]
    final = json.loads((record / campaign.FINAL).read_text())
    assert final["step"] == 320 and [s["from_step"] for s in final["sessions"]] == [0, 256]
    assert (record / "metrics.jsonl").read_text().startswith(before) and lines_at(record)[-1] == 320
    assert json.loads((record / "boundary_eval.json").read_text())["settings"]["step"] == 320
    assert not list(record.parent.glob(".*"))  # no partial or replaced folder left
    (root / "plan.json").write_text(json.dumps({**PLAN, "runs": [{"task": "pinpad_three", "variants": ["rssm"],
                                                                  "seeds": [0], "steps": 256}]}))
    refused = _campaign(root, "--dry-run")
    assert refused.returncode == 2 and "steps 320 (the list: 256)" in refused.stderr


def lines_at(folder):
    """The env steps of a run's metrics lines."""
    return [json.loads(line)["step"] for line in (folder / "metrics.jsonl").read_text().splitlines()]


def _plan(tmp_path, **changes):
    path = tmp_path / "plan.json"
    path.write_text(json.dumps({**PLAN, **changes}))
    return campaign.load_plan(path)


def test_runs_are_taken_in_the_lists_order_while_they_fit_the_budget_the_first_always(tmp_path):
    plan = _plan(tmp_path, runs=[{"task": "pinpad_three", "variants": ["rssm", "vta"], "seeds": [0, 1], "steps": 1000},
                                 {"task": "pinpad_four", "variants": ["rssm"], "seeds": [0], "steps": 100}])
    assert [e.name for e in plan.entries] == ["pinpad_three_rssm_seed0", "pinpad_three_vta_seed0",
                                              "pinpad_three_rssm_seed1", "pinpad_three_vta_seed1",
                                              "pinpad_four_rssm_seed0"]
    # At the list's estimates (rssm 100 env steps/s, vta 50) the VTA run does not fit what the first run leaves.
    plan = _plan(tmp_path, runs=[{"task": "pinpad_three", "variants": ["rssm", "vta"], "seeds": [0], "steps": 1000},
                       {"task": "pinpad_four", "variants": ["rssm"], "seeds": [0], "steps": 100}])
    overhead = campaign.OVERHEAD_S
    chosen, others = campaign.select(plan, tmp_path / "records", tmp_path / "state", 10 + overhead + 1 + overhead)
    assert [e.name for e in chosen] == ["pinpad_three_rssm_seed0", "pinpad_four_rssm_seed0"]
    assert [(e.name, why.split(" (")[0]) for e, why in others] == [("pinpad_three_vta_seed0",
                                                                    "does not fit the budget left")]
    assert [e.name for e in campaign.select(plan, tmp_path / "records", tmp_path / "state", None)[0]] == [
        "pinpad_three_rssm_seed0", "pinpad_three_vta_seed0", "pinpad_four_rssm_seed0"]
    # The first run is taken even when it alone does not fit: it trains until the budget ends and resumes next time.
    chosen, others = campaign.select(plan, tmp_path / "records", tmp_path / "state", 60.0)
    assert [e.name for e in chosen] == ["pinpad_three_rssm_seed0"]
    assert [e.name for e, _ in others] == ["pinpad_three_vta_seed0", "pinpad_four_rssm_seed0"]
    # A variant that updates twice as often per env step is first estimated at half its dynamics' rate.
    plan = _plan(tmp_path, variants={"rssm": "--dynamics rssm", "vta": "--dynamics vta",
                                     "rssm_x2": f"--dynamics rssm --train_ratio {2 * cfg.make('debug').train_ratio}"})
    assert campaign.rates(plan, tmp_path / "records") == {"rssm": 100, "vta": 50, "rssm_x2": 50}
    # Once an RSSM run is recorded (at 10 env steps/s), its rate stands for its variant and, as updates per second, for
    # the other RSSM variants; the VTA's stays the list's.
    entry = plan.entries[0]
    record = entry.record(tmp_path / "records")
    record.mkdir(parents=True)
    cfg.save(plan.config(entry), record / "config.json")
    (record / campaign.FINAL).write_text(json.dumps({"step": 1000, "train_wall_s": 100.0}))
    assert campaign.rates(plan, tmp_path / "records") == {"rssm": 10, "vta": 50, "rssm_x2": 5}


@pytest.mark.parametrize("text, seconds", [("2.5h", 9000), ("150m", 9000), ("90s", 90), ("90", 90)])
def test_budgets_read_as_seconds(text, seconds):
    assert campaign.parse_budget(text) == seconds


@pytest.mark.parametrize("change, message", [
    (dict(runs=[{"task": "pinpad_three", "variants": ["nope"], "seeds": [0], "steps": 10}]),
     "variant 'nope' is not among the variants"),
    (dict(runs=[{"task": "pinpad_three", "variants": ["rssm"], "seeds": [0, 0], "steps": 10}]),
     "pinpad_three_rssm_seed0 is listed before"),
    (dict(runs=[{"task": "pinpad_nine", "variants": ["rssm"], "seeds": [0], "steps": 10}]), "unknown task"),
    (dict(variants={"rssm": "--dynamics rnn", "vta": "--dynamics vta"}), "invalid --dynamics='rnn'"),
    (dict(preset=None, runs=None), "cannot read the list of runs"),
    (dict(env_steps_per_s={"rssm": 100}), "env_steps_per_s has no estimate for vta"),
    (dict(learning=["rssm", "gru"]), "learning names 'gru', which is not among the variants"),
    (dict(eval_policies=["scripted"]), "eval_policies ['scripted'] must name distinct policies of random, agent"),
])
def test_a_bad_list_is_one_clear_error(tmp_path, capsys, change, message):
    (tmp_path / "plan.json").write_text(json.dumps({**PLAN, **change}))
    code, _, err = run_main(campaign.main, ["--plan", tmp_path / "plan.json", "--state", tmp_path / "state",
                                            "--records", tmp_path / "records", "--dry-run"], capsys)
    assert code == 2 and message in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan.json"]


def test_a_bad_budget_is_refused(tmp_path, capsys):
    (tmp_path / "plan.json").write_text(json.dumps(PLAN))
    code, _, err = run_main(campaign.main, ["--plan", tmp_path / "plan.json", "--state", tmp_path / "state",
                                            "--records", tmp_path / "records", "--budget", "soon"], capsys)
    assert code == 2 and "--budget 'soon'" in err
    assert not (tmp_path / "state").exists()


def test_the_committed_list_plans_valid_runs():
    plan = campaign.load_plan(campaign.PLAN)
    assert plan.preset == "pinpad_cpu" and plan.entries[0].name == "pinpad_three_rssm_v3_seed0"
    assert all(plan.config(entry).task == entry.task for entry in plan.entries)
    campaign.check_records(plan, campaign.RECORDS)


def test_the_committed_list_trains_and_judges_the_runs_the_study_reports():
    """`make study` reads the records: each run of the study's CPU setting is in the list with the study's own
    configuration and is judged on the scripted, random and agent episodes the study reads."""
    from experiments import study

    plan = campaign.load_plan(campaign.PLAN)
    args = study.parser().parse_args(["--records", str(campaign.RECORDS)])
    study.check(args)
    entries = {entry.name: entry for entry in plan.entries}
    for run in study.plan(args):
        entry = entries[run.name]
        assert entry.steps == args.steps, run.name
        wanted = cfg.parse(list(run.argv[2:]))
        assert {k: v for k, v in cfg.diff(plan.config(entry), wanted).items() if k != "logdir"} == {}, run.name
    assert set(plan.eval_policies) == set(study.POLICIES[1:])
    assert plan.eval_args == study.eval_args("cpu", "scripted") == ("--policy", "scripted", "--episodes", "16")


def test_a_record_is_committed_alone_and_no_record_is_ignored(tmp_path):
    git = lambda *args: subprocess.run(["git", "-C", str(tmp_path), *args], capture_output=True, text=True,  # noqa
                                       check=True).stdout
    git("init", "-q")
    git("config", "user.email", "campaign@test")
    git("config", "user.name", "campaign test")
    (tmp_path / "other.txt").write_text("staged work that is not the record\n")
    git("add", "other.txt")
    folder = tmp_path / "records" / "pinpad_three" / "rssm" / "seed0"
    folder.mkdir(parents=True)
    (folder / campaign.FINAL).write_text("{}\n")
    assert campaign.commit_record(folder) == "committed"
    assert git("show", "--name-only", "--format=%s", "HEAD").split("\n") == [
        "Campaign record: pinpad_three rssm seed0, as the run wrote it", "",
        "records/pinpad_three/rssm/seed0/final.json", ""]
    assert git("diff", "--cached", "--name-only").split() == ["other.txt"]
    ignored = subprocess.run(["git", "-C", str(REPO), "check-ignore", "-q",
                              str(campaign.RECORDS / "pinpad_three" / "rssm" / "seed0" / campaign.FINAL)])
    assert ignored.returncode == 1, "the records folder is ignored by git: a campaign could not commit its records"
