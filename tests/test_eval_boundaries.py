"""Boundary evaluation end to end: load tiny trained runs, collect, score, draw; the CLI, --logroot, errors."""

import json
import math
import os
import shutil

import jax
import matplotlib.image
import numpy as np
import PIL.Image
import pytest

import pinpad
from conftest import REPO, run_main
from dreamer_jax import config as cfg, run as run_lib
from dreamer_jax.boundaries import analysis, metrics
from dreamer_jax.boundaries.trace import EVENT_TYPES
from experiments import demo, eval_boundaries, play, release
from experiments.envs import make_env

# Small evaluations; the notebook uses the same sizes, so its programs come from the compile cache.
EVAL = ["--episodes", "4", "--length", "100", "--resamples", "99", "--bootstrap", "20", "--policy", "scripted"]
FIGURES = ("boundary_grid.png", "boundary_internal.png", "boundary_fired.png", "boundary_peth.png")
MAX_SEG_LEN = 6  # not the debug preset's 4: evaluation must rebuild the model from the saved configuration
# The models of the learning benchmark's tiny setting with VTA's max_seg_len 6 (test_learning_benchmark.py): they
# share their programs through the compile cache.
TASK = "pinpad_three"
VTA_RUN = f"{TASK}_vta_len6_seed0"


