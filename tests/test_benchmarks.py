"""The benchmarks: the env rollout steps the real env, the CLI prints its table; bad scale flags are refused; the
side-by-side timing against the official code and the GPU check plan the commands they should."""

import json
import shlex
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pinpad
from benchmarks import env_throughput, official_ratio, scale_throughput
from conftest import run_main
from dreamer_jax import config as cfg

REPO = Path(__file__).resolve().parents[1]


def test_scan_rollout_stores_the_observations_of_env_step():
    env = pinpad.make("pinpad_three", length=4)
    batch, horizon = 3, 6
    rollout, carry = env_throughput.scan_rollout(env, batch, horizon, store=True)
    state0 = jax.tree.map(jnp.copy, carry[0])
    key = jax.random.key(5)
    state, last_obs, trajectory, t = rollout(carry, key)

    def step(state, key):  # the same draws, one env step at a time
        action_key, step_key = jax.random.split(key)
        actions = jax.random.randint(action_key, (batch,), 0, pinpad.NUM_ACTIONS)
        return jax.vmap(env.step)(state, actions, jax.random.split(step_key, batch))

    expected_state, expected = jax.lax.scan(step, state0, jax.random.split(key, horizon))
    assert int(t) == horizon
    for name in expected:
        np.testing.assert_array_equal(trajectory[name], expected[name], err_msg=name)
        np.testing.assert_array_equal(last_obs[name], expected[name][-1], err_msg=name)
    jax.tree.map(np.testing.assert_array_equal, state, expected_state)
    assert trajectory["is_first"][4].all()  # length 4: step 5 is a reset step, so it ran through one


def test_cli_prints_every_row_with_its_ratio():
    out = subprocess.run([sys.executable, "-m", "benchmarks.env_throughput", "--task", "pinpad_three",
                          "--seconds", "0.05", "--batches", "2", "8", "--steps_per_call", "256"],
                         cwd=REPO, capture_output=True, text=True, timeout=600, check=True).stdout
    rows = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith("| ")][1:]
    assert [(name.strip(), int(batch)) for name, batch, _, _ in rows] == [
        ("gymnasium adapter, one env at a time", 1), ("gymnasium vector env (vmap)", 1024),
        ("jit + vmap + scan", 2), ("jit + vmap + scan", 8),
        ("jit + vmap + scan, trajectory stored", 2), ("jit + vmap + scan, trajectory stored", 8)]
    rates = [float(rate.replace(",", "")) for _, _, rate, _ in rows]
    ratios = [float(ratio.strip().rstrip("x").replace(",", "")) for _, _, _, ratio in rows]
    assert all(rate > 0 for rate in rates) and ratios[0] == 1.0
    np.testing.assert_allclose(ratios, np.array(rates) / rates[0], rtol=0.06, atol=0.06)


def test_env_benchmark_refuses_calls_without_steps(capsys):
    with pytest.raises(SystemExit) as exit_info:
        env_throughput.main(["--steps_per_call", "0"])
    assert exit_info.value.code == 2 and "--steps_per_call 0: give a whole number, 1 or more" in capsys.readouterr().err


