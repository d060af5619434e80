"""Every result the README quotes, traced to the results file that wrote it: one table, README text -> the values in a
file under docs/results/, as the README rounds them. A figure edited by hand, or a results file replaced without the
README, fails here."""

import json
import re

import pytest

from conftest import REPO
from dreamer_jax.curves import read_metrics

RESULTS = REPO / "docs" / "results"
README = (REPO / "README.md").read_text()


def _pad(d, source, *keys):
    """A value of an evaluation's pad-event block: the model's (`all`) or a baseline's."""
    block = d["events"]["pad"]["all"] if source == "model" else d["events"]["pad"]["baselines"][source]
    for key in keys:
        block = block[key]
    return block


def _interval(d, source, *keys):
    """(value, low, high) of a metric with its bootstrap interval."""
    return (_pad(d, source, *keys), *_pad(d, source, *keys[:-1], f"{keys[-1]}_ci"))


def _drawn(d, *variants):
    """Share of held-out frames that draw the agent at the end of each variant's training."""
    return tuple(d["variants"][v]["curve"][-1][2] for v in variants)


def _drawn_at(d, variant, update):
    """Share of held-out frames that draw the agent after `update` updates of one variant's training."""
    return next(share for step, _, share in d["variants"][variant]["curve"] if step == update)


def _at_steps(run, key, steps):
    """One metric of a committed run's metrics.jsonl (docs/results/RUN/) at each of `steps` (env steps)."""
    rows = {row["step"]: row for row in read_metrics(RESULTS / run)}
    return tuple(rows[step][key] for step in steps)


def _world_drawn(d, *variants):
    """Share of held-out frames whose posterior reconstruction draws the agent at the end of each variant's training."""
    return tuple(d["variants"][v]["curve"][-1][3] for v in variants)


def _official(row):
    """The official DreamerV3's seconds per update: the mean of its two timings."""
    return (row["official_first_s"] + row["official_second_s"]) / 2


