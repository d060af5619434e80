"""The study (experiments/study.py) end to end on its tiny setting: two conditions, one seed, a few steps; every
result it promises, the numbers traced back to the runs' evaluations, and clear errors for bad input."""

import json
import math
import subprocess
import sys

import matplotlib.image
import pytest

from conftest import REPO
from experiments import study

# The prototype's rate condition (max_seg_len 50, longer than a training sequence: the carried segment length binds);
# our recommended one differs from it only in flags, tested in test_vta.py (the batch-mean rate) and test_config.py.
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


def test_each_run_is_judged_on_scripted_and_agent_episodes_against_its_seeds_rssm(done):
    root, _ = done
    vta, rssm = _run(root, VTA), _run(root, "rssm")
    for policy, path in (("scripted", vta / "boundary_eval.json"),
                         ("agent", vta / study.AGENT_DIR / "boundary_eval.json")):
        result = json.loads(path.read_text())
        assert result["settings"]["policy"] == policy and result["settings"]["baseline_logdir"] == str(rssm)
        assert set(result["events"]["pad"]["baselines"]) == {"pixel_change", "rssm_surprise"}
        assert result["settings"]["step"] == 128 and result["config"]["vta_max_seg_len"] == 50
    last = json.loads((vta / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["step"] == 128 and last["updates"] == 32 and last["skipped_updates"] == 0
    assert all(math.isfinite(last[k]) for k in ("loss_rec", "loss_rate", "kl_boundary", "boundary_ratio"))
    own = json.loads((rssm / "boundary_eval.json").read_text())
    assert own["boundaries_from"] == "rssm_surprise" and own["settings"]["baseline_logdir"] is None
    # The sweep's table gathered the stored results: re-evaluating would have dropped the VTA run's baseline above.
    assert (root / "runs" / "boundary_table.md").exists()


def test_the_report_holds_the_numbers_of_the_runs_evaluations(done):
    root, result = done
    data = json.loads((root / "out" / "study.json").read_text())
    assert list(data["summary"]) == list(CONDITIONS) and data["steps"] == 128 and data["seeds"] == [0]
    vta = json.loads((_run(root, VTA) / "boundary_eval.json").read_text())
    entry = data["summary"][VTA]
    pad = vta["events"]["pad"]
    assert entry["scripted/pad/model/lift_over_event_rate"]["mean"] == pad["all"]["lift_over_event_rate"]
    assert entry["scripted/pad/pixel change/auprc"]["mean"] == pad["baselines"]["pixel_change"]["auprc"]
    assert entry["scripted_boundary_rate"]["mean"] == vta["boundary_count"] / vta["scored_steps"]
    assert entry["final_return"]["n"] == 1 and entry["final_return"]["ci95"] == [entry["final_return"]["mean"]] * 2
    assert data["baseline_returns"]["scripted"] > data["baseline_returns"]["random"] >= 0
    assert len(data["invocations"]) == 1 and data["wall_s"] > 0 and data["versions"]["jax"]
    markdown = (root / "out" / "study.md").read_text()
    for heading in ("## The question", "## Setup", "## Headline", "## Pad events, agent episodes",
                    "## Reward events, scripted episodes", "## Reading", "## Limits"):
        assert heading in markdown, heading
    assert all(f"| {c} |" in markdown for c in CONDITIONS) and f"**{VTA}**" in markdown
    for name in ("learning_curves.png", "peth.png"):
        assert matplotlib.image.imread(root / "out" / study.FIGURES / name).ndim == 3, name
        assert f"({study.FIGURES}/{name})" in markdown
    assert str(root / "out" / "study.md") in result.stdout


def test_the_report_is_rewritten_from_the_runs_alone(done, tmp_path):
    root, _ = done
    result = _study("--report", "--conditions", *CONDITIONS, "--logroot", root / "runs", "--out", tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    again, first = (json.loads((p / "study.json").read_text()) for p in (tmp_path, root / "out"))
    assert again["summary"] == first["summary"] and again["runs"] == first["runs"]


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

    assert checked() == (["rssm", "vta_force0_t2_rate", "vta_force10_t1", "vta_batch_rate"], (0, 1, 2), 40_000)
    assert checked("--setting", "tiny", "--conditions", "rssm", "--steps", "64") == (["rssm"], (0,), 64)
    assert not list(tmp_path.iterdir())  # checking writes nothing