def test_scale_benchmark_refuses_a_batch_the_devices_cannot_split():
    done = subprocess.run([sys.executable, "-m", "benchmarks.scale_throughput", "--batch_size", "6", "--devices", "4"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert "--batch_size 6 must be divisible by --devices 4" in done.stderr


def test_official_ratio_plans_official_ours_ours_official_per_preset(tmp_path):
    argv = ["--official-tree", str(tmp_path / "tree"), "--official-python", str(tmp_path / "python"),
            "--presets", "size12m", "--updates", "3", "--dry-run"]
    out = subprocess.run([sys.executable, "-m", "benchmarks.official_ratio", *argv], cwd=REPO, capture_output=True,
                         text=True, timeout=120, check=True).stdout.splitlines()
    assert len(out) == 4
    for line in (out[0], out[3]):
        assert line.startswith(f"DV3_JAX_REPO={tmp_path / 'tree'} {tmp_path / 'python'} ")
        assert "bench_jax.py --size size12m --batch_size 16 --batch_length 64 --updates 3 --warmup 1" in line
    ours = "-m benchmarks.train_throughput --presets size12m --batches 16x64 --updates 3 --fused_presets --json"
    assert ours in out[1] and out[1].endswith("--xla_defaults")
    assert ours in out[2] and "--xla_defaults" not in out[2]


def test_official_ratio_refuses_a_missing_official_tree(tmp_path):
    done = subprocess.run([sys.executable, "-m", "benchmarks.official_ratio", "--official-tree", str(tmp_path),
                           "--official-python", sys.executable], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and done.stdout == ""
    assert f"--official-tree: {tmp_path / 'dreamerv3'} does not exist" in done.stderr and "peerbench" in done.stderr


def test_official_ratio_divides_the_mean_official_time_by_ours():
    steps = [dict(preset="size1m", side=side, variant=variant, seconds=s) for side, variant, s in (
        ("official", "first", 5.0), ("ours", "XLA defaults", 4.0), ("ours", "learner options", 2.0),
        ("official", "second", 7.0))]
    [row] = official_ratio.summarise(steps)
    assert row == dict(preset="size1m", official_first_s=5.0, official_second_s=7.0, ours_xla_defaults_s=4.0,
                       ours_s=2.0, ratio=3.0, ratio_xla_defaults=1.5)


def test_gpu_check_dry_run_prints_commands_the_scale_benchmark_accepts():
    out = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--dry-run"], cwd=REPO, capture_output=True, text=True,
                         timeout=60, check=True).stdout.splitlines()
    assert [line.split(": ", 1)[0] for line in out] == ["0", "1", "2", "3", "4"]
    parsed = []
    for line in out:
        words = shlex.split(line.split(": ", 1)[1])
        if words[0] == "env":  # env "XLA_FLAGS=..." python3 -m ...
            assert words[1].startswith("XLA_FLAGS=--xla_gpu_enable_latency_hiding_scheduler=true")
            words = words[2:]
        assert words[1:3] == ["-m", "benchmarks.scale_throughput"]
        parsed.append(scale_throughput.make_parser().parse_args(words[3:]))
    assert all((a.configs, a.precision, a.batch_size, a.train_ratio, a.devices) == (["pinpad", "size12m"], "bf16", 12,
                                                                                   320.0, 1) for a in parsed)
    assert [(a.dynamics, a.seeds, a.scan_unroll, a.envs) for a in parsed] == [
        ("rssm", [1], 1, 1), ("rssm", [1], 5, 1), ("rssm", [1], 1, 1), ("rssm", [1], 1, 4), ("vta", [1, 8], 1, 1)]
    some = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--dry-run", "4", "1"], cwd=REPO, capture_output=True,
                          text=True, timeout=60, check=True).stdout.splitlines()
    assert some == [out[4], out[1]]
    for bad_argument in ("--bogus", "5"):
        bad = subprocess.run(["bash", "benchmarks/gpu_check.sh", bad_argument], cwd=REPO, capture_output=True,
                             text=True, timeout=60)
        assert bad.returncode == 2 and f"unknown argument '{bad_argument}'" in bad.stderr


def test_agent_drawing_writes_each_variants_curve(tmp_path):
    from benchmarks import agent_drawing

    out = tmp_path / "agent_drawing.json"
    assert agent_drawing.main(["--variants", "preset", "preset_latent", "--updates", "3", "--every", "2",
                               "--out", str(out)]) == 0
    data = __import__("json").loads(out.read_text())
    assert list(data["variants"]) == ["preset", "preset_latent"] and data["updates"] == 3
    for name, variant in data["variants"].items():
        assert [point[0] for point in variant["curve"]] == [2, 3], name
        assert all(np.isfinite(loss) and 0 <= tracked <= 1 for _, loss, tracked in variant["curve"])
    assert data["variants"]["preset_latent"]["latent"] == [16, 8, 64] and data["variants"]["preset"]["latent"] is None


def test_agent_drawing_decodes_a_sample_or_the_probabilities_of_the_latent():
    from flax import nnx
    from benchmarks.agent_drawing import Autoencoder, Variant
    from dreamer_jax import distributions as dists

    image = np.asarray(jax.random.randint(jax.random.key(0), (2, 16, 16, 3), 0, 256), np.uint8)
    keys = jax.random.PRNGKey(1), jax.random.PRNGKey(2)
    sampled = Autoencoder(Variant(4, 1e-4, (4, 4, 8)), nnx.Rngs(0))
    assert not np.allclose(sampled(image, keys[0]), sampled(image, keys[1]))  # the latent is drawn anew
    probs = Autoencoder(Variant(4, 1e-4, (4, 4, 8), "probs"), nnx.Rngs(0))
    np.testing.assert_array_equal(probs(image, keys[0]), probs(image, keys[1]))
    assert probs(image, keys[0]).shape == (2, 16, 16, 3)
    # A sharper posterior: the head's logits times logit_scale, then the same 1% unimix.
    sharp = Autoencoder(Variant(4, 1e-4, (4, 4, 8), logit_scale=3.0), nnx.Rngs(0))
    code = sharp.encoder(image)
    raw = sharp.post_out(sharp.post_mlp(code)).reshape(2, 4, 4)
    np.testing.assert_allclose(sharp.logits(code), dists.unimix_logits(3.0 * raw, 0.01), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(probs.logits(code), dists.unimix_logits(raw, 0.01), rtol=1e-6, atol=1e-6)
    # Sharper at the start only: the head's initial weights times head_init.
    init3 = Autoencoder(Variant(4, 1e-4, (4, 4, 8), head_init=3.0), nnx.Rngs(0))
    np.testing.assert_allclose(init3.post_out.kernel[...], 3.0 * probs.post_out.kernel[...], rtol=1e-6)


def test_world_model_drawing_cuts_windows_that_start_an_episode():
    from benchmarks.world_model_drawing import windows

    data = {"image": np.arange(3 * 64).reshape(3, 64), "action": np.arange(3 * 64).reshape(3, 64) + 1000,
            "reward": np.zeros((3, 64)), "is_terminal": np.zeros((3, 64), bool)}
    batch = windows(data, 5, 8, np.random.default_rng(0))
    assert batch["image"].shape == (5, 8) and batch["is_first"].tolist() == [[True] + [False] * 7] * 5
    starts = batch["image"][:, 0]
    np.testing.assert_array_equal(batch["image"], starts[:, None] + np.arange(8))  # contiguous steps of one episode
    assert ((starts % 64) <= 64 - 8).all()
    np.testing.assert_array_equal(batch["action"], batch["image"] + 1000)  # every key from the same rows and steps


def test_world_model_drawing_writes_each_variants_curve(tmp_path):
    from benchmarks import world_model_drawing

    out = tmp_path / "world_model_drawing.json"
    assert world_model_drawing.main(["--preset", "debug", "--variants", "depth16_x3_no_kl", "--updates", "3",
                                     "--every", "2", "--out", str(out)]) == 0
    data = __import__("json").loads(out.read_text())
    assert data["preset"] == "debug" and list(data["variants"]) == ["depth16_x3_no_kl"]
    assert data["variants"]["depth16_x3_no_kl"]["fields"]["rep_scale"] == 0.0
    curve = data["variants"]["depth16_x3_no_kl"]["curve"]
    assert [point[0] for point in curve] == [2, 3]
    assert all(np.isfinite(rec) and rec > 0 and np.isfinite(kl) and 0 <= tracked <= 1 for _, rec, kl, tracked in curve)


def test_cost_profile_composes_an_env_step_from_its_measured_pieces(tmp_path, capsys):
    """One update by part and the pieces of a run, on the debug model: the parts are the update's own pieces (their
    sum near the whole), an env step is each piece times how often a run of that candidate does it, and the ratio is
    to the first. (The second candidate changes only the train ratio: its programs are the first's, compiled once.)"""
    from benchmarks import cost_profile

    out = tmp_path / "profile.json"
    code, stdout, err = run_main(cost_profile.main, ["--base", "debug", "--candidates", "today", "ratio64",
                                                     "--repeats", "1", "--rounds", "1", "--out", out], capsys)
    assert code == 0, err
    data = json.loads(out.read_text())
    parts = data["parts"]
    assert set(parts) == {"replay sample and refresh", "encoder", "posterior scan and KL", "decoder",
                          "reward and continue heads", "imagination, actor and critic", "replay value",
                          "optimiser and slow critic", "whole update"}
    assert all(t["cpu_s"] > 0 and t["wall_s"] > 0 for t in parts.values())
    whole = parts["whole update"]
    assert 0.25 < whole["parts_sum_cpu_s"] / whole["cpu_s"] < 4  # the same work, fused differently
    for name, run in data["runs"].items():
        config = cfg.make("debug", **run["fields"])
        assert run["per_env_step"] == {"acting": 1.0, "update": config.updates_per_env_step,
                                       "evaluation": 1 / config.eval_every, "tracking probe": 1 / config.eval_every,
                                       "checkpoint": 1 / config.save_every}
        total = sum(run["pieces"][k]["cpu_s"] * run["per_env_step"][k] for k in run["pieces"])
        assert run["env_step_total"]["cpu_s"] == pytest.approx(total) and run["env_steps_per_cpu_s"] == 1 / total
    assert data["runs"]["ratio64"]["fields"] == {"train_ratio": 64.0} and data["reference"] == "today"
    assert cfg.make("debug").train_ratio != 64.0  # the candidate's own ratio composes its env step
    assert "ratio64" in stdout and "x today" in stdout


def _drive_run(path: Path, seed: int, lines: list[dict]) -> Path:
    """A run folder as training writes it: config.json (pinpad_three, 100-step episodes) and metrics.jsonl."""
    path.mkdir(parents=True)
    cfg.save(cfg.make("debug", task="pinpad_three", time_limit=100, seed=seed, train_ratio=128.0), path / "config.json")
    (path / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def test_actor_drive_reads_each_seed_before_its_first_reward(tmp_path, capsys):
    """The table reads each run at fixed env steps (the first line within a log interval after it), finds the first
    evaluation at 10x random and the lowest entropy before it, and divides the actor's two gradient terms; runs
    without the newer metrics give None, a path not yet recorded is skipped, and a malformed condition is refused."""
    from benchmarks import actor_drive

    step = lambda s, **m: {"step": s, "env_steps_per_s": 10.0, **m}  # noqa: E731
    learns = [step(s, policy_entropy=1.6 - 0.1 * i, eval_return=[0.0, 1.0, 500.0, 800.0][i], actor_grad_adv=2.0 * i,
                   actor_grad_ent=0.5, imag_reward=0.01, reward_events=0.5 * i)
              for i, s in enumerate((10_000, 15_000, 20_000, 25_000))]
    stuck = [step(10_000, policy_entropy=1.0, eval_return=0.0), step(12_000, policy_entropy=0.5)]
    _drive_run(tmp_path / "a" / "seed0", 0, learns)
    _drive_run(tmp_path / "a" / "seed1", 1, stuck)
    out = tmp_path / "drive"
    code, stdout, err = run_main(actor_drive.main, [f"r128={tmp_path / 'a'}", f"later={tmp_path / 'none'}",
                                                    "--out", str(out)], capsys)
    assert code == 0, err
    assert "does not exist (yet)" in err
    rows = json.loads(out.with_suffix(".json").read_text())["runs"]
    target = actor_drive.target_return("pinpad_three", 100)
    assert 0 < target < 500  # 10x random over 100 steps
    first, second = rows
    assert first["first_target_step"] == 20_000 and first["best_eval_return"] == 800.0
    assert first["min_entropy_before_target"] == pytest.approx(1.5)
    assert first["at"]["25000"]["drive_ratio"] == pytest.approx(12.0)
    assert first["at"]["15000"]["earned_reward"] == pytest.approx(0.01)  # 1.0 over 100 steps
    assert first["at"]["10000"]["rew_pred_event"] is None  # not logged by this run
    assert first["at"]["20000"]["replayed_reward"] == pytest.approx(1.0 / (2 * 8))  # of the debug batch's 2 x 8 steps
    assert second["first_target_step"] is None and second["min_entropy_before_target"] == 0.5
    assert second["at"]["15000"]["policy_entropy"] is None  # the run ended before it
    assert "| r128 | 0 | 20000 (of 25000) |" in stdout and "| 0.00 / 31.25 / 62.50 / 93.75 |" in stdout
    assert out.with_suffix(".png").stat().st_size > 0
    code, _, err = run_main(actor_drive.main, [str(tmp_path / "a"), "--out", str(out)], capsys)
    assert code == 2 and "LABEL=PATH" in err


def test_imagination_audit_counts_what_imagination_pays_against_what_was_earned(tmp_path, capsys):
    from benchmarks import imagination_audit

    real = np.array([[0.0, 10.0, 0.0], [0.0, 0.0, 0.0]])
    opened = np.array([[6.0, 6.0, 0.0], [7.0, 0.0, 0.0]])  # at the earned reward, a step before it, and elsewhere
    imagined = np.array([[1.0, 1.0, 1.0], [0.0, 0.0, 4.0]])  # pays 7 in all, never at least half the reward at once
    out = imagination_audit.summary(real, opened, imagined)
    assert (out["windows"], out["horizon"], out["real_events"], out["openloop_events"]) == (2, 3, 1, 3)
    assert (out["openloop_events_on_real"], out["openloop_events_near_real"], out["imagined_events"]) == (1, 2, 0)
    assert out["real_per_step"] == pytest.approx(10 / 6) and out["openloop_per_step"] == pytest.approx(19 / 6)
    assert out["imagined_per_step"] == pytest.approx(7 / 6)
    code, _, err = run_main(imagination_audit.main, ["no label", "--out", str(tmp_path / "a.json")], capsys)
    assert code == 2 and "LABEL=PATH" in err and not (tmp_path / "a.json").exists()
    code, _, err = run_main(imagination_audit.main, [f"x={tmp_path}", "--out", str(tmp_path / "a.json")], capsys)
    assert code == 2 and "config.json" in err and not (tmp_path / "a.json").exists()


def test_suite_cost_runs_the_suite_of_each_commit_on_a_fresh_cache_and_compares(tmp_path, capsys):
    """Both sides run a test file from a worktree of their commit (its own code, not this checkout's), on make
    test's command; their CPU seconds, counts and the ratio land in the results file, and the worktrees are gone."""
    from benchmarks import suite_cost

    out = tmp_path / "suite_cost.json"
    worktrees = lambda: subprocess.run(["git", "-C", str(suite_cost.REPO), "worktree", "list", "--porcelain"],  # noqa
                                       capture_output=True, text=True).stdout
    before = worktrees()
    code, stdout, err = run_main(suite_cost.main, ["--baseline", "HEAD", "--tests", "tests/test_status.py", "--out",
                                                   out], capsys)
    assert code == 0, err
    data = json.loads(out.read_text())
    sides = data["sides"]
    for side in sides.values():
        assert side["passed"] > 0 and side["failed"] == side["error"] == 0 and side["code_from_its_tree"]
        assert side["failures"] == []
        assert list(side["files"]) == ["tests/test_status.py"] and side["user_s"] > 0
        assert 0 < side["files"]["tests/test_status.py"]["cpu_s"] <= side["user_s"] + side["sys_s"]
    baseline, head = sides["baseline"], sides["head"]
    assert baseline["commit"] == head["commit"] and baseline["passed"] == head["passed"]
    assert data["head_over_baseline"]["user_s"] == sides["head"]["user_s"] / sides["baseline"]["user_s"]
    assert "x the user CPU" in stdout
    assert worktrees() == before  # its worktrees are removed (the suite may itself run in one of suite_cost's)
    # The command measured is make test's.
    recipe = (suite_cost.REPO / "Makefile").read_text().split("\ntest: ")[1].splitlines()[1]
    assert recipe.strip() == "$(BIN)/python -m pytest " + " ".join(suite_cost.PYTEST_ARGS)


def test_suite_cost_refuses_a_baseline_that_is_no_commit(tmp_path, capsys):
    from benchmarks import suite_cost

    code, _, err = run_main(suite_cost.main, ["--baseline", "no-such-ref", "--out", tmp_path / "x.json"], capsys)
    assert code == 2 and "'no-such-ref' is not a commit" in err and not (tmp_path / "x.json").exists()