SPLIT = ("progress", "distractor")
RUN_STEPS = (10_000, 15_000, 20_000, 25_000, 30_000, 40_000)  # the README's columns of the pinpad_cpu run
# (text in the README, results file, its values, how the README writes them)
FIGURES = [
    # The learning benchmark (benchmarks.learning, 2026-11-28).
    ("| random policy | 4.2 |", "learning.json", lambda d: d["random_return"], "| {:.1f} |"),
    ("| scripted solver | 278.8 |", "learning.json", lambda d: d["scripted_return"], "| {:.1f} |"),
    ("| RSSM, seeds 0, 1, 2 at 38.5k env steps (16 fresh episodes each) | 3.1, 145.0, 172.5 |", "learning.json",
     lambda d: tuple(r["final_eval_return"] for r in d["runs"] if r["dynamics"] == "rssm"), "{:.1f}, {:.1f}, {:.1f}"),
    ("| VTA, seeds 0, 1, 2 at 40k env steps (16 fresh episodes each) | 163.1, 210.0, 135.6 |", "learning.json",
     lambda d: tuple(r["final_eval_return"] for r in d["runs"] if r["dynamics"] == "vta"), "{:.1f}, {:.1f}, {:.1f}"),
    ("the target of 10x the random policy (42.2)", "learning.json", lambda d: d["target_return"], "({:.1f})"),
    ("VTA mean is 169.6 (95% interval over seeds 76.2 to 263.0)", "learning.json",
     lambda d: (d["summary"]["vta"]["final_mean"], *d["summary"]["vta"]["final_ci95"]),
     "{:.1f} (95% interval over seeds {:.1f} to {:.1f})"),
    ("the RSSM mean 106.9 (-118.9 to 332.7)", "learning.json",
     lambda d: (d["summary"]["rssm"]["final_mean"], *d["summary"]["rssm"]["final_ci95"]), "{:.1f} ({:.1f} to {:.1f})"),
    # The autoencoder test of agent drawing (benchmarks.agent_drawing).
    ("| 8, 3e-4 | 13.7% | 3.9% | 0% (32x16 latents: 0%) |", "agent_drawing.json",
     lambda d: _drawn(d, "depth8_lr3e-4", "depth8_lr3e-4_latent_probs", "depth8_lr3e-4_latent",
                      "depth8_lr3e-4_latent32x16"), "| {:.1%} | {:.1%} | {:.0%} (32x16 latents: {:.0%}) |"),
    ("| 16, 3e-4 | 92.2% | 88.7% | 0% |", "agent_drawing.json",
     lambda d: _drawn(d, "depth16_lr3e-4", "depth16_lr3e-4_latent_probs", "depth16_lr3e-4_latent"),
     "| {:.1%} | {:.1%} | {:.0%} |"),
    # The sampled latent made sharper (benchmarks.agent_drawing, 3000 updates).
    ("carries the agent in 0% of held-out frames as it is, 82.0% with the head's", "agent_drawing_sharp.json",
     lambda d: _drawn(d, "depth16_lr3e-4_latent", "depth16_lr3e-4_latent_x3"),
     "carries the agent in {:.0%} of held-out frames as it is, {:.1%} with the head's"),
    ("33.6% already at update 2000) and 69.5%", "agent_drawing_sharp.json",
     lambda d: (_drawn_at(d, "depth16_lr3e-4_latent_x3", 2000), *_drawn(d, "depth16_lr3e-4_latent_init3")),
     "{:.1%} already at update 2000) and {:.1%}"),
    ("at depth 4 the scaled latent reaches 2.3%", "agent_drawing_sharp.json",
     lambda d: _drawn(d, "depth4_lr3e-4_latent_x3"), "at depth 4 the scaled latent reaches {:.1%}"),
    # The whole world model on random-policy sequences (benchmarks.world_model_drawing, 2000 updates).
    ("The agent is drawn in 0.2%\nof held-out frames as it is, 86.5% without the KL terms",
     "world_model_drawing_kl.json",
     lambda d: _world_drawn(d, "depth16_x3", "depth16_x3_no_kl"),
     "The agent is drawn in {:.1%}\nof held-out frames as it is, {:.1%} without the KL terms"),
    ("and 90.4% with the", "world_model_drawing_rec16.json", lambda d: _world_drawn(d, "depth16_x3_rec16"),
     "and {:.1%} with the"),
    ("44.5% already at update 1500", "world_model_drawing_rec16.json",
     lambda d: next(t for u, _, _, t in d["variants"]["depth16_x3_rec16"]["curve"] if u == 1500),
     "{:.1%} already at update 1500"),
    ("alone (logits as they are) the agent is drawn in 27.5%", "world_model_drawing_no_x3.json",
     lambda d: _world_drawn(d, "depth16_rec16"), "alone (logits as they are) the agent is drawn in {:.1%}"),
    # One RSSM seed at the pinpad_cpu preset (python -m experiments.train, 2026-12-02): its metrics.jsonl and open loop.
    ("| eval return (8 episodes) | 1.2 | 0.0 | 0.0 | 143.8 | 243.8 | 265.0 |", "pinpad_cpu_rssm_seed0/metrics.jsonl",
     lambda _: _at_steps("pinpad_cpu_rssm_seed0", "eval_return", RUN_STEPS), "|" + " {:.1f} |" * 6),
    ("| agent tracked, observed frames (scripted probe) | 17.5% | 40.0% | 27.5% | 65.0% | 70.0% | 82.5% |",
     "pinpad_cpu_rssm_seed0/metrics.jsonl", lambda _: _at_steps("pinpad_cpu_rssm_seed0", "tracking_posterior", RUN_STEPS),
     "|" + " {:.1%} |" * 6),
    ("| agent tracked, imagined step 15 | 0.0% | 0.0% | 0.0% | 0.0% | 37.5% | 75.0% |",
     "pinpad_cpu_rssm_seed0/metrics.jsonl", lambda _: _at_steps("pinpad_cpu_rssm_seed0", "tracking_imagined_15", RUN_STEPS),
     "|" + " {:.1%} |" * 6),
    ("on the same schedule, 65.0% of observed frames at 25k, but had not earned reward yet (eval return 0.0)",
     "pinpad_cpu_rssm_seed1/metrics.jsonl",
     lambda _: _at_steps("pinpad_cpu_rssm_seed1", "tracking_posterior", (25_000,))
     + _at_steps("pinpad_cpu_rssm_seed1", "eval_return", (25_000,)),
     "{:.1%} of observed frames at 25k, but had not earned reward yet (eval return {:.1f})"),
    ("tracked in 91% of observed frames of 16 episodes, 81% at imagined step 15, 0% at 45",
     "pinpad_cpu_rssm_seed0/openloop.json",
     lambda d: (d["tracking"]["posterior"], *(d["tracking"]["imagined"][k] for k in ("15", "45"))),
     "tracked in {:.0%} of observed frames of 16 episodes, {:.0%} at imagined step 15, {:.0%} at 45"),
    # The demo's judgement of its short run's boundaries (make demo, 2026-12-01).
    ("| boundaries (of them forced), of 9980 scored steps | 1203 (0) | 1203 |", "demo_boundary_eval.json",
     lambda d: (d["scored_steps"], d["boundary_count"], d["forced_count"], _pad(d, "pixel_change", "boundary_count")),
     "of {} scored steps | {} ({}) | {:.0f} |"),
    ("| lift over the pad-event rate, stratified by episode | 8.27 [7.95, 8.54] | 7.74 [7.54, 7.90] |",
     "demo_boundary_eval.json",
     lambda d: (*_interval(d, "model", "lift_over_event_rate"), *_interval(d, "pixel_change", "lift_over_event_rate")),
     "| {:.2f} [{:.2f}, {:.2f}] | {:.2f} [{:.2f}, {:.2f}] |"),
    ("| exact circular-shift p (its floor here: (1/499)^20) | 10^-54.0 | 10^-54.0 |", "demo_boundary_eval.json",
     lambda d: tuple(_pad(d, s, "circular_shift_log10_p") for s in ("model", "pixel_change")),
     "| 10^{:.1f} | 10^{:.1f} |"),
    ("| exact hypergeometric p, stratified by episode (steps taken as exchangeable) | 10^-1276.2 | 10^-1049.3 |",
     "demo_boundary_eval.json",
     lambda d: tuple(_pad(d, s, "hypergeom_log10_p") for s in ("model", "pixel_change")), "| 10^{:.1f} | 10^{:.1f} |"),
    ("| F1, tolerance 1 step | 0.938 [0.924, 0.949] | 0.878 [0.863, 0.891] |", "demo_boundary_eval.json",
     lambda d: (*_interval(d, "model", "tolerance", "1", "f1"), *_interval(d, "pixel_change", "tolerance", "1", "f1")),
     "| {:.3f} [{:.3f}, {:.3f}] | {:.3f} [{:.3f}, {:.3f}] |"),
    ("| pad entries with a boundary: progress (781) / distractor (281) | 1.00 / 1.00 | 0.92 / 0.99 |",
     "demo_boundary_eval.json",
     lambda d: (*(d["progress_vs_distractor"]["model"][f"{k}_count"] for k in SPLIT),
                *(d["progress_vs_distractor"][s][f"{k}_hit_rate"] for s in ("model", "pixel_change") for k in SPLIT)),
     "progress ({}) / distractor ({}) | {:.2f} / {:.2f} | {:.2f} / {:.2f} |"),
    # The released agent's episode (experiments.play; its animation is docs/results/released_play.gif).
    ("return 150 in one 1000-step episode, against random 3.8 and the scripted solver 283.1", "released_play.json",
     lambda d: (d["return"], d["episode_length"], d["random_return"], d["scripted_return"]),
     "return {:g} in one {}-step episode, against random {:.1f} and the scripted solver {:.1f}"),
    # Speed on the CPU: the env (benchmarks.env_throughput) and VTA against RSSM (benchmarks.dynamics_cost).
    ("- Pinpad: 264,582 env steps/s with `jit + vmap + scan` at batch 1024 on a 2-core CPU, 178x the",
     "env_throughput.json", lambda d: next((r["env_steps_per_s"], r["ratio"]) for r in d["rows"]
                                          if r["method"] == "jit + vmap + scan" and r["batch"] == 1024),
     "{:,.0f} env steps/s with `jit + vmap + scan` at batch 1024 on a 2-core CPU, {:.0f}x"),
    ("- A VTA update costs 1.43x (debug) and 1.36x (size1m) an RSSM update", "dynamics_cost.json",
     lambda d: tuple(r["ratio"] for r in d["rows"]), "{:.2f}x (debug) and {:.2f}x (size1m)"),
    # The GPU check on one H200 (benchmarks/gpu_check.sh writes a table).
    ("makes 60.1 env steps/s, 84.4 with `--scan_unroll 5`", "gpu/gpu_check.md",
     lambda text: tuple(float(re.search(rf"\| {row} \| 1 +\| ([\d.]+)", text).group(1))
                        for row in ("rssm", "rssm, scan unroll 5")), "{:.1f} env steps/s, {:.1f} with"),
    # The cost profile (benchmarks.cost_profile, 2026-12-07): CPU s per env step at pinpad_cpu and pinpad_cpu_v2.
    ("costs 0.087 CPU s per env step on 2 cores, 3.74x fewer than at", "cost_profile.json",
     lambda d: (d["runs"]["enc_d8_k3_ratio64"]["env_step_total"]["cpu_s"], _profile_row(d, "enc_d8_k3_ratio64")[3]),
     "costs {:.3f} CPU s per env step on 2 cores, {:.2f}x fewer"),
    ("(`pinpad_cpu_v2`, 0.325)", "cost_profile.json", lambda d: d["runs"]["today"]["env_step_total"]["cpu_s"],
     "(`pinpad_cpu_v2`, {:.3f})"),
    # The official DreamerV3 beside ours (benchmarks.official_ratio, 2026-11-28): seconds per update.
    ("2.27 s against the official's 5.35 s at", "official_ratio.json",
     lambda d: (d["rows"][0]["ours_s"], _official(d["rows"][0])), "{:.2f} s against the official's {:.2f} s"),
    ("size1m (2.36x), 10.2 s against 20.0 s at size12m (1.96x)", "official_ratio.json",
     lambda d: (d["rows"][0]["ratio"], d["rows"][1]["ours_s"], _official(d["rows"][1]), d["rows"][1]["ratio"]),
     "size1m ({:.2f}x), {:.1f} s against {:.1f} s at size12m ({:.2f}x)"),
]


