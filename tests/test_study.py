"""The study (experiments/study.py) end to end on its tiny setting: two conditions, one seed, a few steps; every
result it promises, the numbers traced back to the runs' evaluations, and clear errors for bad input."""

import dataclasses
import json
import math
import shutil
import subprocess
import sys

import matplotlib.image
import numpy as np
import pytest

from conftest import REPO
from dreamer_jax import sweep
from dreamer_jax.boundaries import inference, metrics
from experiments import study

# The prototype's rate condition (it trains in test_vta_train.py; here, as in every run of the tiny setting, the agents
# only collect); our recommended one differs from it only in flags, tested in test_vta.py (the batch-mean rate) and
# test_config.py.
CONDITIONS = ("rssm", "vta_force0_t2_rate")
VTA = CONDITIONS[1]


def _study(*args):
    return subprocess.run([sys.executable, "-m", "experiments.study", "--setting", "tiny", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=1200)


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    result = _study("--conditions", *CONDITIONS, "--logroot", root / "runs", "--out", root / "out")
    assert result.returncode == 0, result.stderr[-3000:]
    return root, result


def _run(root, condition):
    return root / "runs" / f"{study.TASK}_{condition}_seed0"


def test_each_run_is_judged_on_scripted_random_and_agent_episodes_against_its_seeds_rssm(done):
    root, _ = done
    vta, rssm = _run(root, VTA), _run(root, "rssm")
    for policy in study.POLICIES:
        path = sweep.eval_result(vta, policy)
        result = json.loads(path.read_text())
        assert result["settings"]["policy"] == policy and result["settings"]["baseline_logdir"] == str(rssm)
        assert set(result["events"]["pad"]["baselines"]) == {"pixel_change", "rssm_surprise"}
        assert result["settings"]["step"] == 128 and result["config"]["vta_max_seg_len"] == 50
        assert sweep.detections_path(path).exists()
    last = json.loads((vta / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["step"] == 128 and last["updates"] == 0  # the tiny setting only collects
    own = json.loads((rssm / "boundary_eval.json").read_text())
    assert own["boundaries_from"] == "rssm_surprise" and own["settings"]["baseline_logdir"] is None
    # The sweep's table gathered the stored results: re-evaluating would have dropped the VTA run's baseline above.
    assert (root / "runs" / "boundary_table.md").exists()


def test_the_report_holds_the_numbers_of_the_runs_evaluations(done):
    """With one seed, each summary is that seed's value, which the run's own evaluation computed from the same
    detections: the report reads the right arrays the right way (the bootstrap is tested with several seeds below)."""
    root, result = done
    data = json.loads((root / "out" / "study.json").read_text())
    assert list(data["summary"]) == list(CONDITIONS) and data["steps"] == 128 and data["seeds"] == [0]
    for policy in study.POLICIES:
        vta = json.loads(sweep.eval_result(_run(root, VTA), policy).read_text())
        entry = data["summary"][VTA][policy]
        own, common = entry["own"], entry["common"]
        near = lambda x: None if x is None else pytest.approx(x, rel=1e-12)  # noqa: E731  (undefined stays None)
        assert own["model"]["lift"]["per_seed"] == [near(vta["events"]["pad"]["all"]["lift_over_event_rate"])]
        assert own["pixel_change"]["f1"]["mean"] == near(
            vta["events"]["pad"]["baselines"]["pixel_change"]["tolerance"]["1"]["f1"])
        assert own["model"]["circular_log10_p"] == [near(vta["events"]["pad"]["all"]["circular_shift_log10_p"])]
        assert own["model"]["boundary_rate"]["mean"] == near(vta["boundary_count"] / vta["scored_steps"])
        assert common["rssm_surprise"]["lift"]["mean"] == near(
            vta["at_pad_count"]["rssm_surprise"]["lift_over_event_rate"])
        split = vta["at_pad_count"]["model"]["progress_vs_distractor"]
        for rate in ("progress_hit_rate", "distractor_hit_rate"):
            if split[rate] is not None:
                assert common["model"][rate]["mean"] == near(split[rate])
        assert entry["auprc"]["model"]["mean"] == near(vta["events"]["pad"]["all"]["auprc"])
    adjusted = inference.holm([1.0 if v["log10_p"] is None else 10 ** v["log10_p"] for v in data["verdicts"]])
    assert [v["p_holm"] for v in data["verdicts"]] == pytest.approx(adjusted.tolist())
    # every condition and policy states its claims: alignment, right over other pads, the lift against each baseline
    assert len(data["verdicts"]) == sum(2 + len(set(study.detectors(data["summary"][c], p)) & set(study.CLAIMED[p]))
                                        for c in CONDITIONS for p in study.POLICIES)
    assert study.detectors(data["summary"][VTA], "agent") == ["model", "pixel_change", "rssm_surprise"]
    assert data["baseline_returns"]["scripted"] > data["baseline_returns"]["random"] >= 0
    assert len(data["invocations"]) == 1 and data["wall_s"] > 0 and data["versions"]["jax"]
    markdown = (root / "out" / "study.md").read_text()
    for heading in ("## The question", "## Setup", "## Headline", "## Each seed", "### Pad events, agent episodes",
                    "### Right next pad against other pads, random episodes", "## Reading", "## Limits"):
        assert heading in markdown, heading
    assert "Reward events" not in markdown and "Student" not in markdown
    assert all(f"| {c} |" in markdown for c in CONDITIONS) and f"**{VTA}**" in markdown
    for name in ("learning_curves.png", "peth.png"):
        assert matplotlib.image.imread(root / "out" / study.FIGURES / name).ndim == 3, name
        assert f"({study.FIGURES}/{name})" in markdown
    assert str(root / "out" / "study.md") in result.stdout


def _detections(rng, skill, episodes=8, steps=80):
    """Synthetic detections: the model's boundaries hit the right next pad with probability `skill`, other pads and
    other steps at the same low rate. Pixel change sees the flash, not which pad is the right one, and the flash is
    big at distractor entries more often (as a full history's shift on scripted pinpad episodes)."""
    shape = (episodes, steps)
    valid = metrics.default_valid(shape)
    pad = (rng.random(shape) < 0.15) & valid
    progress = pad & (rng.random(shape) < 0.4)
    read = valid & ((rng.random(shape) < 0.1) | (progress & (rng.random(shape) < skill)))
    prob = np.where(read, 0.6, 0.1) + 0.05 * rng.random(shape)
    big = np.where(progress, rng.random(shape) < 0.2, rng.random(shape) < 0.7)
    # few values, as pinpad's frame changes; other steps flash big now and then (leaving a pad, a respawn)
    delta = np.where(pad, 1.0 + big, np.where(rng.random(shape) < 0.08, 2.0, 0.1 * rng.integers(0, 3, shape)))
    scores = {"model": prob, "pixel_change": delta, "rssm_surprise": rng.random(shape)}
    count = int(pad.sum())
    return metrics.Detections(
        source="posterior", boundaries_from="read", score_name="read_prob", delta_percentile=90.0, valid=valid,
        forced=np.zeros(shape, bool), delta=delta, read_prob=prob,
        events={"pad": pad, "progress": progress, "distractor": pad & ~progress},
        marks={"model": read, **{name: metrics.threshold_at_count(scores[name], read.sum(1), valid, 0)
                                 for name in ("pixel_change", "rssm_surprise")}},
        scores=scores, at_pad_count={name: metrics.threshold_at_count(x, count, valid, 0)
                                     for name, x in scores.items()})


def test_a_condition_over_several_seeds_gives_per_seed_values_bounded_intervals_and_holm_verdicts():
    rng = np.random.default_rng(0)
    table = {name: {"seeds": [0, 1, 2], "final_return": [0.0, 1.0, 2.0],
                    **{policy: study.condition_numbers([_detections(rng, skill) for _ in range(3)])
                       for policy in study.POLICIES}}
             for name, skill in (("vta_skilled", 0.9), ("vta_blind", 0.0))}
    skilled = table["vta_skilled"]["scripted"]
    lift = skilled["own"]["model"]["lift"]
    assert lift["mean"] == pytest.approx(np.mean(lift["per_seed"]), rel=1e-12)
    for name in ("progress_hit_rate", "distractor_hit_rate"):
        for cell in (skilled["own"]["model"][name], skilled["common"]["pixel_change"][name]):
            assert 0 <= cell["ci95"][0] <= cell["ci95"][1] <= 1, (name, cell)  # percentile: inside [0, 1]
    assert len(skilled["common"]["model"]["circular_log10_p"]) == 3
    # Pixel change prefers the distractors' bigger flash, but matched on the flash nothing is left of it.
    for entry in (table[name][policy]["common"]["pixel_change"] for name in table for policy in study.POLICIES):
        assert entry["distractor_hit_rate"]["mean"] > entry["progress_hit_rate"]["mean"]
        assert entry["progress_log10_p_pooled"] > math.log10(0.05) and abs(entry["progress_excess_pooled"]) < 0.1
    # Over all seeds at once (the seeds' strata convolved): below every seed's alone for a model that knows the pad.
    model = skilled["common"]["model"]
    assert model["progress_log10_p_pooled"] < min(model["progress_log10_p"]) < math.log10(0.05)
    table["vta_blind"]["random"]["common"]["model"]["lift_minus_rssm_surprise"]["p"] = None  # an undefined measure
    table["vta_blind"]["agent"]["common"]["model"]["lift_minus_pixel_change"]["mean"] = None  # no estimate, a p
    table["vta_blind"]["agent"]["common"]["model"]["progress_excess_pooled"] = None  # no entries that flash alike
    found = study.verdicts(table)
    # Two conditions, three policies: alignment, right vs other pads, and the baselines claimed (on agent episodes,
    # pixel change alone: the RSSM surprise, in the table, is no claim there).
    assert len(found) == 2 * (4 + 4 + 3)
    assert not any(v["policy"] == "agent" and v["measure"] == "lift_minus_rssm_surprise" for v in found)
    adjusted = inference.holm([1.0 if v["log10_p"] is None else 10 ** v["log10_p"] for v in found])
    assert [v["p_holm"] for v in found] == pytest.approx(adjusted.tolist())
    reads = {(v["condition"], v["policy"], v["measure"]): v["reads"] for v in found}
    for key in (("vta_blind", "random", "lift_minus_rssm_surprise"), ("vta_blind", "agent", "lift_minus_pixel_change"),
                ("vta_blind", "agent", "progress_over_distractor")):
        assert reads[key].startswith("undefined"), key
    assert all(reads[("vta_skilled", p, "progress_over_distractor")] == "above chance" for p in study.POLICIES)
    assert all(reads[("vta_blind", p, "progress_over_distractor")] == "not told apart from chance"
               for p in study.POLICIES if p != "agent")


def test_the_report_is_rewritten_from_the_runs_alone(done, tmp_path):
    root, _ = done
    result = _study("--report", "--conditions", *CONDITIONS, "--logroot", root / "runs", "--out", tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    again, first = (json.loads((p / "study.json").read_text()) for p in (tmp_path, root / "out"))
    assert again["summary"] == first["summary"] and again["runs"] == first["runs"]


def _as_record(run, record, final_return):
    """A run laid out as the campaign records it: its evaluations without the RSSM surprise, whose checkpoint a record
    does not keep."""
    for name in ("config.json", "metrics.jsonl"):
        record.mkdir(parents=True, exist_ok=True)
        shutil.copy2(run / name, record / name)
    for policy in study.POLICIES:
        source, target = sweep.eval_result(run, policy), sweep.eval_result(record, policy)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
        d = metrics.Detections.load(sweep.detections_path(source))
        drop = lambda group: {k: v for k, v in group.items() if k != "rssm_surprise"}  # noqa: E731
        dataclasses.replace(d, marks=drop(d.marks), scores=drop(d.scores), at_pad_count=drop(d.at_pad_count)).save(
            sweep.detections_path(target))
    (record / sweep.RECORD_FINAL).write_text(json.dumps({"step": 128, "final_eval_return": final_return,
                                                          "train_wall_s": 60.0}))


@pytest.fixture(scope="module")
def records(done, tmp_path_factory):
    root = tmp_path_factory.mktemp("records")
    for condition, final_return in zip(CONDITIONS, (1.5, 2.5)):
        _as_record(_run(done[0], condition), sweep.record_dir(root, study.TASK, condition, 0), final_return)
    return root


def test_the_report_from_records_equals_the_report_from_the_runs(done, records, tmp_path):
    """The campaign keeps no checkpoint: the RSSM surprise baseline comes from the RSSM record's own evaluation of the
    same scripted and random episodes, and marks exactly what the evaluation with the RSSM run beside it marked."""
    result = _study("--records", records, "--conditions", *CONDITIONS, "--steps", 128, "--out", tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    again, first = (json.loads((p / "study.json").read_text()) for p in (tmp_path, done[0] / "out"))
    assert again["verdicts"] == first["verdicts"]  # the same claims, the same p-values, the same readings
    again, first = again["summary"], first["summary"]
    assert again["rssm"] == {**first["rssm"], "final_return": [1.5]}
    for policy in ("scripted", "random"):
        assert again[VTA][policy] == first[VTA][policy], policy
    # The agents' episodes differ per run: no RSSM baseline on them from a record, the rest unchanged.
    assert study.detectors(again[VTA], "agent") == ["model", "pixel_change"]
    for rate in study.RATES:
        assert again[VTA]["agent"][rate]["pixel_change"] == first[VTA]["agent"][rate]["pixel_change"]
        assert again[VTA]["agent"][rate]["model"] == {k: v for k, v in first[VTA]["agent"][rate]["model"].items()
                                                      if k != "lift_minus_rssm_surprise"}
    assert again[VTA]["final_return"] == [2.5]
    markdown = (tmp_path / "study.md").read_text()
    assert f"python -m experiments.study --records {records}" in markdown and "summed over the records: 120 s" in \
        markdown


def test_records_of_other_settings_or_other_episodes_are_refused(records, tmp_path, capsys):
    def report(root, *args):
        code = study.main(["--setting", "tiny", "--records", str(root), "--conditions", *CONDITIONS, "--out",
                           str(tmp_path / "out"), *args])
        return code, capsys.readouterr().err

    code, err = report(records, "--steps", "64")
    assert code == 2 and "steps 128 (the study: 64)" in err and "give --setting, --steps" in err, err
    other = tmp_path / "records"
    shutil.copytree(records, other)
    path = sweep.detections_path(sweep.eval_result(sweep.record_dir(other, study.TASK, "rssm", 0), "random"))
    d = metrics.Detections.load(path)
    dataclasses.replace(d, delta=d.delta + 1).save(path)
    code, err = report(other)
    assert code == 2 and "judged on different random episodes" in err, err
    result = sweep.eval_result(sweep.record_dir(other, study.TASK, VTA, 0), "agent")
    older = json.loads(result.read_text())
    result.write_text(json.dumps({**older, "settings": {**older["settings"], "format": metrics.FORMAT - 1}}))
    code, err = report(other)
    assert code == 2 and f"agent evaluation ({result}) was made otherwise than the study's: format" in err, err
    assert "python -m benchmarks.campaign --complete" in err
    code, err = report(tmp_path / "nowhere")
    assert code == 2 and "--records" in err and "is not a folder" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, message", [
    (["--conditions", VTA], "--conditions must include rssm"),
    (["--seeds", "0", "0"], "--seeds must be distinct"),
    (["--steps", "0"], "--steps 0 must be positive"),
    (["--report"], "has not trained"),
])
def test_bad_input_is_one_clear_error(tmp_path, capsys, args, message):
    code = study.main(["--setting", "tiny", "--logroot", str(tmp_path / "runs"), "--out", str(tmp_path / "out"), *args])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not list(tmp_path.iterdir())


def test_the_setting_chooses_conditions_seeds_and_steps_and_flags_override_them(tmp_path):
    def checked(*argv):
        args = study.parser().parse_args(["--logroot", str(tmp_path / "runs"), "--out", str(tmp_path / "out"), *argv])
        study.check(args)
        return args.conditions, args.seeds, args.steps

    assert checked() == (["rssm", "vta", "vta_force0_t2_rate", "vta_force10_t1", "vta_batch_rate"], (0, 1, 2), 40_000)
    assert checked("--setting", "tiny", "--conditions", "rssm", "--steps", "64") == (["rssm"], (0,), 64)
    assert not list(tmp_path.iterdir())  # checking writes nothing
