"""VTA end to end through `python -m experiments.train` on the debug preset."""

import json
import math

import pytest

from dreamer_jax.sweep import DEFAULT_CONDITIONS
from test_train_cli import lines, train

BOUNDARY = ("boundary_ratio", "boundary_ratio_free", "forced_ratio", "boundary_entropy_post",
            "boundary_entropy_prior", "kl_boundary", "kl_abstract", "kl_obs", "mean_segment_length",
            "no_read_share", "all_read_share")
LOSSES = ("loss_rec", "loss_rew", "loss_con", "loss_dyn", "loss_rep", "loss_rate", "loss_actor", "loss_critic",
          "loss_repval")
# One of the prototype's three VTA conditions; vta_force0_t2_rate trains in the study's test (test_study.py), and
# vta_force0_t1 is the default VTA with a longer max_seg_len, which the other VTA runs of the tests cover.
CONDITIONS = {name: list(DEFAULT_CONDITIONS[name]) for name in ("vta_force10_t1",)}


def test_bf16_run_of_hundreds_of_updates_is_finite_and_logs_boundaries(tmp_path):
    logdir = tmp_path / "vta_bf16"
    train("--configs", "debug", "--dynamics", "vta", "--precision", "16", "--steps", "464", "--log_every", "100",
          "--eval_every", "0", "--save_every", "0", "--logdir", str(logdir))
    log = lines(logdir)
    assert log[-1]["step"] == 464 and log[-1]["updates"] == 200
    for line in log[1:]:
        for key in LOSSES + BOUNDARY + ("grad_norm",):
            assert math.isfinite(line[key]), (line["step"], key)
        assert line["skipped_updates"] == 0
        # With force scale 0 only episode starts are forced, and they are READs: READs are the free ones plus those.
        assert 0 < line["boundary_ratio"] <= 1
        assert line["boundary_ratio"] == pytest.approx(line["boundary_ratio_free"] + line["forced_ratio"], abs=1e-6)


@pytest.mark.parametrize("condition", CONDITIONS)
def test_prototype_conditions_train(tmp_path, condition):
    logdir = tmp_path / condition
    train("--configs", "debug", "--steps", "96", "--eval_every", "0",
          "--logdir", str(logdir), *CONDITIONS[condition])
    last = lines(logdir)[-1]
    assert last["updates"] == 16 and last["skipped_updates"] == 0
    assert all(math.isfinite(last[k]) for k in BOUNDARY + LOSSES)
    saved = json.loads((logdir / "config.json").read_text())
    assert saved["dynamics"] == "vta" and saved["vta_max_seg_len"] == int(CONDITIONS[condition][3])


def test_vta_run_resumes(tmp_path):
    logdir = tmp_path / "vta"
    # The flags of test_eval_boundaries' VTA run, so both use one compiled program.
    args = ["--configs", "debug", "--dynamics", "vta", "--vta_max_seg_len", "6", "--eval_every", "0",
            "--logdir", str(logdir)]
    train(*args, "--steps", "96")
    train("--logdir", str(logdir), "--steps", "128")
    log = lines(logdir)
    assert [line["step"] for line in log] == [64, 96, 128] and log[-1]["updates"] == 32
    assert sorted(p.name for p in (logdir / "checkpoints").iterdir()) == ["128", "96"]