def _profile_row(d, name):
    """A candidate's row of the cost profile: CPU s per update and per env step, env steps per CPU s, the ratio."""
    run, reference = d["runs"][name], d["runs"][d["reference"]]
    return (run["pieces"]["update"]["cpu_s"], run["env_step_total"]["cpu_s"], run["env_steps_per_cpu_s"],
            run["env_steps_per_cpu_s"] / reference["env_steps_per_cpu_s"])


def _part(d, name):
    """CPU and wall seconds of one part of the profiled update, and its share of the whole update's CPU seconds."""
    part = d["parts"][name]
    return part["cpu_s"], part["wall_s"], 100 * part["cpu_s"] / d["parts"]["whole update"]["cpu_s"]


PILOT = "runs/pinpad_three/rssm/seed0"  # the first campaign record at pinpad_cpu
PROFILE_ROW = " | {:.3f} | {:.3f} | {:.2f} | {:.2f}x |"
PART_ROW = " | {:.3f} | {:.3f} | {:.0f}% |"
DRAWN_ROW = "| {:.0f}% | {:.1f}% | {:.1f}% |"
# Pages under docs/ and their figures, as FIGURES: (text on the page, results file, its values, how the page writes
# them).
PAGES = {"docs/speed.md": [
    ("| `today` | (none) | 1.284 | 0.325 | 3.08 | 1.00x |", "cost_profile.json", lambda d: _profile_row(d, "today"),
     PROFILE_ROW),
    ("| `enc_k3` | `--enc_kernel 3` | 0.860 | 0.218 | 4.58 | 1.49x |", "cost_profile.json",
     lambda d: _profile_row(d, "enc_k3"), PROFILE_ROW),
    ("| `enc_d8_k3` | `--enc_depth 8 --enc_kernel 3` | 0.731 | 0.186 | 5.37 | 1.75x |", "cost_profile.json",
     lambda d: _profile_row(d, "enc_d8_k3"), PROFILE_ROW),
    ("| `depth8_enc_k3` | `--depth 8 --enc_kernel 3` (the decoder at 8 too) | 0.503 | 0.129 | 7.77 | 2.53x |",
     "cost_profile.json", lambda d: _profile_row(d, "depth8_enc_k3"), PROFILE_ROW),
    ("| `bf16` | `--precision bf16` | 1.411 | 0.358 | 2.79 | 0.91x |", "cost_profile.json",
     lambda d: _profile_row(d, "bf16"), PROFILE_ROW),
    ("| `ratio64` | `--train_ratio 64` | 1.035 | 0.134 | 7.49 | 2.43x |", "cost_profile.json",
     lambda d: _profile_row(d, "ratio64"), PROFILE_ROW),
    ("| **`enc_d8_k3_ratio64`, now `pinpad_cpu`** | `--enc_depth 8 --enc_kernel 3 --train_ratio 64` | 0.674 | 0.087 | "
     "11.51 | **3.74x** |", "cost_profile.json", lambda d: _profile_row(d, "enc_d8_k3_ratio64"),
     " | {:.3f} | {:.3f} | {:.2f} | **{:.2f}x** |"),
    ("| encoder (two 5x5 convs, 3 -> 64 -> 64 channels, on 512 frames) | 0.549 | 0.289 | 50% |", "cost_profile.json",
     lambda d: _part(d, "encoder"), PART_ROW),
    ("| decoder (reconstruction loss) | 0.334 | 0.179 | 31% |", "cost_profile.json", lambda d: _part(d, "decoder"),
     PART_ROW),
    ("| imagination, actor and critic (15 steps from 128 starts) | 0.095 | 0.054 | 9% |", "cost_profile.json",
     lambda d: _part(d, "imagination, actor and critic"), PART_ROW),
    ("| posterior scan and KL (32 steps) | 0.067 | 0.048 | 6% |", "cost_profile.json",
     lambda d: _part(d, "posterior scan and KL"), PART_ROW),
    ("| whole update (the parts alone sum to 1.071) | 1.093 | 0.583 | 100% |", "cost_profile.json",
     lambda d: (d["parts"]["whole update"]["parts_sum_cpu_s"], d["parts"]["whole update"]["cpu_s"],
                d["parts"]["whole update"]["wall_s"]), "(the parts alone sum to {:.3f}) | {:.3f} | {:.3f} |"),
    ("| the encoder at 8 channels, 3x3 (`pinpad_cpu`) | 0% | 53.1% | 88.7% |", "world_model_drawing_enc_d8_k3.json",
     lambda d: tuple(100 * _world_drawn_at(d, "enc_d8_k3", u) for u in (1000, 1500, 2000)), DRAWN_ROW),
    # The first pilot at pinpad_cpu (a campaign record), beside pinpad_cpu_v2's seed 0. It logs every 2504 or 2496
    # env steps (an iteration is 8).
    ("after 2563 updates (22.5k env steps), as at `pinpad_cpu_v2` after 2000 (10k env steps)",
     "runs/pinpad_three/rssm/seed0/metrics.jsonl",
     lambda _: (*_at_steps(PILOT, "updates", (22_504,)), *_at_steps("pinpad_cpu_rssm_seed0", "updates", (10_000,))),
     "after {} updates (22.5k env steps), as at `pinpad_cpu_v2` after {} (10k env steps)"),
    ("drawn in 17.5% of posterior frames", "runs/pinpad_three/rssm/seed0/metrics.jsonl",
     lambda _: 100 * _at_steps(PILOT, "tracking_posterior", (22_504,))[0], "drawn in {:.1f}% of posterior"),
    ("nothing by 40k env steps (4750 updates), where `pinpad_cpu_v2`'s seed 0 first passed the target after 5750",
     "runs/pinpad_three/rssm/seed0/final.json",
     lambda d: ("nothing" if d["first_target_step"] is None else d["first_target_step"],
                *_at_steps(PILOT, "updates", (40_000,)), *_at_steps("pinpad_cpu_rssm_seed0", "updates", (25_000,))),
     "{} by 40k env steps ({} updates), where `pinpad_cpu_v2`'s seed 0 first passed the target after {}"),
    ("Its whole run took 0.087 CPU s per env step", "runs/pinpad_three/rssm/seed0/final.json",
     lambda d: d["train_cpu_s"] / d["step"], "took {:.3f} CPU s per env step"),
    ("(the same world model as `depth16_x3_rec16` on `pinpad_cpu_v1`, 2026-12-01) | 0% | 44.5% | 90.4% |",
     "world_model_drawing_rec16.json",
     lambda d: tuple(100 * _world_drawn_at(d, "depth16_x3_rec16", u) for u in (1000, 1500, 2000)), DRAWN_ROW),
]}


def _world_drawn_at(d, variant, update):
    """Share of held-out posterior frames that draw the agent after `update` updates of one world model variant."""
    return next(share for step, _, _, share in d["variants"][variant]["curve"] if step == update)


def _check(page, quote, name, values, form):
    text = (RESULTS / name).read_text()
    written = values(json.loads(text) if name.endswith(".json") else text)
    assert quote in page, "the page no longer says this: update FIGURES or PAGES in tests/test_figures.py"
    assert form.format(*written if isinstance(written, tuple) else (written,)) in quote


@pytest.mark.parametrize("quote, name, values, form", FIGURES, ids=[f"{f[1]}: {f[0][:40]}" for f in FIGURES])
def test_the_readme_quotes_the_results_file(quote, name, values, form):
    _check(README, quote, name, values, form)


@pytest.mark.parametrize("page, quote, name, values, form", [(page, *f) for page, figures in PAGES.items()
                                                             for f in figures],
                         ids=[f"{page}: {f[1]}: {f[0][:40]}" for page, figures in PAGES.items() for f in figures])
def test_the_pages_quote_the_results_file(page, quote, name, values, form):
    _check((REPO / page).read_text(), quote, name, values, form)