def _train(logdir, *flags):
    config = cfg.parse(["--configs", "debug", "--steps", "128", "--eval_every", "0", "--task", TASK,
                        "--logdir", str(logdir), *flags], tasks=pinpad.TASKS)
    run_lib.train(config, make_env(config), progress=False)
    return logdir


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A log root with a VTA run (non-default max_seg_len) and an RSSM run, named as the sweep names them."""
    root = tmp_path_factory.mktemp("runs")
    _train(root / VTA_RUN, "--dynamics", "vta", "--vta_max_seg_len", str(MAX_SEG_LEN))
    _train(root / f"{TASK}_rssm_seed0", "--dynamics", "rssm")
    return root


@pytest.fixture(scope="module")
def vta_eval(root, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    code = eval_boundaries.main(["--logdir", str(root / VTA_RUN), "--out", str(out), *EVAL])
    assert code == 0
    return out


def test_cli_writes_a_complete_json_and_four_figures(vta_eval):
    result = json.loads((vta_eval / eval_boundaries.RESULT).read_text())
    assert result["dynamics"] == "vta" and result["episodes"] == 4 and result["steps"] == 100
    assert result["settings"]["policy"] == "scripted" and result["settings"]["step"] == 128
    assert result["boundaries"] == result["settings"]["boundaries"] == "mode"
    assert set(result["events"]) == set(EVENT_TYPES)
    split = result["progress_vs_distractor"]
    assert list(split) == ["model", "pixel_change"]
    for block in split.values():  # entries of the episodes with both kinds; every pad entry is one of the two
        assert block["progress_count"] + block["distractor_count"] <= result["events"]["pad"]["event_count"]
        assert all(0 <= block[f"{kind}_hit_rate"] <= 1 for kind in ("progress", "distractor"))
    for event in EVENT_TYPES:
        for part in ("all", "free"):
            scored = result["events"][event][part]
            for name in ("boundary_count", "boundary_rate", "event_rate", "event_at_boundary", "lift_over_event_rate",
                         "perm_p_value", "hypergeom_p", "hypergeom_log10_p", "circular_shift_p",
                         "circular_shift_log10_p", "periodic_baseline",
                         "periodic_best", "auc_read_prob", "auroc", "auprc", "base_rate", "peth"):
                assert name in scored, (event, part, name)
        assert "pixel_change" in result["events"][event]["baselines"]
    # The scripted solver visits pads, so pad events exist; each exact p-value's log form is its logarithm, and the
    # permutation p is a Monte Carlo p-value (1 + exceedances) / (1 + 99 resamples).
    pad = result["events"]["pad"]["all"]
    assert pad["event_rate"] > 0
    for name in ("hypergeom", "circular_shift"):
        assert math.isclose(10 ** pad[f"{name}_log10_p"], pad[f"{name}_p"], rel_tol=1e-9), name
    exceedances = pad["perm_p_value"] * 100 - 1
    assert abs(exceedances - round(exceedances)) < 1e-9 and 0 <= round(exceedances) <= 99
    for name in FIGURES:
        image = matplotlib.image.imread(vta_eval / name)
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100, name


def test_a_stored_result_holds_for_the_same_settings_and_format_only(root, vta_eval, tmp_path):
    logdir, path = root / VTA_RUN, tmp_path / "stored.json"
    args = eval_boundaries.parser().parse_args(["--logdir", str(logdir), *EVAL])
    result = json.loads((vta_eval / eval_boundaries.RESULT).read_text())
    path.write_text(json.dumps(result))
    assert eval_boundaries.stored(logdir, args, path) is None  # its detections are not beside it
    shutil.copy(vta_eval / "boundary_eval.npz", tmp_path / "stored.npz")
    assert eval_boundaries.stored(logdir, args, path) == result
    older = {**result, "settings": {**result["settings"], "format": metrics.FORMAT - 1}}
    path.write_text(json.dumps(older))  # written by code whose metrics have changed since: computed again
    assert eval_boundaries.stored(logdir, args, path) is None


def test_the_saved_detections_score_to_the_result_again(vta_eval):
    """What a study resamples: the detections beside a result give that result exactly."""
    result = json.loads((vta_eval / eval_boundaries.RESULT).read_text())
    detections = metrics.Detections.load(vta_eval / "boundary_eval.npz")
    assert sorted(detections.marks) == ["model", "pixel_change"] and detections.read_prob is not None
    assert int((detections.marks["model"] & detections.valid).sum()) == result["boundary_count"]
    settings = result["settings"]
    again = metrics.score(detections, tuple(settings["tolerance"]), settings["resamples"], settings["bootstrap"],
                          settings["seed"])
    assert again == {name: result[name] for name in again}


def _vta_trace(root, policy, constrain=False, boundaries="mode"):
    """(run, episodes, trace) of the tiny VTA run on four 100-step episodes."""
    logdir = root / VTA_RUN
    env = make_env(analysis.load_config(logdir), 100)
    run = analysis.load_run(logdir, env)
    data = analysis.collect(run, env, 4, jax.random.PRNGKey(0), policy)
    return run, data, analysis.trace(run, data, jax.random.PRNGKey(1), constrain=constrain,
                                        boundaries=boundaries)


def test_the_saved_configuration_rebuilds_the_model(root):
    # Sampled boundaries: the tiny model's posterior mode is COPY throughout, which would never reach the
    # segment-count limit; sampled READs reach both limits.
    run, _, trace = _vta_trace(root, "random", constrain=True, boundaries="sample")
    config = run.config
    assert config.vta_max_seg_len == MAX_SEG_LEN and run.step == 128
    # With constraints, the prior is forced at exactly the trained limits: READ after MAX_SEG_LEN steps in a
    # segment, COPY after max_seg_num segments (READ wins), and at every episode start.
    force_read = trace.seg_len[:, :-1] >= MAX_SEG_LEN
    force_copy = (trace.seg_num[:, :-1] >= config.vta_max_seg_num) & ~force_read
    clip = config.vta_boundary_logit_clip
    sigmoid = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    np.testing.assert_allclose(trace.read_prob_prior[:, 1:][force_read], sigmoid(clip), rtol=1e-6)
    np.testing.assert_allclose(trace.read_prob_prior[:, 1:][force_copy], sigmoid(-clip), rtol=1e-5)
    free = trace.read_prob_prior[:, 1:][~(force_read | force_copy)]
    assert force_read.any() and force_copy.any()
    assert np.all((free > sigmoid(-clip + 1e-3)) & (free < sigmoid(clip - 1e-3)))
    # The run trained with force scale 0: the posterior was free, so only episode starts are forced boundaries.
    assert config.vta_boundary_force_scale == 0
    assert trace.forced[:, 0].all() and trace.read[:, 0].all() and not trace.forced[:, 1:].any()


def test_trace_matches_the_episodes(root):
    run, data, trace = _vta_trace(root, "agent")
    assert trace.frames.shape == (4, 100, run.config.size, run.config.size, 3) and trace.frames.dtype == np.uint8
    assert set(trace.events) == {"pad", "progress", "distractor", "reward", "countdown_pad", "respawn", "pad_visual"}
    np.testing.assert_array_equal(trace.events["progress"] | trace.events["distractor"], trace.events["pad"])
    np.testing.assert_array_equal(trace.frames[:, 0], data["image"][:, 0])
    assert not trace.forced[:, 1:].any()  # no constraints unless asked for
    assert ((trace.read_prob > 0) & (trace.read_prob < 1)).all()
    assert np.isfinite(trace.kl_obs).all() and (trace.kl_abstract[~trace.read] == 0).all()
    again = analysis.trace(run, data, jax.random.PRNGKey(1))
    np.testing.assert_array_equal(again.read, trace.read)
    # Judged by default: the deterministic boundary, READ where q > 0.5 (the latents are still sampled).
    np.testing.assert_array_equal(trace.read[:, 1:], trace.read_prob[:, 1:] > 0.5)
    sampled = analysis.trace(run, data, jax.random.PRNGKey(1), boundaries="sample")
    assert not np.array_equal(sampled.read[:, 1:], sampled.read_prob[:, 1:] > 0.5)


def test_an_rssm_run_is_scored_by_its_surprise_and_is_a_baseline_for_vta(root, tmp_path):
    rssm = root / f"{TASK}_rssm_seed0"
    assert eval_boundaries.main(["--logdir", str(rssm), "--out", str(tmp_path / "rssm"), *EVAL]) == 0
    result = json.loads((tmp_path / "rssm" / eval_boundaries.RESULT).read_text())
    assert result["dynamics"] == "rssm" and result["boundaries_from"] == "rssm_surprise"
    vta = root / VTA_RUN
    assert eval_boundaries.main(["--logdir", str(vta), "--out", str(tmp_path / "vta"), "--baseline-logdir", str(rssm),
                                 *EVAL]) == 0
    result = json.loads((tmp_path / "vta" / eval_boundaries.RESULT).read_text())
    baseline = result["events"]["pad"]["baselines"]["rssm_surprise"]
    assert baseline["boundary_count"] == result["events"]["pad"]["all"]["boundary_count"]
    # A result with a baseline holds for a gathering without one (a sweep's --eval-baseline), not for another baseline.
    stored = lambda *flags: eval_boundaries.stored(vta, eval_boundaries.parser().parse_args(  # noqa: E731
        ["--logdir", str(vta), *EVAL, *flags]), tmp_path / "vta" / eval_boundaries.RESULT)
    assert stored() == result and stored("--baseline-logdir", str(rssm)) == result
    assert stored("--baseline-logdir", str(tmp_path)) is None and stored("--episodes", "5") is None


def test_logroot_gathers_a_table_and_lists_runs_it_skipped(root, tmp_path, capsys):
    gathered = tmp_path / "root"
    shutil.copytree(root, gathered)
    broken = gathered / f"{TASK}_vta_broken_seed1"
    broken.mkdir()
    shutil.copy(root / VTA_RUN / "config.json", broken / "config.json")
    assert eval_boundaries.main(["--logroot", str(gathered), *EVAL]) == 0
    rows = (gathered / "boundary_table.csv").read_text().splitlines()
    assert len(rows) == 3 and rows[0].startswith("run,")
    assert any(f"{TASK}_rssm_seed0" in row for row in rows) and any(VTA_RUN in row for row in rows)
    markdown = (gathered / "boundary_table.md").read_text()
    assert f"{TASK}_vta_broken_seed1" in markdown and "no checkpoint" in markdown
    for run in (f"{TASK}_rssm_seed0", VTA_RUN):
        assert (gathered / run / eval_boundaries.RESULT).exists()
    # A second gathering reuses the stored results (same settings, same checkpoint).
    stamp = (gathered / f"{TASK}_rssm_seed0" / eval_boundaries.RESULT).stat().st_mtime_ns
    assert eval_boundaries.main(["--logroot", str(gathered), *EVAL]) == 0
    assert (gathered / f"{TASK}_rssm_seed0" / eval_boundaries.RESULT).stat().st_mtime_ns == stamp


@pytest.mark.parametrize("case", ["no_run", "no_checkpoint", "damaged_checkpoint", "not_a_folder"])
def test_bad_run_directories_are_one_clear_error_and_nothing_is_written(root, tmp_path, capsys, case):
    logdir = tmp_path / "run"
    if case == "not_a_folder":
        logdir = tmp_path / "file"
        logdir.write_text("")
    elif case == "no_run":
        logdir.mkdir()
    else:
        shutil.copytree(root / f"{TASK}_rssm_seed0", logdir)
        if case == "no_checkpoint":
            shutil.rmtree(logdir / "checkpoints")
        else:
            for path in (logdir / "checkpoints").rglob("*"):
                if path.is_file() and path.stat().st_size > 100:
                    path.write_bytes(b"\0" * 16)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    code, _, err = run_main(eval_boundaries.main, ["--logdir", logdir, *EVAL], capsys)
    message = {"no_run": "no config.json", "no_checkpoint": "no checkpoint", "damaged_checkpoint": "cannot be restored",
               "not_a_folder": "not a directory"}[case]
    assert code == 2 and message in err and err.count("\n") == 1, err[-2000:]
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


@pytest.mark.parametrize("flags, message", [(["--episodes", "0"], "--episodes"),
                                            (["--delta_percentile", "100"], "--delta_percentile"),
                                            (["--source", "prior"], "RSSM run")])
def test_bad_values_are_refused(root, flags, message, capsys):
    assert eval_boundaries.main(["--logdir", str(root / f"{TASK}_rssm_seed0"), *flags]) == 2
    assert message in capsys.readouterr().err


def test_metrics_of_a_trace_are_deterministic(root):
    _, _, trace = _vta_trace(root, "random")
    first = metrics.evaluate(trace, resamples=49, bootstrap=10, seed=3)
    assert first == metrics.evaluate(trace, resamples=49, bootstrap=10, seed=3)


def test_the_notebook_runs_on_a_tiny_run(root, tmp_path):
    nbclient = pytest.importorskip("nbclient")
    import nbformat

    notebook = nbformat.read(REPO / "examples" / "boundaries.ipynb", as_version=4)
    env = {"DREAMER_JAX_RUN": str(root / VTA_RUN)}
    os.environ.update(env)
    try:
        nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                                resources={"metadata": {"path": str(tmp_path)}}).execute()
    finally:
        os.environ.pop("DREAMER_JAX_RUN")
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 4


def test_a_release_holds_the_parameters_alone_and_plays(root, vta_eval, tmp_path, capsys):
    source = root / VTA_RUN
    out = tmp_path / "released" / "tiny_vta"
    assert release.main(["--logdir", str(source), "--out", str(out), "--trained_by", "a test"]) == 0
    provenance = json.loads((out / "provenance.json").read_text())
    assert (provenance["trained_by"], provenance["env_steps"], provenance["task"]) == ("a test", 128, TASK)
    assert provenance["bytes"] == sum(f.stat().st_size for f in out.rglob("*") if f.name != "provenance.json"
                                      and f.is_file())
    assert provenance["bytes"] < (sum(f.stat().st_size for f in source.rglob("*") if f.is_file())) / 2  # no replay
    env = make_env(analysis.load_config(out))
    released, trained = analysis.load_run(out, env), analysis.load_run(source, env)
    assert released.step == trained.step == 128 and released.config == trained.config
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(released.params), jax.tree.leaves(trained.params),
                                                    strict=True))
    # A checkpoint the run does not have is refused, and nothing is written.
    assert release.main(["--logdir", str(source), "--out", str(tmp_path / "other"), "--trained_by", "x",
                         "--step", "64"]) == 2
    assert "has no checkpoint at step 64; it has [128]" in capsys.readouterr().err
    assert not (tmp_path / "other").exists()
    # A second release into the same folder is refused and changes nothing.
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    assert release.main(["--logdir", str(source), "--out", str(out), "--trained_by", "again"]) == 2
    assert "exists" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before

    gif = tmp_path / "play.gif"
    assert play.main(["--logdir", str(out), "--out", str(gif), "--frames", "7", "--fps", "5", "--dpi", "50"]) == 0
    with PIL.Image.open(gif) as image:
        assert image.n_frames == 7 and image.size == (160, 200)  # 3.2 x 4 inches at 50 dpi
    played = json.loads(gif.with_suffix(".json").read_text())
    assert (played["step"], played["frames"], played["episode_length"]) == (128, 7, env.length)
    assert played["return"] >= 0 and all(0 <= t < env.length for t in played["reads"])
    assert played["reads"][0] == 0  # an episode starts with a READ
    judged = json.loads((vta_eval / eval_boundaries.RESULT).read_text())
    lines = demo.summary(played, judged, 128)
    assert len(lines) == 3 and lines[0].startswith(f"trained: a small VTA world model and agent on {TASK} for 128")
    assert f"return {played['return']:g} in one {env.length}-step episode" in lines[1]
    assert f"{judged['boundary_count']} READs in {judged['scored_steps']} scripted steps" in lines[2]
    assert demo.summary(None, judged, 128)[1].startswith(f"released agent: none in {demo.RELEASED}")


def test_the_released_agent_loads_and_plays_through_the_demos_code(tmp_path):
    """The agent shipped in released/ (what `make demo` plays): its provenance matches its checkpoint and config,
    and a short episode of it becomes an animation with one frame per step."""
    folder = REPO / demo.RELEASED
    provenance = json.loads((folder / "provenance.json").read_text())
    env, run = play.load(folder)
    assert (run.step, run.config.task, run.config.dynamics) == (provenance["env_steps"], "pinpad_three", "vta")
    assert provenance["bytes"] == release.folder_bytes(folder) - (folder / "provenance.json").stat().st_size
    assert provenance["return"] > 10 * provenance["random_return"]  # it learned: the target of benchmarks.learning
    short = make_env(run.config, length=24)
    episode = play.play(run, short, jax.random.PRNGKey(0))
    assert episode["frames"].shape == (24, env.size, env.size, 3) and episode["read"][0]
    gif = tmp_path / "released.gif"
    play.animate(episode, gif, 24, 10, "released")
    with PIL.Image.open(gif) as image:
        assert image.n_frames == 24


@pytest.mark.parametrize("flags, message", [(["--frames", "0"], "--frames"), (["--out", "x.png"], ".gif or .mp4"),
                                            (["--dpi", "5"], "--dpi 5 must be at least 10")])
def test_play_refuses_bad_values(root, flags, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        play.main(["--logdir", str(root / VTA_RUN), *flags])
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_play_and_release_name_a_missing_run(tmp_path, capsys):
    assert play.main(["--logdir", str(tmp_path / "none")]) == 2
    assert "not a directory" in capsys.readouterr().err
    assert release.main(["--logdir", str(tmp_path / "none"), "--out", str(tmp_path / "out"), "--trained_by", "x"]) == 2
    assert "not a directory" in capsys.readouterr().err and not (tmp_path / "out").exists()
