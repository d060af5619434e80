"""VTA end to end through `python -m experiments.train` on the debug preset."""

import json
import math

import pytest

from dreamer_jax.sweep import DEFAULT_CONDITIONS
from experiments import train as train_cli
from test_train_cli import lines, train

BOUNDARY = ("boundary_ratio", "boundary_ratio_free", "forced_ratio", "boundary_entropy_post",
            "boundary_entropy_prior", "kl_boundary", "kl_abstract", "kl_obs", "mean_segment_length",
            "no_read_share", "all_read_share")
LOSSES = ("loss_rec", "loss_rew", "loss_con", "loss_dyn", "loss_rep", "loss_rate", "loss_actor", "loss_critic",
          "loss_repval")


def test_bf16_run_of_hundreds_of_updates_is_finite_and_logs_boundaries(tmp_path):
    logdir = tmp_path / "vta_bf16"
    # The prototype's rate condition, one of the study's (max_seg_len 50, longer than a training sequence: the carried
    # segment length binds; the study's tiny setting only collects, so this is where the condition trains).
    train("--configs", "debug", "--task", "pinpad_three", *DEFAULT_CONDITIONS["vta_force0_t2_rate"], "--precision", "16",
          "--steps", "464", "--log_every", "100", "--eval_every", "0", "--save_every", "0", "--logdir", str(logdir))
    log = lines(logdir)
    assert log[-1]["step"] == 464 and log[-1]["updates"] == 200
    for line in log[1:]:
        for key in LOSSES + BOUNDARY + ("grad_norm",):
            assert math.isfinite(line[key]), (line["step"], key)
        assert line["skipped_updates"] == 0
        # With force scale 0 only episode starts are forced, and they are READs: READs are the free ones plus those.
        assert 0 < line["boundary_ratio"] <= 1
        assert line["boundary_ratio"] == pytest.approx(line["boundary_ratio_free"] + line["forced_ratio"], abs=1e-6)


def test_a_prototype_condition_trains_and_resumes(tmp_path):
    """vta_force10_t1, one of the prototype's three VTA conditions (vta_force0_t2_rate trains in the bf16 run above,
    and vta_force0_t1 is the default VTA with a longer max_seg_len): finite losses, no skipped
    update, and a second invocation resumes it from its checkpoint."""
    logdir = tmp_path / "vta_force10_t1"
    condition = DEFAULT_CONDITIONS["vta_force10_t1"]
    # In this process (the bf16 run above is the module's `python -m`): the resume traces and compiles nothing again.
    assert train_cli.main(["--configs", "debug", "--steps", "96", "--eval_every", "0", "--logdir", str(logdir),
                           *condition]) == 0
    assert train_cli.main(["--logdir", str(logdir), "--steps", "128"]) == 0
    log = lines(logdir)
    assert [line["step"] for line in log] == [64, 96, 128] and [line["updates"] for line in log] == [0, 16, 32]
    assert sorted(p.name for p in (logdir / "checkpoints").iterdir()) == ["128", "96"]
    for line in log[1:]:
        assert line["skipped_updates"] == 0 and all(math.isfinite(line[k]) for k in BOUNDARY + LOSSES), line["step"]
    saved = json.loads((logdir / "config.json").read_text())
    assert (saved["dynamics"], saved["vta_max_seg_len"], saved["vta_boundary_force_scale"]) == ("vta", 30, 10.0)
