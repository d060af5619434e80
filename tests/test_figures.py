"""Every result the README and the docs pages quote, traced to the results file that wrote it: one table, page and text
-> the values in a file under docs/results/ (or a released agent's provenance), as the page rounds them. A figure
edited by hand, moved to another page, or a results file replaced without the page, fails here. The links and images
of the README and the docs pages must point at files (and headings) that exist."""

import json
import math
import re

import pytest

from conftest import REPO
from dreamer_jax import config as cfg
from dreamer_jax.curves import read_metrics
from pinpad.env import REWARD

RESULTS = REPO / "docs" / "results"
README = "README.md"
LEARNING, WORLD, BOUNDARIES, SPEED, HIERARCHY = (f"docs/results/{name}.md" for name in (
    "learning", "world_model", "boundaries", "speed", "hierarchy"))
TABLES = "docs/speed.md"
DEFAULTS = "docs/dreamer_defaults.md"
RESULT_PAGES = ("docs/results/README.md", LEARNING, WORLD, BOUNDARIES, SPEED, HIERARCHY)
PROVENANCE = "released/pinpad_three_vta/provenance.json"  # the released agent (a path from the repository's root)


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


def _first_at_target(run):
    """The first env step whose periodic evaluation reached the learning benchmark's target (10x random)."""
    target = json.loads((RESULTS / "learning.json").read_text())["target_return"]
    return next(row["step"] for row in read_metrics(RESULTS / run) if row.get("eval_return", 0) >= target)


def _first_curve_at_target(d):
    """The first env step at the target of each run of a learning benchmark, from its periodic evaluations."""
    return [next(step for step, ret in r["curve"] if ret >= d["target_return"]) for r in d["runs"]]


def _k(steps):
    """Env steps as the pages write them: 37500 -> 37.5."""
    return f"{steps / 1000:g}"


def _world_drawn(d, *variants):
    """Share of held-out frames whose posterior reconstruction draws the agent at the end of each variant's training."""
    return tuple(d["variants"][v]["curve"][-1][3] for v in variants)


def _world_drawn_at(d, variant, update):
    """Share of held-out posterior frames that draw the agent after `update` updates of one world model variant."""
    return next(share for step, _, _, share in d["variants"][variant]["curve"] if step == update)


def _jitted_env_rate(d):
    """(env steps/s, its ratio to the gymnasium adapter) of pinpad under jit + vmap + scan at batch 1024."""
    return next((r["env_steps_per_s"], r["ratio"]) for r in d["rows"]
                if r["method"] == "jit + vmap + scan" and r["batch"] == 1024)


def _ratios(d):
    """A side-by-side benchmark's ratios, row by row."""
    return tuple(r["ratio"] for r in d["rows"])


def _official(row):
    """The official DreamerV3's seconds per update: the mean of its two timings."""
    return (row["official_first_s"] + row["official_second_s"]) / 2


def _profile_row(d, name):
    """A candidate's row of the cost profile: CPU s per update and per env step, env steps per CPU s, the ratio."""
    run, reference = d["runs"][name], d["runs"][d["reference"]]
    return (run["pieces"]["update"]["cpu_s"], run["env_step_total"]["cpu_s"], run["env_steps_per_cpu_s"],
            run["env_steps_per_cpu_s"] / reference["env_steps_per_cpu_s"])


def _part(d, name):
    """CPU and wall seconds of one part of the profiled update, and its share of the whole update's CPU seconds."""
    part = d["parts"][name]
    return part["cpu_s"], part["wall_s"], 100 * part["cpu_s"] / d["parts"]["whole update"]["cpu_s"]


def _record_dir(variant, seed):
    """A campaign record's folder, docs/results/runs/pinpad_three/VARIANT/seedK/."""
    return RESULTS / "runs" / "pinpad_three" / variant / f"seed{seed}"


def _record(variant, seed):
    """A campaign record's final.json."""
    return json.loads((_record_dir(variant, seed) / "final.json").read_text())


AT = (10_000, 15_000, 20_000, 25_000)  # the env steps actor_drive.json reads


def _drive(d, run, key, steps):
    """actor_drive.json's `key` for the record `run` (VARIANT/seedK) at each of `steps`."""
    [row] = [r for r in d["runs"] if r["run"].endswith(f"runs/pinpad_three/{run}")]
    return tuple(row["at"][str(step)][key] for step in steps)


def _v1_drive(d, key, steps):
    """actor_drive.json's `key` for rssm's seeds at each of `steps`: (step 1 seed 0, step 1 seed 1, ...)."""
    return tuple(v for step in steps for seed in V1_SEEDS for v in _drive(d, f"rssm/seed{seed}", key, (step,)))


def _record_config(variant, seed):
    """A campaign record's config.json."""
    return json.loads((_record_dir(variant, seed) / "config.json").read_text())


def _v1_differs(learning):
    """The fields in which rssm's seeds differ from the learning benchmark's RSSM settings, leaving aside where the
    run lives and how many seeds its process stacks; a field the benchmark's settings predate takes the value that
    reproduces them (config.ADDED_FIELDS, else its default), and the encoder's depth is compared as the model reads it
    (0: --depth)."""
    settings = {**cfg.to_dict(cfg.Config()), **cfg.ADDED_FIELDS, **learning["settings"]["rssm"]}
    effective = lambda c: {**c, "enc_depth": c["enc_depth"] or c["depth"]}  # noqa: E731
    fields = set()
    for seed in V1_SEEDS:
        record, theirs = effective(_record_config("rssm", seed)), effective(settings)
        fields |= {k for k, v in record.items() if k not in ("logdir", "num_seeds", "seed") and v != theirs[k]}
    return tuple(sorted(fields))


def _reached(variant, seeds):
    """The seeds of a campaign variant whose periodic evaluation ever reached the target."""
    return [s for s in seeds if _record(variant, s)["first_target_step"] is not None]


def _v1_learned():
    """(rssm's seeds that passed the target, its seeds)."""
    return len(_reached("rssm", V1_SEEDS)), len(V1_SEEDS)


def _chosen_learned(learning):
    """At the chosen pinpad_cpu: (RSSM runs whose final return passed the target, RSSM runs, VTA runs whose did, VTA
    runs), over its pilot records and the learning benchmark's runs at pinpad_cpu_v1, the same setting but for
    bookkeeping."""
    rssm, vta = learning["summary"]["rssm"], learning["summary"]["vta"]
    def passed(variant, seeds):
        return sum(_record(variant, s)["final_eval_return"] >= _record(variant, s)["target_return"] for s in seeds)

    return (passed("rssm", V1_SEEDS) + rssm["seeds_at_target"], len(V1_SEEDS) + rssm["seeds"],
            passed("vta", VTA_SEEDS) + vta["seeds_at_target"], len(VTA_SEEDS) + vta["seeds"])


def _v3_learned():
    """(pinpad_cpu_v3's pilot records that passed the target, its pilot records)."""
    runs = (("rssm_v3", 0), ("rssm_v3", 1), *R128_RUNS)
    return sum(_record(*run)["first_target_step"] is not None for run in runs), len(runs)


def _earliest_chosen():
    """(the earliest first step at the target among the chosen setting's records, 'RSSM' or 'VTA', its seed)."""
    firsts = [(_record(v, s)["first_target_step"], v.upper(), s)
              for v, seeds in (("rssm", V1_SEEDS), ("vta", VTA_SEEDS)) for s in seeds]
    return min(f for f in firsts if f[0] is not None)


def _v1_learned_seeds():
    """The one RSSM pilot seed at the chosen pinpad_cpu that passed the target (a page that names it as the one)."""
    [seed] = _reached("rssm", V1_SEEDS)
    return seed


def _learner_saw_no_more(drive):
    """Whether the learning pilot's rewarded share of replayed steps was at most the largest of the others' at 20k and
    25k alike."""
    learner = _v1_learned_seeds()
    return all(_drive(drive, f"rssm/seed{learner}", "replayed_reward", (step,))[0]
               <= max(_drive(drive, f"rssm/seed{s}", "replayed_reward", (step,))[0] for s in V1_SEEDS if s != learner)
               for step in (20_000, 25_000))


def _extremes(chosen):
    """Over the chosen setting's RSSM and VTA runs in actor_drive_chosen.json: the one that narrowed first (lowest
    entropy at 20k: dynamics, seed, entropy), the one that narrowed last, and the one whose replay held the least
    reward at 15k (dynamics, seed, per 1000 replayed steps)."""
    runs = [r for r in chosen["runs"] if r["condition"] in ("pinpad_cpu, RSSM", "pinpad_cpu, VTA")]
    name = lambda r: (r["condition"].split(", ")[1], r["seed"])  # noqa: E731
    entropy = lambda r: r["at"]["20000"]["policy_entropy"]  # noqa: E731
    first, last = min(runs, key=entropy), max(runs, key=entropy)
    least = min(runs, key=lambda r: r["at"]["15000"]["replayed_reward"])
    learned = [r for r in runs if r["first_target_step"] is not None]
    return ("those that learned include" if {name(first), name(last)} <= set(map(name, learned)) else "others are",
            *name(first), entropy(first), *name(last), entropy(last), *name(least),
            1000 * least["at"]["15000"]["replayed_reward"])


def _held(final):
    """A long run's final return, its episodes and env steps, the share of its best periodic evaluation that is, that
    best and where, and the scripted solver's return (learning.json's)."""
    best_step, best = max(((row["step"], row["eval_return"]) for row in read_metrics(RESULTS / LONG)
                           if "eval_return" in row), key=lambda p: p[1])
    scripted = json.loads((RESULTS / "learning.json").read_text())["scripted_return"]
    return (final["final_eval_return"], final["final_episodes"], _k(final["step"]), final["final_eval_return"] / best,
            best, _k(best_step), scripted)


def _narrowed_last():
    """The rssm seed whose policy entropy was highest at 20k and 25k alike (none where the two steps disagree)."""
    last = {max(V1_SEEDS, key=lambda s: _at_steps(_record_dir("rssm", s), "policy_entropy", (step,)))
            for step in (20_000, 25_000)}
    return last.pop() if len(last) == 1 else None


def _alike(values, digits):
    """The one value `values` share at `digits` decimals (a page that gives one number for several); all of them, which
    no number format takes, where they differ."""
    return values[0] if len({round(v, digits) for v in values}) == 1 else values


def _record_row(d):
    """A campaign record's row: seed, env steps, return and agent tracking (observed, imagined step 15)."""
    return d["seed"], _k(d["step"]), d["final_eval_return"], d["tracking"]["posterior"], d["tracking"]["imagined"]["15"]


def _tracked_nowhere(d):
    """The largest agent tracking of a run's open loop, observed or imagined (0% means nowhere)."""
    tracking = d["runs"][0]["tracking"]
    return max(tracking["posterior"], *tracking["imagined"].values())


def _study_row(d, condition):
    """A condition's row of the study's headline: boundaries per step, lift with its interval, F1, lift over pixel
    change's with its interval (pad events, scripted episodes; means over seeds)."""
    s = d["summary"][condition]
    lift, f1, over = (s[f"scripted/pad/{key}"] for key in ("model/lift_over_event_rate", "model/f1_tau1",
                                                            "lift over pixel change"))
    return (s["scripted_boundary_rate"]["mean"], lift["mean"], *lift["ci95"], f1["mean"], over["mean"], *over["ci95"])


def _h_mm(seconds):
    """Seconds as hours and minutes, h:mm, to the nearest minute."""
    minutes = round(seconds / 60)
    return f"{minutes // 60}:{minutes % 60:02d}"


NUMBERS = ("none", "one", "two", "three", "four", "five", "six")


SPLIT = ("progress", "distractor")
RUN_STEPS = (10_000, 15_000, 20_000, 25_000, 30_000, 40_000)  # the columns of the pinpad_cpu_v2 run's table
V2 = "pinpad_cpu_rssm_seed0"  # the pinpad_cpu_v2 run
PILOT = "runs/pinpad_three/rssm_v3/seed0"  # the first campaign record, at pinpad_cpu_v3
V1_PILOT = "runs/pinpad_three/rssm/seed0"  # pinpad_cpu_v1's model and learning rates: the chosen pinpad_cpu
V1_SEED1 = "runs/pinpad_three/rssm/seed1"
V1_SEED2 = "runs/pinpad_three/rssm/seed2"
V1_SEEDS = (0, 1, 2)  # the RSSM pilot seeds at the chosen pinpad_cpu
ENT_RUN = "runs/pinpad_three/rssm_v1_ent3e-3/seed0"  # rssm with the entropy bonus at 3e-3
ENT_SEED1 = "runs/pinpad_three/rssm_v1_ent3e-3/seed1"
RUNS_VTA = "runs/pinpad_three/vta/seed"  # + the seed: a VTA pilot's record at the chosen pinpad_cpu
VTA_SEEDS = (0, 1)  # the VTA pilot seeds at the chosen pinpad_cpu
LONG = "runs/pinpad_three/vta_long/seed1"  # vta seed 1 continued from its 40k checkpoint to 80k
CHOSEN_VTA_SEEDS = (0, 1, 2)  # the VTA records at the chosen pinpad_cpu: its pilots and the benchmark's
R128_RUNS = tuple((variant, seed) for variant in ("rssm_r128", "rssm_r128_ac4e-5") for seed in (0, 1)) + (
    ("rssm_r128_ac4e-5_fn0", 0),)  # the pilots at train ratio 128 on learning.md
PROFILE_ROW = " | {:.3f} | {:.3f} | {:.2f} | {:.2f}x |"
PART_ROW = " | {:.3f} | {:.3f} | {:.0f}% |"
DRAWN_ROW = "| {:.0f}% | {:.1f}% | {:.1f}% |"
STUDY_ROW = "| {:.3g} | {:.3g} [{:.3g}, {:.3g}] | {:.3g} | {:+.3g} [{:+.3g}, {:+.3g}] |"
RECORD_ROW = "| {} | {}k | {:.1f} | {:.1%} | {:.1%} |"
V1_ROWS = {  # the learning benchmark's table at pinpad_cpu_v1, on the README and on its page
    "random": ("| random policy | 4.2 |", "learning.json", lambda d: d["random_return"], "| {:.1f} |"),
    "scripted": ("| scripted solver | 278.8 |", "learning.json", lambda d: d["scripted_return"], "| {:.1f} |"),
    "rssm": ("| RSSM, seeds 0, 1, 2 at 38.5k env steps (16 fresh episodes each) | 3.1, 145.0, 172.5 |", "learning.json",
             lambda d: tuple(r["final_eval_return"] for r in d["runs"] if r["dynamics"] == "rssm"),
             "{:.1f}, {:.1f}, {:.1f}"),
    "vta": ("| VTA, seeds 0, 1, 2 at 40k env steps (16 fresh episodes each) | 163.1, 210.0, 135.6 |", "learning.json",
            lambda d: tuple(r["final_eval_return"] for r in d["runs"] if r["dynamics"] == "vta"),
            "{:.1f}, {:.1f}, {:.1f}"),
}
V2_ROWS = [  # the pinpad_cpu_v2 run's table (its metrics.jsonl)
    ("| eval return (8 episodes) | 1.2 | 0.0 | 0.0 | 143.8 | 243.8 | 265.0 |", f"{V2}/metrics.jsonl",
     lambda _: _at_steps(V2, "eval_return", RUN_STEPS), "|" + " {:.1f} |" * 6),
    ("| agent tracked, observed frames (scripted probe) | 17.5% | 40.0% | 27.5% | 65.0% | 70.0% | 82.5% |",
     f"{V2}/metrics.jsonl", lambda _: _at_steps(V2, "tracking_posterior", RUN_STEPS), "|" + " {:.1%} |" * 6),
    ("| agent tracked, imagined step 15 | 0.0% | 0.0% | 0.0% | 0.0% | 37.5% | 75.0% |",
     f"{V2}/metrics.jsonl", lambda _: _at_steps(V2, "tracking_imagined_15", RUN_STEPS), "|" + " {:.1%} |" * 6),
]
DEMO_ROWS = [  # the demo's judgement of its short run's boundaries (make demo)
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
]
# The first pilot, at pinpad_cpu_v3, beside pinpad_cpu_v2's seed 0 (the pilot logs every 2504 or 2496).
PILOT_UPDATES = (
    ("after 2563 updates (22.5k env steps), as at `pinpad_cpu_v2` after 2000 (10k env steps)", f"{PILOT}/metrics.jsonl",
     lambda _: (*_at_steps(PILOT, "updates", (22_504,)), *_at_steps(V2, "updates", (10_000,))),
     "after {} updates (22.5k env steps), as at `pinpad_cpu_v2` after {} (10k env steps)"),
    ("drawn in 17.5% of posterior frames", f"{PILOT}/metrics.jsonl",
     lambda _: 100 * _at_steps(PILOT, "tracking_posterior", (22_504,))[0], "drawn in {:.1f}% of posterior"),
    ("nothing by 40k env steps (4750 updates), where `pinpad_cpu_v2`'s seed 0 first passed the target after 5750",
     f"{PILOT}/final.json",
     lambda d: ("nothing" if d["first_target_step"] is None else d["first_target_step"],
                *_at_steps(PILOT, "updates", (40_000,)), *_at_steps(V2, "updates", (25_000,))),
     "{} by 40k env steps ({} updates), where `pinpad_cpu_v2`'s seed 0 first passed the target after {}"),
)
V2_OPENLOOP = ("tracked in 91% of observed frames of 16 episodes, 81% at imagined step 15, 0% at 45",
               f"{V2}/openloop.json",
               lambda d: (d["tracking"]["posterior"], *(d["tracking"]["imagined"][k] for k in ("15", "45"))),
               "tracked in {:.0%} of observed frames of 16 episodes, {:.0%} at imagined step 15, {:.0%} at 45")
DRAWING_ROWS = [  # the autoencoder test of agent drawing (benchmarks.agent_drawing)
    ("| 4, 1e-4 (the preset) | 0% | – | 0% |", "agent_drawing.json", lambda d: _drawn(d, "preset", "preset_latent"),
     "| {:.0%} | – | {:.0%} |"),
    ("| 8, 3e-4 | 13.7% | 3.9% | 0% (32x16 latents: 0%) |", "agent_drawing.json",
     lambda d: _drawn(d, "depth8_lr3e-4", "depth8_lr3e-4_latent_probs", "depth8_lr3e-4_latent",
                      "depth8_lr3e-4_latent32x16"), "| {:.1%} | {:.1%} | {:.0%} (32x16 latents: {:.0%}) |"),
    ("| 16, 3e-4 | 92.2% | 88.7% | 0% |", "agent_drawing.json",
     lambda d: _drawn(d, "depth16_lr3e-4", "depth16_lr3e-4_latent_probs", "depth16_lr3e-4_latent"),
     "| {:.1%} | {:.1%} | {:.0%} |"),
]
ENCODER_ROWS = {  # the world model alone at pinpad_cpu_v2 and with pinpad_cpu's encoder, by updates
    "rec16": ("| 0% | 44.5% | 90.4% |", "world_model_drawing_rec16.json",
              lambda d: tuple(100 * _world_drawn_at(d, "depth16_x3_rec16", u) for u in (1000, 1500, 2000)), DRAWN_ROW),
    "enc": ("| the encoder at 8 channels, 3x3 (`pinpad_cpu_v3`) | 0% | 53.1% | 88.7% |",
            "world_model_drawing_enc_d8_k3.json",
            lambda d: tuple(100 * _world_drawn_at(d, "enc_d8_k3", u) for u in (1000, 1500, 2000)), DRAWN_ROW),
}
RATIO = ("3.09x fewer", "cost_profile.json", lambda d: _profile_row(d, "enc_d8_k3_ratio64")[3], "{:.2f}x fewer")
V2_ENV_STEP = ("the update took 0.277 of an env step's 0.282 CPU s", "cost_profile.json",
               lambda d: (d["runs"]["today"]["env_step"]["update"]["cpu_s"],
                          d["runs"]["today"]["env_step_total"]["cpu_s"]),
               "the update took {:.3f} of an env step's {:.3f} CPU s")
STUDY_ROWS = [(f"| `{condition}`: {name} {row}", "study.json", lambda d, c=condition: _study_row(d, c), STUDY_ROW)
              for condition, name, row in (
    ("rssm", "RSSM (surprise peaks)", "| 0.107 | 8.45 [7.61, 9.29] | 0.905 | +0.715 [-0.132, +1.56] |"),
    ("vta_force0_t1", "VTA, no forcing, temperature 1",
     "| 0.156 | 6.98 [1.53, 12.4] | 0.838 | +0.275 [-0.275, +0.825] |"),
    ("vta_force10_t1", "VTA, forcing 10, temperature 1",
     "| 0.118 | 8.39 [8.06, 8.73] | 0.944 | +0.533 [+0.158, +0.909] |"),
    ("vta_force0_t2_rate", "VTA, temperature 2, step rate regulariser",
     "| 0.108 | 9.11 [9.06, 9.16] | 0.983 | +1.35 [+1.27, +1.43] |"),
    ("vta_batch_rate", "VTA, batch rate regulariser (ours)",
     "| 0.103 | 8.61 [6.61, 10.6] | 0.908 | +0.936 [-0.76, +2.63] |"),
)]

# (the page, text on it, results file under docs/results/ or PROVENANCE, its values, how the page writes them)
SEG_PILOT, HIER_PILOT = "runs/pinpad_three/vta_seg10_w64/seed0", "runs/pinpad_three/vta_hier_seg10_w64/seed0"


def _pilot_row(run, key, digits):
    """A hierarchy pilot's metric at each of its periodic evaluations, as a table row's cells."""
    return " | ".join(f"{row[key]:.{digits}f}" for row in read_metrics(RESULTS / run) if key in row)


FIGURES = [
    # The README: what the demo prints and shows.
    (README, "the released agent's first 150 steps", "released_play.json", lambda d: d["frames"], "first {} steps"),
    (README, "released agent (VTA, 50000 env steps of pinpad_three): return 150 in one 1000-step episode, against "
             "random 3.8 and the scripted solver 283.1", "released_play.json",
     lambda d: (d["dynamics"].upper(), d["step"], d["task"], d["return"], d["episode_length"], d["random_return"],
                d["scripted_return"]),
     "({}, {} env steps of {}): return {:g} in one {}-step episode, against random {:.1f} and the scripted solver "
     "{:.1f}"),
    (README, "boundaries of the short run: 1203 READs in 9980 scripted steps; a pad event is 8.27x as likely at a READ "
             "as at any step (95% interval 7.95..8.54, circular-shift p 1.09e-54), 7.74x at a large pixel change",
     "demo_boundary_eval.json",
     lambda d: (d["boundary_count"], d["scored_steps"], *_interval(d, "model", "lift_over_event_rate"),
                10 ** _pad(d, "model", "circular_shift_log10_p"), _pad(d, "pixel_change", "lift_over_event_rate")),
     "{} READs in {} scripted steps; a pad event is {:.2f}x as likely at a READ as at any step (95% interval "
     "{:.2f}..{:.2f}, circular-shift p {:.3g}), {:.2f}x"),
    # docs/results/hierarchy.md: the first pilot pair.
    *((HIERARCHY, f"| {label} | {row} |", f"{run}/metrics.jsonl",
       lambda _, run=run, key=key, d=d: _pilot_row(run, key, d), f"| {label} | {{}} |")
      for label, run, key, d, row in (
        ("mean segment length, control", SEG_PILOT, "mean_segment_length", 2,
         "2.18 | 2.51 | 3.82 | 4.26 | 4.74 | 5.08"),
        ("READs per step, control", SEG_PILOT, "boundary_ratio", 3, "0.464 | 0.429 | 0.266 | 0.241 | 0.215 | 0.202"),
        ("mean segment length, hierarchy", HIER_PILOT, "mean_segment_length", 2,
         "2.18 | 2.53 | 3.79 | 4.05 | 4.50 | 4.89"),
        ("`abstract_length_accuracy`", HIER_PILOT, "abstract_length_accuracy", 3,
         "0.173 | 0.438 | 0.279 | 0.263 | 0.241 | 0.222"),
        ("`abstract_next_z_match`", HIER_PILOT, "abstract_next_z_match", 3,
         "0.217 | 0.704 | 0.756 | 0.805 | 0.817 | 0.818"))),
    (HIERARCHY, "| imagined abstract return / flat return | 0.004 / -0.005 | 0.014 / 0.013 | 0.014 / 0.013 | 0.025 / "
     "0.027 | 0.049 / 0.048 | 0.082 / 0.076 |", f"{HIER_PILOT}/metrics.jsonl",
     lambda _: " | ".join(f"{row['imag_abstract_return']:.3f} / {row['imag_return']:.3f}"
                          for row in read_metrics(RESULTS / HIER_PILOT) if "imag_abstract_return" in row),
     "| imagined abstract return / flat return | {} |"),
    (HIERARCHY, "| env steps | 2.5k | 5k | 7.5k | 10k | 12.5k | 15k |", f"{HIER_PILOT}/metrics.jsonl",
     lambda _: " | ".join(f"{_k(round(row['step'], -2))}k" for row in read_metrics(RESULTS / HIER_PILOT)
                          if "eval_return" in row), "| env steps | {} |"),
    (HIERARCHY, "5.08 steps\n  (0.202 READs per step) in the control, 4.89 with the hierarchy",
     f"{SEG_PILOT}/metrics.jsonl",
     lambda _: (*_at_steps(SEG_PILOT, "mean_segment_length", (15_008,)),
                *_at_steps(SEG_PILOT, "boundary_ratio", (15_008,)),
                *_at_steps(HIER_PILOT, "mean_segment_length", (15_008,))),
     "{:.2f} steps\n  ({:.3f} READs per step) in the control, {:.2f} with the hierarchy"),
    (HIERARCHY, "The pilot made\n  813 updates", f"{HIER_PILOT}/metrics.jsonl",
     lambda _: _at_steps(HIER_PILOT, "updates", (15_008,)), "The pilot made\n  {} updates"),
    (HIERARCHY, "(0.438 at 5k, 0.222 at 15k). Its\n  next-latent match rose to 0.818", f"{HIER_PILOT}/metrics.jsonl",
     lambda _: (*_at_steps(HIER_PILOT, "abstract_length_accuracy", (5008, 15_008)),
                *_at_steps(HIER_PILOT, "abstract_next_z_match", (15_008,))),
     "({:.3f} at 5k, {:.3f} at 15k). Its\n  next-latent match rose to {:.3f}"),
    (HIERARCHY, "(0.082 against 0.076 at 15k)", f"{HIER_PILOT}/metrics.jsonl",
     lambda _: (*_at_steps(HIER_PILOT, "imag_abstract_return", (15_008,)),
                *_at_steps(HIER_PILOT, "imag_return", (15_008,))),
     "({:.3f} against {:.3f} at 15k)"),
    (HIERARCHY, "5.0 and 3.1 per episode over 16 fresh episodes at 15k", f"{SEG_PILOT}/final.json",
     lambda d: (d["final_eval_return"], _record("vta_hier_seg10_w64", 0)["final_eval_return"], d["final_episodes"],
                _k(round(_alike([d["step"], _record("vta_hier_seg10_w64", 0)["step"]], -2), -2))),
     "{:.1f} and {:.1f} per episode over {} fresh episodes at {}k"),
    # The README: does the agent learn?
    (README, "against a random policy's 4.2 and the scripted solver's 278.8", "learning.json",
     lambda d: (d["random_return"], d["scripted_return"]), "random policy's {:.1f} and the scripted solver's {:.1f}"),
    (README, "| `pinpad_cpu_v1`, VTA seeds 0, 1, 2 at 40k env steps | 163.1, 210.0, 135.6 |", "learning.json",
     lambda d: (*{_k(r["final_step"]) for r in d["runs"] if r["dynamics"] == "vta"},
                *(r["final_eval_return"] for r in d["runs"] if r["dynamics"] == "vta")),
     "at {}k env steps | {:.1f}, {:.1f}, {:.1f} |"),
    (README, "| `pinpad_cpu_v1`, RSSM seeds 0, 1, 2 at 38.5k env steps | 3.1, 145.0, 172.5 |", "learning.json",
     lambda d: (*{_k(r["final_step"]) for r in d["runs"] if r["dynamics"] == "rssm"},
                *(r["final_eval_return"] for r in d["runs"] if r["dynamics"] == "rssm")),
     "at {}k env steps | {:.1f}, {:.1f}, {:.1f} |"),
    (README, "265.0 over 8 episodes at 40k env steps, past the target from 25k", f"{V2}/metrics.jsonl",
     lambda _: (*_at_steps(V2, "eval_return", (40_000,)), _k(_first_at_target(V2))),
     "{:.1f} over 8 episodes at 40k env steps, past the target from {}k"),
    (README, "at 3.09x fewer CPU s per env step", *RATIO[1:3], "{:.2f}x fewer CPU s per env step"),
    (README, "| 0.0, 0.0 at 40k env steps |", f"{PILOT}/final.json",
     lambda _: (*(_record("rssm_v3", s)["final_eval_return"] for s in (0, 1)),
                *{_k(_record("rssm_v3", s)["step"]) for s in (0, 1)}),
     "| {:.1f}, {:.1f} at {}k env steps |"),
    (README, "| 132.5, 0.0, 0.0; 1.2, 56.2, 156.9 at 40k env steps |", f"{V1_PILOT}/final.json",
     lambda _: (*(_record("rssm", seed)["final_eval_return"] for seed in V1_SEEDS),
                *(_record("vta", seed)["final_eval_return"] for seed in CHOSEN_VTA_SEEDS),
                _k(_alike([_record(*run)["step"] for run in (*(("rssm", s) for s in V1_SEEDS),
                                                              *(("vta", s) for s in CHOSEN_VTA_SEEDS))], 0))),
     "| {:.1f}, {:.1f}, {:.1f}; {:.1f}, {:.1f}, {:.1f} at {}k env steps |"),
    (README, "| 120.0 over 16 episodes at 50k env steps |", PROVENANCE,
     lambda d: (d["return"], d["episodes"], _k(d["env_steps"])), "| {:.1f} over {} episodes at {}k env steps |"),
    (README, "at `pinpad_cpu_v2` in 91% of observed frames at 40k env steps", f"{V2}/openloop.json",
     lambda d: (d["tracking"]["posterior"], _k(d["step"])), "in {:.0%} of observed frames at {}k env steps"),
    # The README: do VTA's boundaries mean anything?
    (README, "lift over the pad-event rate 8.27 [7.95, 8.54]; the largest pixel changes at the same count 7.74 [7.54, "
             "7.90]", "demo_boundary_eval.json",
     lambda d: (*_interval(d, "model", "lift_over_event_rate"), *_interval(d, "pixel_change", "lift_over_event_rate")),
     "{:.2f} [{:.2f}, {:.2f}]; the largest pixel changes at the same count {:.2f} [{:.2f}, {:.2f}]"),
    (README, "a READ at progress (781) / distractor (281) pad entries 1.00 / 1.00", "demo_boundary_eval.json",
     lambda d: (*(d["progress_vs_distractor"]["model"][f"{k}_count"] for k in SPLIT),
                *(d["progress_vs_distractor"]["model"][f"{k}_hit_rate"] for k in SPLIT)),
     "progress ({}) / distractor ({}) pad entries {:.2f} / {:.2f}"),
    (README, "3 seeds each, 5000 env steps", "study.json", lambda d: (len(d["seeds"]), d["steps"]),
     "{} seeds each, {} env steps"),
    (README, "lift over the pad-event rate 6.98 to 9.11 across conditions; circular-shift p 0.001, the floor of its "
             "test, in every seed", "study.json",
     lambda d: (min(s["scripted/pad/model/lift_over_event_rate"]["mean"] for s in d["summary"].values()),
                max(s["scripted/pad/model/lift_over_event_rate"]["mean"] for s in d["summary"].values()),
                max(r["scripted"]["pad/model/circular_shift_p"] for r in d["runs"])),
     "rate {:.3g} to {:.3g} across conditions; circular-shift p {:g},"),
    # The README: speed.
    (README, "| 264,582 env steps/s, 178x the gymnasium adapter |", "env_throughput.json",
     _jitted_env_rate, "{:,.0f} env steps/s, {:.0f}x"),
    (README, "| 2.36x faster at size1m, 1.96x at size12m |", "official_ratio.json",
     _ratios, "{:.2f}x faster at size1m, {:.2f}x at size12m"),
    (README, "| a training run at `pinpad_cpu_v3`, 2-core CPU | 0.091 CPU s per env step |", "cost_profile.json",
     lambda d: d["runs"]["enc_d8_k3_ratio64"]["env_step_total"]["cpu_s"], "| {:.3f} CPU s per env step |"),
    (README, "| 60.1 env steps/s, 84.4 with `--scan_unroll 5` |", "gpu/gpu_check.md",
     lambda text: tuple(float(re.search(rf"\| {row} \| 1 +\| ([\d.]+)", text).group(1))
                        for row in ("rssm", "rssm, scan unroll 5")), "{:.1f} env steps/s, {:.1f} with"),
    (README, "| 1.43x (debug), 1.36x (size1m) |", "dynamics_cost.json",
     _ratios, "{:.2f}x (debug), {:.2f}x (size1m)"),

    # docs/results/learning.md: the summary.
    (LEARNING, "| 2 of 3 RSSM seeds, 3 of 3 VTA seeds, at 35k or 37.5k env steps |", "learning.json",
     lambda d: (d["summary"]["rssm"]["seeds_at_target"], d["summary"]["rssm"]["seeds"],
                d["summary"]["vta"]["seeds_at_target"], d["summary"]["vta"]["seeds"],
                _k(min(_first_curve_at_target(d))), _k(max(_first_curve_at_target(d)))),
     "| {} of {} RSSM seeds, {} of {} VTA seeds, at {}k or {}k env steps |"),
    (LEARNING, "| the first, at 25k env steps |", f"{V2}/metrics.jsonl", lambda _: _k(_first_at_target(V2)),
     "| the first, at {}k env steps |"),
    (LEARNING, "| 2 RSSM seeds to 40k, 5 RSSM runs at train ratio 128 to 30k or 40k | none |", f"{PILOT}/final.json",
     lambda _: (*{_k(_record("rssm_v3", s)["step"]) for s in (0, 1)}, len(R128_RUNS),
                " or ".join(f"{k}k" for k in sorted({_k(_record(v, s)["step"]) for v, s in R128_RUNS})),
                "none" if all(_record(v, s)["first_target_step"] is None
                              for v, s in (("rssm_v3", 0), ("rssm_v3", 1), *R128_RUNS)) else "some"),
     "| 2 RSSM seeds to {}k, {} RSSM runs at train ratio 128 to {} | {} |"),
    (LEARNING, "| none, in a 350-second budget |", "gpu/learning.json",
     lambda d: ("none" if d["summary"]["rssm"]["seeds_at_target"] == 0 else "some",
                int(re.search(r"--time_budget (\d+)", d["command"]).group(1))), "| {}, in a {}-second budget |"),
    # docs/results/learning.md: the learning benchmark at pinpad_cpu_v1 (benchmarks.learning).
    *((LEARNING, *row) for row in V1_ROWS.values()),
    (LEARNING, "the target of 10x the random policy (42.2)", "learning.json", lambda d: d["target_return"], "({:.1f})"),
    (LEARNING, "VTA mean is 169.6 (95% interval over seeds 76.2 to 263.0)", "learning.json",
     lambda d: (d["summary"]["vta"]["final_mean"], *d["summary"]["vta"]["final_ci95"]),
     "{:.1f} (95% interval over seeds {:.1f} to {:.1f})"),
    (LEARNING, "the RSSM mean 106.9 (-118.9 to 332.7)", "learning.json",
     lambda d: (d["summary"]["rssm"]["final_mean"], *d["summary"]["rssm"]["final_ci95"]), "{:.1f} ({:.1f} to {:.1f})"),
    (LEARNING, "RSSM seed 0 scored 35.0 and 60.0 in the periodic 4-episode evaluations at 32.5k and 37.5k env steps "
               "but 3.1 in the final one", "learning.json",
     lambda d: (*(dict(d["runs"][0]["curve"])[s] for s in (32_500, 37_500)), d["settings"]["rssm"]["eval_episodes"],
                d["runs"][0]["final_eval_return"]),
     "scored {:.1f} and {:.1f} in the periodic {}-episode evaluations at 32.5k and 37.5k env steps but {:.1f}"),
    (LEARNING, "the RSSM runs stopped at 38.5k, 1.5k steps short of VTA's", "learning.json",
     lambda d: (*{_k(r["final_step"]) for r in d["runs"] if r["dynamics"] == "rssm"},
                _k(max(r["final_step"] for r in d["runs"]) - min(r["final_step"] for r in d["runs"]))),
     "stopped at {}k, {}k steps short"),
    (LEARNING, "The training took 2.5 hours (RSSM) and 3.9 hours (VTA", "learning.json",
     lambda d: tuple(d["summary"][k]["train_s"] / 3600 for k in ("rssm", "vta")),
     "took {:.1f} hours (RSSM) and {:.1f} hours (VTA"),
    # docs/results/learning.md: one RSSM seed at pinpad_cpu_v2 (python -m experiments.train): its metrics.jsonl.
    (LEARNING, "trained for 40k env steps in 1:20 on 2 cores", f"{V2}/metrics.jsonl",
     lambda _: _h_mm(_at_steps(V2, "time", (40_000,))[0]), "in {} on 2 cores"),
    *((LEARNING, *row) for row in V2_ROWS),
    (LEARNING, "Its periodic evaluation first passed the target (42.2) at 25k env steps", f"{V2}/metrics.jsonl",
     lambda _: _k(_first_at_target(V2)), "(42.2) at {}k env steps"),
    (LEARNING, "the best of those RSSM seeds ended at 172.5 against this one's 265.0", "learning.json",
     lambda d: (max(r["final_eval_return"] for r in d["runs"] if r["dynamics"] == "rssm"),
                *_at_steps(V2, "eval_return", (40_000,))), "ended at {:.1f} against this one's {:.1f}"),
    (LEARNING, "fell from ln 5 to 0.94 by 10k env steps, while its return was still the random policy's, and to 0.24 "
               "by 40k", f"{V2}/metrics.jsonl", lambda _: _at_steps(V2, "policy_entropy", (10_000, 40_000)),
     "to {:.2f} by 10k env steps, while its return was still the random policy's, and to {:.2f} by 40k"),
    (LEARNING, "65.0% of observed frames at 25k, but had not earned reward yet (eval return 0.0)",
     "pinpad_cpu_rssm_seed1/metrics.jsonl",
     lambda _: _at_steps("pinpad_cpu_rssm_seed1", "tracking_posterior", (25_000,))
     + _at_steps("pinpad_cpu_rssm_seed1", "eval_return", (25_000,)),
     "{:.1%} of observed frames at 25k, but had not earned reward yet (eval return {:.1f})"),
    # docs/results/learning.md: the pilots and the choice of pinpad_cpu (campaign records).
    (LEARNING, "(the preset's name until 2026-12-08): `pinpad_cpu_v2` at 3.09x fewer CPU seconds per env step",
     *RATIO[1:3],
     "at {:.2f}x fewer CPU seconds"),
    *((LEARNING, f"| `{variant}` | {flags} {row}", f"runs/pinpad_three/{variant}/seed{seed}/final.json", _record_row,
       RECORD_ROW) for variant, flags, seed, row in (
        ("rssm_v3", "`pinpad_cpu_v3` (train ratio 64)", 0, "| 0 | 40k | 0.0 | 50.6% | 3.1% |"),
        ("rssm_v3", "`pinpad_cpu_v3` (train ratio 64)", 1, "| 1 | 40k | 0.0 | 35.6% | 9.4% |"),
        ("rssm_r128", "`pinpad_cpu_v3`, `--train_ratio 128`", 0, "| 0 | 40k | 0.6 | 73.8% | 15.6% |"),
        ("rssm_r128", "`pinpad_cpu_v3`, `--train_ratio 128`", 1, "| 1 | 40k | 0.0 | 56.2% | 18.8% |"),
        ("rssm_r128_ac4e-5", "`pinpad_cpu_v3`, `--train_ratio 128`, actor and critic at 4e-5", 0,
         "| 0 | 30k | 0.0 | 69.4% | 9.4% |"),
        ("rssm_r128_ac4e-5", "`pinpad_cpu_v3`, `--train_ratio 128`, actor and critic at 4e-5", 1,
         "| 1 | 30k | 0.0 | 63.1% | 18.8% |"),
        ("rssm_r128_ac4e-5_fn0", "`pinpad_cpu_v3`, `--train_ratio 128`, actor and critic at 4e-5, no KL free nats", 0,
         "| 0 | 40k | 0.0 | 70.0% | 25.0% |"),
        ("rssm", "`pinpad_cpu`: `pinpad_cpu_v1`'s model and learning rates (train ratio 128)", 0,
         "| 0 | 40k | 132.5 | 0.0% | 0.0% |"),
        ("rssm", "`pinpad_cpu`: `pinpad_cpu_v1`'s model and learning rates (train ratio 128)", 1,
         "| 1 | 40k | 0.0 | 0.0% | 0.0% |"),
        ("rssm", "`pinpad_cpu`: `pinpad_cpu_v1`'s model and learning rates (train ratio 128)", 2,
         "| 2 | 40k | 0.0 | 0.0% | 0.0% |"),
        ("rssm_v1_ent3e-3", "`pinpad_cpu` with the entropy bonus at 3e-3", 0, "| 0 | 40k | 0.0 | 0.0% | 0.0% |"),
        ("rssm_v1_ent3e-3", "`pinpad_cpu` with the entropy bonus at 3e-3", 1, "| 1 | 40k | 0.6 | 0.0% | 0.0% |"))),
    (LEARNING, "Seed 1's entropy stayed at 1.49 at 20k and 1.40 at 25k and first fell under 1.2 at 40k; it earned 0.6 "
     "over 16 fresh episodes at 40k and at most 11.2 at any periodic evaluation (0.0 and 6.2 without)",
     "actor_drive.json",
     lambda d: (*_drive(d, "rssm_v1_ent3e-3/seed1", "policy_entropy", (20_000, 25_000)),
                _k(min(row["step"] for row in read_metrics(RESULTS / ENT_SEED1) if row.get("policy_entropy", 2) < 1.2)),
                _record("rssm_v1_ent3e-3", 1)["final_eval_return"], _record("rssm_v1_ent3e-3", 1)["final_episodes"],
                max(row["eval_return"] for row in read_metrics(RESULTS / ENT_SEED1) if "eval_return" in row),
                _record("rssm", 1)["final_eval_return"],
                max(row["eval_return"] for row in read_metrics(RESULTS / V1_SEED1) if "eval_return" in row)),
     "Seed 1's entropy stayed at {:.2f} at 20k and {:.2f} at 25k and first fell under 1.2 at {}k; it earned {:.1f} "
     "over {} fresh episodes at 40k and at most {:.1f} at any periodic evaluation ({:.1f} and {:.1f} without)"),
    (DEFAULTS, "Seed 1, which earned nothing without the bonus, kept an entropy of 1.40 at 25k and earned 0.6 per "
     "episode at 40k", "actor_drive.json",
     lambda d: ("nothing" if _record("rssm", 1)["first_target_step"] is None else "the target",
                *_drive(d, "rssm_v1_ent3e-3/seed1", "policy_entropy", (25_000,)),
                _record("rssm_v1_ent3e-3", 1)["final_eval_return"]),
     "Seed 1, which earned {} without the bonus, kept an entropy of {:.2f} at 25k and earned {:.1f} per episode at "
     "40k"),
    (LEARNING, "Seed 0's policy entropy stayed at 1.46 at 20k and 1.30 at 25k (0.80 and 0.59 without), first under "
     "1.2 at 30k, and the advantage term's gradient was 2 to 18 times the entropy bonus's from 10k to 25k (9 to 78 "
     "without). It earned 0.0 over 16 fresh episodes at 40k and at most 10.0 at any periodic evaluation",
     "actor_drive.json",
     lambda d: (*_drive(d, "rssm_v1_ent3e-3/seed0", "policy_entropy", (20_000, 25_000)),
                *_drive(d, "rssm/seed0", "policy_entropy", (20_000, 25_000)),
                _k(min(row["step"] for row in read_metrics(RESULTS / ENT_RUN) if row.get("policy_entropy", 2) < 1.2)),
                *(f(_drive(d, run, "drive_ratio", AT)) for run in ("rssm_v1_ent3e-3/seed0", "rssm/seed0")
                  for f in (min, max)),
                _record("rssm_v1_ent3e-3", 0)["final_eval_return"], _record("rssm_v1_ent3e-3", 0)["final_episodes"],
                max(row["eval_return"] for row in read_metrics(RESULTS / ENT_RUN) if "eval_return" in row)),
     "stayed at {:.2f} at 20k and {:.2f} at 25k ({:.2f} and {:.2f} without), first under 1.2 at {}k, and the "
     "advantage term's gradient was {:.0f} to {:.0f} times the entropy bonus's from 10k to 25k ({:.0f} to {:.0f} "
     "without). It earned "
     "{:.1f} over {} fresh episodes at 40k and at most {:.1f} at any periodic evaluation"),
    (LEARNING, "| 3 RSSM seeds, 3 VTA seeds to 40k env steps | RSSM seed 0 at 32.5k env steps, VTA seeds 1 and 2 at "
     "40k and 35k; RSSM seeds 1 and 2, VTA seed 0 not |", f"{V1_PILOT}/final.json",
     lambda d: (len(V1_SEEDS), len(CHOSEN_VTA_SEEDS), _k(d["step"]), _k(d["first_target_step"]),
                *(_k(_record("vta", s)["first_target_step"]) for s in (1, 2)),
                "not" if all(_record(*run)["first_target_step"] is None
                             for run in (("rssm", 1), ("rssm", 2), ("vta", 0))) else "too"),
     "| {} RSSM seeds, {} VTA seeds to {}k env steps | RSSM seed 0 at {}k env steps, VTA seeds 1 and 2 at {}k and "
     "{}k; RSSM seeds 1 and 2, VTA seed 0 {} |"),
    (LEARNING, "`vta` seed 2 first passed the target at 35k env steps and ended at 156.9 over 16 fresh episodes at 40k "
     "(37 minutes, 2756 CPU s)", f"{RUNS_VTA}2/final.json",
     lambda d: (_k(d["first_target_step"]), d["final_eval_return"], d["final_episodes"], _k(d["step"]),
                d["train_wall_s"] / 60, d["train_cpu_s"]),
     "`vta` seed 2 first passed the target at {}k env steps and ended at {:.1f} over {} fresh episodes at {}k ({:.0f} "
     "minutes, {:.0f} CPU s)"),
    (LEARNING, "Seed 1's policy stayed uniform to 20k (entropy 1.61) and narrowed to 1.11 by 25k; its periodic "
     "evaluation first passed the target at its last, 45.0 at 40k, and it earned 56.2 over 16 fresh episodes at 40k "
     "(38 minutes, 2670 CPU s). Its replay held fewer rewarded steps than seed 0's at 15k (0.07 against 0.48 per "
     "1000 replayed steps), long before its first reward. With the learning benchmark's three VTA seeds at "
     "`pinpad_cpu_v1`, which all passed the target by 40k, 4 of the 5 VTA runs of this setting did",
     "actor_drive.json",
     lambda d: (*_drive(d, "vta/seed1", "policy_entropy", (20_000, 25_000)),
                "last" if _record("vta", 1)["first_target_step"] == _record("vta", 1)["step"] else "not its last",
                *_at_steps(f"{RUNS_VTA}1", "eval_return", (40_000,)), _record("vta", 1)["final_eval_return"],
                _record("vta", 1)["final_episodes"], _record("vta", 1)["train_wall_s"] / 60,
                _record("vta", 1)["train_cpu_s"], "fewer" if _drive(d, "vta/seed1", "replayed_reward", (15_000,))[0]
                < _drive(d, "vta/seed0", "replayed_reward", (15_000,))[0] else "more",
                *(1000 * _drive(d, f"vta/seed{s}", "replayed_reward", (15_000,))[0] for s in (1, 0)),
                *_chosen_learned(json.loads((RESULTS / "learning.json").read_text()))[2:]),
     "Seed 1's policy stayed uniform to 20k (entropy {:.2f}) and narrowed to {:.2f} by 25k; its periodic evaluation "
     "first passed the target at its {}, {:.1f} at 40k, and it earned {:.1f} over {} fresh episodes at 40k ({:.0f} "
     "minutes, {:.0f} CPU s). Its replay held {} rewarded steps than seed 0's at 15k ({:.2f} against {:.2f} per "
     "1000 replayed steps), long before its first reward. With the learning benchmark's three VTA seeds at "
     "`pinpad_cpu_v1`, which all passed the target by 40k, {} of the {} VTA runs of this setting did"),
    (LEARNING, "Seed 0 earned 1.2 over 16 fresh episodes at 40k and at most 11.2 at any periodic evaluation (36 "
     "minutes, 2975 CPU s). Its policy was uniform to 15k (entropy 1.61), narrowed by 20k (1.13) and 25k (0.86), to "
     "0.38 at 30k, while its reward head told reward steps from the others from 20k (0.68 against 0.0026 elsewhere)",
     "actor_drive.json",
     lambda d: (_record("vta", 0)["final_eval_return"], _record("vta", 0)["final_episodes"],
                max(row["eval_return"] for row in read_metrics(RESULTS / f"{RUNS_VTA}0") if "eval_return" in row),
                _record("vta", 0)["train_wall_s"] / 60, _record("vta", 0)["train_cpu_s"],
                *_drive(d, "vta/seed0", "policy_entropy", (15_000, 20_000, 25_000)),
                *_at_steps(f"{RUNS_VTA}0", "policy_entropy", (30_000,)),
                *_drive(d, "vta/seed0", "rew_pred_event", (20_000,)),
                *_drive(d, "vta/seed0", "rew_pred_other", (20_000,))),
     "Seed 0 earned {:.1f} over {} fresh episodes at 40k and at most {:.1f} at any periodic evaluation ({:.0f} "
     "minutes, {:.0f} CPU s). Its policy was uniform to 15k (entropy {:.2f}), narrowed by 20k ({:.2f}) and 25k "
     "({:.2f}), to {:.2f} at 30k, while its reward head told reward steps from the others from 20k ({:.2f} against "
     "{:.4f} elsewhere)"),
    *((LEARNING, f"| `vta` | `pinpad_cpu` with VTA dynamics {row}", f"{RUNS_VTA}{seed}/final.json", _record_row,
       "| `vta` | `pinpad_cpu` with VTA dynamics " + RECORD_ROW)
      for seed, row in ((0, "| 0 | 40k | 1.2 | 0.0% | 0.0% |"), (1, "| 1 | 40k | 56.2 | 0.0% | 0.0% |"),
                        (2, "| 2 | 40k | 156.9 | 0.6% | 3.1% |"))),
    (LEARNING, "| `vta_long` | `vta` seed 1 continued from its 40k checkpoint | 1 | 80k | 268.8 | 11.9% | 6.2% |",
     f"{LONG}/final.json",
     lambda d: _record_row(d), "| `vta_long` | `vta` seed 1 continued from its 40k checkpoint " + RECORD_ROW),
    *((page, claim, f"{LONG}/final.json", lambda d: _held(d), form) for page, claim, form in (
        (LEARNING, "earned 268.8 over 16 fresh episodes at 80k, 96% of its best periodic evaluation (278.8 at 77.5k, "
         "the scripted solver's 278.8 level)",
         "earned {:.1f} over {} fresh episodes at {}k, {:.0%} of its best periodic "
         "evaluation ({:.1f} at {}k, the scripted solver's {:.1f} level)"),
        (README, "| 268.8, 96% of its best periodic evaluation |",
         "| {0:.1f}, {3:.0%} of its best periodic evaluation |"))),
    (LEARNING, "Its policy entropy fell steadily, 0.78 at 40k to 0.21 at 80k, and its return scale rose from 1.13 to "
     "10.81", f"{LONG}/metrics.jsonl",
     lambda _: (*_at_steps(LONG, "policy_entropy", (40_000, 80_000)),
                *_at_steps(LONG, "return_scale", (40_000, 80_000))),
     "Its policy entropy fell steadily, {:.2f} at 40k to {:.2f} at 80k, and its return scale rose from {:.2f} to "
     "{:.2f}"),
    (LEARNING, "(11.9% of observed frames at 80k, 0.0% at 40k)", f"{LONG}/final.json",
     lambda d: (d["tracking"]["posterior"], _record("vta", 1)["tracking"]["posterior"]),
     "({:.1%} of observed frames at 80k, {:.1%} at 40k)"),
    (DEFAULTS, "(of the two VTA pilots, seed 0 earned 1.2 per episode at 40k, its policy narrowed to 0.86 by 25k, and "
     "seed 1 56.2, its policy uniform to 20k)", "actor_drive.json",
     lambda d: (_record("vta", 0)["final_eval_return"], *_drive(d, "vta/seed0", "policy_entropy", (25_000,)),
                _record("vta", 1)["final_eval_return"],
                "uniform" if _drive(d, "vta/seed1", "policy_entropy", (20_000,))[0] > math.log(5) - 0.01
                else "narrowed"),
     "(of the two VTA pilots, seed 0 earned {:.1f} per episode at 40k, its policy narrowed to {:.2f} by 25k, and "
     "seed 1 {:.1f}, its policy {} to 20k)"),
    (LEARNING, "Seed 0's periodic evaluation first passed the target at 32.5k env steps (98.8), and it ended at 132.5 "
     "over 16 fresh episodes, in 65 minutes of training (3866 CPU s, 0.097 per env step", f"{V1_PILOT}/final.json",
     lambda d: (_k(d["first_target_step"]), *_at_steps(V1_PILOT, "eval_return", (d["first_target_step"],)),
                d["final_eval_return"], d["final_episodes"], d["train_wall_s"] / 60, d["train_cpu_s"],
                d["train_cpu_s"] / d["step"]),
     "first passed the target at {}k env steps ({:.1f}), and it ended at {:.1f} over {} fresh episodes, in "
     "{:.0f} minutes of training ({:.0f} CPU s, {:.3f} per env step"),
    (LEARNING, "Seed 1 earned 0.0 over 16 fresh episodes at 40k and at most 6.2 at any periodic evaluation, the random "
     "policy's level (52 minutes, 4186 CPU s, 0.105 per env step)", f"{V1_SEED1}/final.json",
     lambda d: (d["final_eval_return"], d["final_episodes"], _k(d["step"]),
                max(row["eval_return"] for row in read_metrics(RESULTS / V1_SEED1) if "eval_return" in row),
                d["train_wall_s"] / 60, d["train_cpu_s"], d["train_cpu_s"] / d["step"]),
     "earned {:.1f} over {} fresh episodes at {}k and at most {:.1f} at any periodic evaluation, the random "
     "policy's level ({:.0f} minutes, {:.0f} CPU s, {:.3f} per env step)"),
    (LEARNING, "Seed 2 earned 0.0 over 16 fresh episodes at 40k and at most 6.2 at any periodic evaluation (28 "
     "minutes, 1787 CPU s, 0.045 per env step: less than half seeds 0 and 1's", f"{V1_SEED2}/final.json",
     lambda d: (d["final_eval_return"], d["final_episodes"], _k(d["step"]),
                max(row["eval_return"] for row in read_metrics(RESULTS / V1_SEED2) if "eval_return" in row),
                d["train_wall_s"] / 60, d["train_cpu_s"], d["train_cpu_s"] / d["step"],
                "less than half" if 2 * d["train_cpu_s"] < min(_record("rssm", s)["train_cpu_s"] for s in (0, 1))
                else "not half"),
     "earned {:.1f} over {} fresh episodes at {}k and at most {:.1f} at any periodic evaluation ({:.0f} minutes, "
     "{:.0f} CPU s, {:.3f} per env step: {} seeds 0 and 1's"),
    (LEARNING, "(entropy 1.50, 1.60 and 1.60, ln 5 is 1.61), narrowed by 20k (0.80, 0.96 and 1.19) and 25k (0.59, 0.80 "
     "and 1.01)", f"{V1_SEED2}/metrics.jsonl",
     lambda _: tuple(v for step in (15_000, 20_000, 25_000) for run in (V1_PILOT, V1_SEED1, V1_SEED2)
                     for v in _at_steps(run, "policy_entropy", (step,))),
     "(entropy {:.2f}, {:.2f} and {:.2f}, ln 5 is 1.61), narrowed by 20k ({:.2f}, {:.2f} and {:.2f}) and 25k ({:.2f}, "
     "{:.2f} and {:.2f})"),
    (LEARNING, "imagined reward 0.0029, 0.0037 and 0.0020 per step at 25k. Then seed 0 found the sequence (28.8 at "
     "30k, its imagined reward 0.0065 per step and rising) and seeds 1 and 2 did not (0.0017 and 0.0028 per step at "
     "40k, entropy 0.57 and 0.55). The seed that narrowed last (seed 2) is one that did not learn",
     f"{V1_SEED2}/metrics.jsonl",
     lambda _: (*(v for run in (V1_PILOT, V1_SEED1, V1_SEED2) for v in _at_steps(run, "imag_reward", (25_000,))),
                *_at_steps(V1_PILOT, "eval_return", (30_000,)), *_at_steps(V1_PILOT, "imag_reward", (30_000,)),
                *_at_steps(V1_SEED1, "imag_reward", (40_000,)), *_at_steps(V1_SEED2, "imag_reward", (40_000,)),
                *_at_steps(V1_SEED1, "policy_entropy", (40_000,)), *_at_steps(V1_SEED2, "policy_entropy", (40_000,)),
                _narrowed_last(), "did not" if _record("rssm", _narrowed_last())["first_target_step"] is None
                else "did"),
     "imagined reward {:.4f}, {:.4f} and {:.4f} per step at 25k. Then seed 0 found the sequence ({:.1f} at 30k, "
     "its imagined reward {:.4f} per step and rising) and seeds 1 and 2 did not ({:.4f} and {:.4f} per step at 40k, "
     "entropy {:.2f} and {:.2f}). The seed that narrowed last (seed {}) is one that {} learn"),
    *((LEARNING, *row) for row in PILOT_UPDATES),
    # docs/results/learning.md: the released agent and the GPU setting.
    (LEARNING, "scores 120.0 over 16 fresh episodes, against the random policy's 3.75 and the scripted solver's 283.1",
     PROVENANCE, lambda d: (d["return"], d["episodes"], d["random_return"], d["scripted_return"]),
     "scores {:.1f} over {} fresh episodes, against the random policy's {:g} and the scripted solver's {:.1f}"),
    (LEARNING, "In the one episode `make demo` plays it earns 150", "released_play.json", lambda d: d["return"],
     "it earns {:g}"),
    (LEARNING, "shows its first 150 steps", "released_play.json", lambda d: d["frames"], "first {} steps"),
    (LEARNING, "return 2.5 over 16 episodes, tracking 0% observed and at imagined steps 1, 5, 15 and 45",
     "release_vta/learning.json",
     lambda d: (d["runs"][0]["final_eval_return"], d["final_episodes"], _tracked_nowhere(d)),
     "return {:.1f} over {} episodes, tracking {:.0%} observed"),
    (LEARNING, "23,552 env steps in its 350-second budget and earned nothing: mean return 2.2 over the 8 seeds",
     "gpu/learning.json",
     lambda d: (max(r["final_step"] for r in d["runs"]), int(re.search(r"--time_budget (\d+)", d["command"]).group(1)),
                "nothing" if d["summary"]["rssm"]["seeds_at_target"] == 0 else "reward",
                d["summary"]["rssm"]["final_mean"], d["summary"]["rssm"]["seeds"]),
     "{:,} env steps in its {}-second budget and earned {}: mean return {:.1f} over the {} seeds"),
    (LEARNING, *V2_ENV_STEP),

    # docs/results/world_model.md.
    (WORLD, "the released VTA agent's run at 40k env steps tracks it in 0% of observed frames",
     "release_vta/learning.json", lambda d: (_k(d["runs"][0]["final_step"]), _tracked_nowhere(d)),
     "run at {}k env steps tracks it in {:.0%}"),
    (WORLD, "tracks the agent in 0% of observed frames and at every imagined step, at 40k env steps",
     "release_vta/learning.json", lambda d: (_tracked_nowhere(d), _k(d["runs"][0]["final_step"])),
     "tracks the agent in {:.0%} of observed frames and at every imagined step, at {}k env steps"),
    (WORLD, "| yes: 91% of observed frames at 40k env steps |", f"{V2}/openloop.json",
     lambda d: (d["tracking"]["posterior"], _k(d["step"])), "| yes: {:.0%} of observed frames at {}k env steps |"),
    (WORLD, "4096 random-policy frames: 1500 LaProp updates, the share of 256 held-out frames", "agent_drawing.json",
     lambda d: (d["train_frames"], d["updates"], d["test_frames"]),
     "{} random-policy frames: {} LaProp updates, the share of {} held-out frames"),
    *((WORLD, *row) for row in DRAWING_ROWS),
    (WORLD, "lets the agent through (88.7%), its straight-through one-hot sample does not (0%)", "agent_drawing.json",
     lambda d: _drawn(d, "depth16_lr3e-4_latent_probs", "depth16_lr3e-4_latent"),
     "through ({:.1%}), its straight-through one-hot sample does not ({:.0%})"),
    # The sampled latent made sharper (benchmarks.agent_drawing, 3000 updates).
    (WORLD, "carries the agent in 0% of held-out frames as it is, 82.0% with the head's", "agent_drawing_sharp.json",
     lambda d: _drawn(d, "depth16_lr3e-4_latent", "depth16_lr3e-4_latent_x3"),
     "carries the agent in {:.0%} of held-out frames as it is, {:.1%} with the head's"),
    (WORLD, "33.6% already at update 2000) and 69.5%", "agent_drawing_sharp.json",
     lambda d: (_drawn_at(d, "depth16_lr3e-4_latent_x3", 2000), *_drawn(d, "depth16_lr3e-4_latent_init3")),
     "{:.1%} already at update 2000) and {:.1%}"),
    (WORLD, "at depth 4 the scaled latent reaches 2.3%", "agent_drawing_sharp.json",
     lambda d: _drawn(d, "depth4_lr3e-4_latent_x3"), "at depth 4 the scaled latent reaches {:.1%}"),
    (WORLD, "Over 3000 updates", "agent_drawing_sharp.json", lambda d: d["updates"], "Over {} updates"),
    # The whole world model on random-policy sequences (benchmarks.world_model_drawing, 2000 updates).
    (WORLD, "(2000 updates of the preset's 16x32 steps; posterior reconstructions of 8 held-out episodes of 64 steps)",
     "world_model_drawing_kl.json", lambda d: (d["updates"], d["test_episodes"], d["episode_steps"]),
     "({} updates of the preset's 16x32 steps; posterior reconstructions of {} held-out episodes of {} steps)"),
    (WORLD, "The agent is drawn in 0.2% of held-out frames as it is, 86.5% without the KL terms",
     "world_model_drawing_kl.json", lambda d: _world_drawn(d, "depth16_x3", "depth16_x3_no_kl"),
     "The agent is drawn in {:.1%} of held-out frames as it is, {:.1%} without the KL terms"),
    (WORLD, "and 90.4% with the", "world_model_drawing_rec16.json", lambda d: _world_drawn(d, "depth16_x3_rec16"),
     "and {:.1%} with the"),
    (WORLD, "44.5% already at update 1500", "world_model_drawing_rec16.json",
     lambda d: 100 * _world_drawn_at(d, "depth16_x3_rec16", 1500), "{:.1f}% already at update 1500"),
    (WORLD, "alone (logits as they are) the agent is drawn in 27.5%", "world_model_drawing_no_x3.json",
     lambda d: _world_drawn(d, "depth16_rec16"), "alone (logits as they are) the agent is drawn in {:.1%}"),
    # The four changes in an agent (pinpad_cpu_v2) and pinpad_cpu's encoder.
    (WORLD, *V2_OPENLOOP),
    (WORLD, "at 10k it tracks 17.5% of observed frames and 0.0% at imagined step 15", f"{V2}/metrics.jsonl",
     lambda _: _at_steps(V2, "tracking_posterior", (10_000,)) + _at_steps(V2, "tracking_imagined_15", (10_000,)),
     "at 10k it tracks {:.1%} of observed frames and {:.1%} at imagined step 15"),
    (WORLD, "the encoder took 50% of an update's CPU time", "cost_profile.json", lambda d: _part(d, "encoder")[2],
     "the encoder took {:.0f}% of an update's"),
    (WORLD, "| `pinpad_cpu_v2`, the `--rec_scale 16` world model above | 0% | 44.5% | 90.4% |",
     *ENCODER_ROWS["rec16"][1:]),
    (WORLD, *ENCODER_ROWS["enc"]),

    # docs/results/boundaries.md: the demo's short run (make demo).
    (BOUNDARIES, "READs fall on pad events 8.27 times as often as chance, more often than the largest pixel changes",
     "demo_boundary_eval.json", lambda d: _pad(d, "model", "lift_over_event_rate"), "pad events {:.2f} times"),
    *((BOUNDARIES, *row) for row in DEMO_ROWS),
    (BOUNDARIES, "READs fall on pad events 8.27 times as often as READs placed at random", "demo_boundary_eval.json",
     lambda d: _pad(d, "model", "lift_over_event_rate"), "pad events {:.2f} times"),
    (BOUNDARIES, "the largest pixel changes at the same count (7.74; the intervals do not overlap)",
     "demo_boundary_eval.json",
     lambda d: (_pad(d, "pixel_change", "lift_over_event_rate"),
                "do not overlap" if _pad(d, "model", "lift_over_event_rate_ci")[0]
                > _pad(d, "pixel_change", "lift_over_event_rate_ci")[1] else "overlap"), "({:.2f}; the intervals {})"),
    (BOUNDARIES, "p = (1/499)^20 (499 scored steps, 20 episodes)", "demo_boundary_eval.json",
     lambda d: (d["scored_steps"] // d["episodes"], d["episodes"], d["scored_steps"] // d["episodes"], d["episodes"]),
     "p = (1/{})^{} ({} scored steps, {} episodes)"),
    # docs/results/boundaries.md: the committed study (python -m experiments.study, 5000 env steps).
    (BOUNDARIES, "RSSM and four VTA conditions, 3 seeds each, 5000 env steps at `pinpad_cpu_v1`", "study.json",
     lambda d: (NUMBERS[len(d["conditions"]) - 1], len(d["seeds"]), d["steps"]),
     "RSSM and {} VTA conditions, {} seeds each, {} env"),
    (BOUNDARIES, "3 seeds each, 5000 env steps at the first CPU preset", "study.json",
     lambda d: (len(d["seeds"]), d["steps"]), "{} seeds each, {} env steps"),
    (BOUNDARIES, "judged on 8 scripted episodes", "study.json",
     lambda d: d["evaluation"]["scripted"][d["evaluation"]["scripted"].index("--episodes") + 1],
     "judged on {} scripted episodes"),
    (BOUNDARIES, "(stratified p at most 10^-574, circular-shift p 0.001)", "study.json",
     lambda d: (max(r["scripted"]["pad/model/hypergeom_log10_p"] for r in d["runs"]),
                max(r["scripted"]["pad/model/circular_shift_p"] for r in d["runs"])),
     "(stratified p at most 10^{:.0f}, circular-shift p {:g})"),
    *((BOUNDARIES, *row) for row in STUDY_ROWS),

    # docs/results/speed.md.
    (SPEED, "| 264,582 env steps/s, 178x the gymnasium adapter stepped one env at a time |", "env_throughput.json",
     _jitted_env_rate, "{:,.0f} env steps/s, {:.0f}x"),
    (SPEED, "| 2.36x faster at size1m, 1.96x at size12m |", "official_ratio.json",
     _ratios, "{:.2f}x faster at size1m, {:.2f}x at size12m"),
    (SPEED, "| 1.43x (debug), 1.36x (size1m) |", "dynamics_cost.json",
     _ratios, "{:.2f}x (debug), {:.2f}x (size1m)"),
    (SPEED, "| 0.091 CPU s per env step, 3.09x fewer than `pinpad_cpu_v2` |", "cost_profile.json",
     lambda d: (d["runs"]["enc_d8_k3_ratio64"]["env_step_total"]["cpu_s"], _profile_row(d, "enc_d8_k3_ratio64")[3]),
     "| {:.3f} CPU s per env step, {:.2f}x fewer"),
    (SPEED, "| 60.1 env steps/s, 84.4 with `--scan_unroll 5` |", "gpu/gpu_check.md",
     lambda text: tuple(float(re.search(rf"\| {row} \| 1 +\| ([\d.]+)", text).group(1))
                        for row in ("rssm", "rssm, scan unroll 5")), "{:.1f} env steps/s, {:.1f} with"),
    (SPEED, "- Pinpad: 264,582 env steps/s with `jit + vmap + scan` at batch 1024 on a 2-core CPU, 178x the",
     "env_throughput.json", lambda d: next((r["env_steps_per_s"], r["ratio"]) for r in d["rows"]
                                          if r["method"] == "jit + vmap + scan" and r["batch"] == 1024),
     "{:,.0f} env steps/s with `jit + vmap + scan` at batch 1024 on a 2-core CPU, {:.0f}x"),
    (SPEED, "2.27 s against the official's 5.35 s at", "official_ratio.json",
     lambda d: (d["rows"][0]["ours_s"], _official(d["rows"][0])), "{:.2f} s against the official's {:.2f} s"),
    (SPEED, "size1m (2.36x), 10.2 s against 20.0 s at size12m (1.96x)", "official_ratio.json",
     lambda d: (d["rows"][0]["ratio"], d["rows"][1]["ours_s"], _official(d["rows"][1]), d["rows"][1]["ratio"]),
     "size1m ({:.2f}x), {:.1f} s against {:.1f} s at size12m ({:.2f}x)"),
    (SPEED, "whose filter gradients were slow (20.0 s before)", "official_ratio.json",
     lambda d: d["rows"][1]["ours_xla_defaults_s"], "({:.1f} s before)"),
    (SPEED, "- A VTA update costs 1.43x (debug) and 1.36x (size1m) an RSSM update", "dynamics_cost.json",
     _ratios, "{:.2f}x (debug) and {:.2f}x (size1m)"),
    (SPEED, "costs 0.091 CPU s per env step on 2 cores, 3.09x fewer than at", "cost_profile.json",
     lambda d: (d["runs"]["enc_d8_k3_ratio64"]["env_step_total"]["cpu_s"], _profile_row(d, "enc_d8_k3_ratio64")[3]),
     "costs {:.3f} CPU s per env step on 2 cores, {:.2f}x fewer"),
    (SPEED, "(`pinpad_cpu_v2`, 0.282)", "cost_profile.json", lambda d: d["runs"]["today"]["env_step_total"]["cpu_s"],
     "(`pinpad_cpu_v2`, {:.3f})"),
    (SPEED, *V2_ENV_STEP),
    (SPEED, "and the encoder 50% of an update", "cost_profile.json", lambda d: _part(d, "encoder")[2],
     "the encoder {:.0f}% of an update"),
    (SPEED, "whole run at `pinpad_cpu_v3` took 0.087 CPU s per env step", f"{PILOT}/final.json",
     lambda d: d["train_cpu_s"] / d["step"], "took {:.3f} CPU s per env step"),
    (SPEED, "makes 60.1 env steps/s, 84.4 with `--scan_unroll 5`", "gpu/gpu_check.md",
     lambda text: tuple(float(re.search(rf"\| {row} \| 1 +\| ([\d.]+)", text).group(1))
                        for row in ("rssm", "rssm, scan unroll 5")), "{:.1f} env steps/s, {:.1f} with"),

    # docs/results/speed.md: the test suite, from benchmarks.suite_cost.
    (SPEED, "541 s wall, 954 s user CPU: 0.89x the user CPU", "suite_cost.json",
     lambda d: (d["sides"]["head"]["wall_s"], d["sides"]["head"]["user_s"], d["head_over_baseline"]["user_s"]),
     "{:.0f} s wall, {:.0f} s user CPU: {:.2f}x the user CPU"),
    (SPEED, "884 tests in 541 s of wall time and 954 s of user CPU on an idle 2-core machine, against 602 s and 1070 s "
     "for the commit before", "suite_cost.json",
     lambda d: (d["sides"]["head"]["passed"] + d["sides"]["head"]["failed"], d["sides"]["head"]["wall_s"],
                d["sides"]["head"]["user_s"], d["sides"]["baseline"]["wall_s"], d["sides"]["baseline"]["user_s"]),
     "{} tests in {:.0f} s of wall time and {:.0f} s of user CPU on an idle 2-core machine, against {:.0f} s and "
     "{:.0f} s for the commit before"),
    (SPEED, "measured in the same run (0.89x the user CPU)", "suite_cost.json",
     lambda d: d["head_over_baseline"]["user_s"], "measured in the same run ({:.2f}x the user CPU)"),
    # docs/speed.md: the cost profile (benchmarks.cost_profile) at pinpad_cpu_v2 and its candidates.
    (TABLES, "| `today` | (none) | 1.107 | 0.282 | 3.55 | 1.00x |", "cost_profile.json",
     lambda d: _profile_row(d, "today"), PROFILE_ROW),
    (TABLES, "| `enc_k3` | `--enc_kernel 3` | 0.980 | 0.249 | 4.02 | 1.13x |", "cost_profile.json",
     lambda d: _profile_row(d, "enc_k3"), PROFILE_ROW),
    (TABLES, "| `enc_d8_k3` | `--enc_depth 8 --enc_kernel 3` | 0.754 | 0.192 | 5.21 | 1.47x |", "cost_profile.json",
     lambda d: _profile_row(d, "enc_d8_k3"), PROFILE_ROW),
    (TABLES, "| `depth8_enc_k3` | `--depth 8 --enc_kernel 3` (the decoder at 8 too) | 0.543 | 0.139 | 7.22 | 2.03x |",
     "cost_profile.json", lambda d: _profile_row(d, "depth8_enc_k3"), PROFILE_ROW),
    (TABLES, "| `bf16` | `--precision bf16` | 1.189 | 0.303 | 3.30 | 0.93x |", "cost_profile.json",
     lambda d: _profile_row(d, "bf16"), PROFILE_ROW),
    (TABLES, "| `ratio64` | `--train_ratio 64` | 1.258 | 0.162 | 6.18 | 1.74x |", "cost_profile.json",
     lambda d: _profile_row(d, "ratio64"), PROFILE_ROW),
    (TABLES, "| **`enc_d8_k3_ratio64`, now `pinpad_cpu_v3`** | `--enc_depth 8 --enc_kernel 3 --train_ratio 64` "
             "| 0.705 | "
                   "0.091 | 10.97 | **3.09x** |", "cost_profile.json", lambda d: _profile_row(d, "enc_d8_k3_ratio64"),
     " | {:.3f} | {:.3f} | {:.2f} | **{:.2f}x** |"),
    (TABLES, "| `depth4` | `--depth 4` (`pinpad_cpu_v1`'s CNN: both at 4 channels, 5x5) | 0.430 | 0.111 | 9.00 "
             "| 2.54x |",
     "cost_profile.json", lambda d: _profile_row(d, "depth4"), PROFILE_ROW),
    (TABLES, "the same update program measured 1.107 and 1.258 CPU s", "cost_profile.json",
     lambda d: tuple(d["runs"][name]["pieces"]["update"]["cpu_s"] for name in ("today", "ratio64")),
     "measured {:.3f} and {:.3f} CPU s"),
    (TABLES, "(the `depth4` row, 2.54x;", "cost_profile.json", lambda d: _profile_row(d, "depth4")[3], "{:.2f}x"),
    # docs/dreamer_defaults.md: the CPU preset's costs, from the same profile.
    (DEFAULTS, "(named `pinpad_cpu` until 2026-12-08), `pinpad_cpu_v2` at 3.09x its env steps per CPU second",
     *RATIO[1:3],
     "at {:.2f}x its env steps per CPU second"),
    (DEFAULTS, "the update is 98% of an env step's CPU time", "cost_profile.json",
     lambda d: 100 * d["runs"]["today"]["env_step"]["update"]["cpu_s"] / d["runs"]["today"]["env_step_total"]["cpu_s"],
     "the update is {:.0f}%"),
    (DEFAULTS, "bf16 is slower: 0.93x the env steps per CPU second", "cost_profile.json",
     lambda d: _profile_row(d, "bf16")[3], "bf16 is slower: {:.2f}x"),
    # docs/dreamer_defaults.md: what moves the actor, from benchmarks.actor_drive.
    (DEFAULTS, "the advantage term's gradient fell to 2 to 18 times the entropy bonus's from 10k to 25k, and the "
     "policy entropy was 1.46 at 20k and 1.30 at 25k. But seed 0 earned 0.0 over 16 episodes at 40k",
     "actor_drive.json",
     lambda d: (min(_drive(d, "rssm_v1_ent3e-3/seed0", "drive_ratio", AT)),
                max(_drive(d, "rssm_v1_ent3e-3/seed0", "drive_ratio", AT)),
                *_drive(d, "rssm_v1_ent3e-3/seed0", "policy_entropy", (20_000, 25_000)),
                _record("rssm_v1_ent3e-3", 0)["final_eval_return"], _record("rssm_v1_ent3e-3", 0)["final_episodes"]),
     "fell to {:.0f} to {:.0f} times the entropy bonus's from 10k to 25k, and the policy entropy was {:.2f} at 20k and "
     "{:.2f} at 25k. But seed 0 earned {:.1f} over {} episodes at 40k"),
    (DEFAULTS, "(at replayed reward steps 0.008 at 15k, 2.0 at 25k)", "actor_drive.json",
     lambda d: _drive(d, "rssm_v1_ent3e-3/seed0", "rew_pred_event", (15_000, 25_000)),
     "(at replayed reward steps {:.3f} at 15k, {:.1f} at 25k)"),
    (DEFAULTS, "at 15k they predicted 0.008, 0.004 and 0.003 at replayed reward steps against 0.0023 to 0.0025 "
     "elsewhere", "actor_drive.json",
     lambda d: (*_v1_drive(d, "rew_pred_event", (15_000,)), *(f(_v1_drive(d, "rew_pred_other", (15_000,)))
                                                              for f in (min, max))),
     "at 15k they predicted {:.3f}, {:.3f} and {:.3f} at replayed reward steps against {:.4f} to {:.4f} elsewhere"),
    (DEFAULTS, "narrowed to 0.80, 0.96 and 1.19 by 20k, the advantage term's gradient 9 to 85 times the entropy "
     "bonus's from 10k to 25k, the imagined reward under 0.005 per step", "actor_drive.json",
     lambda d: (*_v1_drive(d, "policy_entropy", (20_000,)), min(_v1_drive(d, "drive_ratio", AT)),
                max(_v1_drive(d, "drive_ratio", AT)), math.ceil(1000 * max(_v1_drive(d, "imag_reward", AT))) / 1000),
     "narrowed to {:.2f}, {:.2f} and {:.2f} by 20k, the advantage term's gradient {:.0f} to {:.0f} times the entropy "
     "bonus's from 10k to 25k, the imagined reward under {:.3f} per step"),
    *((page, claim, f"{V1_PILOT}/final.json", lambda _: _v1_learned(), form) for page, claim, form in (
        (LEARNING, "So this setting learns in 1 of 3 seeds", "So this setting learns in {} of {} seeds"),
        (DEFAULTS, "This setting learns in 1 of 3 seeds", "This setting learns in {} of {} seeds"),
        (DEFAULTS, "(1 of 3 at `rssm`", "({} of {} at `rssm`"))),
    (LEARNING, "its configuration differs from the learning benchmark's RSSM runs only in eval_episodes and save_every "
     "(8 evaluation episodes instead of 4, a checkpoint every 2500 env steps)", "learning.json",
     lambda d: (*_v1_differs(d), _record_config("rssm", 0)["eval_episodes"], d["settings"]["rssm"]["eval_episodes"],
                _record_config("rssm", 0)["save_every"]),
     "differs from the learning benchmark's RSSM runs only in {} and {} ({} evaluation episodes instead of {}, a "
     "checkpoint every {} env steps)"),
    (LEARNING, "Over the six RSSM runs of this setting, 3 reached the target by 40k env steps", "learning.json",
     lambda d: (NUMBERS[len(V1_SEEDS) + d["summary"]["rssm"]["seeds"]], _v1_learned()[0] +
                d["summary"]["rssm"]["seeds_at_target"]),
     "Over the {} RSSM runs of this setting, {} reached the target by 40k env steps"),
    (DEFAULTS, "`rssm`\n  differs from the benchmark's runs only in eval_episodes and save_every, so 3 of 6 RSSM "
     "runs of it learned", "learning.json",
     lambda d: (*_v1_differs(d), _v1_learned()[0] + d["summary"]["rssm"]["seeds_at_target"],
                len(V1_SEEDS) + d["summary"]["rssm"]["seeds"]),
     "`rssm`\n  differs from the benchmark's runs only in {} and {}, so {} of {} RSSM runs of it learned"),
    (LEARNING, "3 of 6 RSSM runs and 4 of 5 VTA runs reached the target by 40k env steps, against none of the 7 runs "
     "at `pinpad_cpu_v3`", "learning.json",
     lambda d: (*_chosen_learned(d), NUMBERS[_v3_learned()[0]], _v3_learned()[1]),
     "{} of {} RSSM runs and {} of {} VTA runs reached the target by 40k env steps, against {} of the {} runs at "
     "`pinpad_cpu_v3`"),
    *((page, claim, "learning.json", lambda d: (*_chosen_learned(d), *_v3_learned()), form) for page, claim, form in (
        (DEFAULTS, "3 of 6 RSSM runs and 4 of 5 VTA runs by 40k env steps", "{} of {} RSSM runs and {} of {} VTA runs "
         "by 40k env steps"),
        (DEFAULTS, "against 0 of 7 runs at `pinpad_cpu_v3`", "against {4} of {5} runs at `pinpad_cpu_v3`"))),
    *((page, claim, f"{V1_PILOT}/final.json", lambda _: (*_earliest_chosen()[1:], _k(_earliest_chosen()[0])), form)
      for page, claim, form in (
        (LEARNING, "the earliest record of this setting to reach it (RSSM seed 0) did at 32.5k",
         "the earliest record of this setting to reach it ({} seed {}) did at {}"),
        (DEFAULTS, "the earliest record to reach it (RSSM seed 0) did at 32.5k",
         "the earliest record to reach it ({} seed {}) did at {}"))),
    (DEFAULTS, "was 0.40, 0.38 and 0.50 per 1000 at 20k env steps for seeds 0, 1 and 2 of `pinpad_cpu`, and 0.28, 0.25 "
     "and 0.35 at 25k, about the random policy's 0.42 (its 4.2 per 1000-step episode, 10 per reward): seed 0, the one "
     "that learned, had seen no more", "actor_drive.json",
     lambda d: (*(1000 * v for v in _v1_drive(d, "replayed_reward", (20_000, 25_000))),
                _record("rssm", 0)["random_return"] / REWARD * 1000 / _record_config("rssm", 0)["time_limit"],
                _record("rssm", 0)["random_return"], REWARD, _v1_learned_seeds(),
                "no more" if _learner_saw_no_more(d) else "more"),
     "was {:.2f}, {:.2f} and {:.2f} per 1000 at 20k env steps for seeds 0, 1 and 2 of `pinpad_cpu`, and {:.2f}, {:.2f} "
     "and {:.2f} at 25k, about the random policy's {:.2f} (its {:.1f} per 1000-step episode, {:.0f} per reward): seed "
     "{}, the one that learned, had seen {}"),
    (DEFAULTS, "those that learned include the extremes: RSSM seed 0 narrowed first (entropy 0.80 at 20k), VTA seed 1 "
     "last (1.61, uniform), and VTA seed 1's replay held the least reward (0.07 per 1000 replayed steps at 15k)",
     "actor_drive_chosen.json", lambda d: _extremes(d),
     "{} the extremes: {} seed {} narrowed first (entropy {:.2f} at 20k), {} seed {} last "
     "({:.2f}, uniform), and {} seed {}'s replay held the least reward ({:.2f} per 1000 replayed steps at 15k)"),
    (DEFAULTS, "and the seed that narrowed last (seed 2) is one that did not", "actor_drive.json",
     lambda _: (_narrowed_last(), "did not" if _record("rssm", _narrowed_last())["first_target_step"] is None
                else "did"), "and the seed that narrowed last (seed {}) is one that {}"),
    (TABLES, "the tracking probe 0.0026 (6.4 CPU s every 2500 env steps), the periodic\nevaluation 0.0017 (8 episodes "
     "of 1000 steps, 4.2 CPU s every 2500), acting 0.0005", "cost_profile.json",
     lambda d: tuple(x for piece in ("tracking probe", "evaluation") for x in (
         d["runs"]["today"]["env_step"][piece]["cpu_s"], d["runs"]["today"]["pieces"][piece]["cpu_s"]))
     + (d["runs"]["today"]["env_step"]["acting"]["cpu_s"],),
     "the tracking probe {:.4f} ({:.1f} CPU s every 2500 env steps), the periodic\nevaluation {:.4f} (8 episodes of "
     "1000 steps, {:.1f} CPU s every 2500), acting {:.4f}"),
    *((TABLES, f"| {name} {row}", "cost_profile.json", lambda d, n=name: _part(d, n), PART_ROW) for name, row in (
        ("reward and continue heads", "| 0.009 | 0.005 | 1% |"),
        ("optimiser and slow critic", "| 0.012 | 0.008 | 1% |"),
        ("replay value", "| 0.003 | 0.002 | 0% |"), ("replay sample and refresh", "| 0.001 | 0.001 | 0% |"))),
    (TABLES, "| encoder (two 5x5 convs, 3 -> 64 -> 64 channels, on 512 frames) | 0.568 | 0.297 | 50% |",
     "cost_profile.json", lambda d: _part(d, "encoder"), PART_ROW),
    (TABLES, "| decoder (reconstruction loss) | 0.340 | 0.180 | 30% |", "cost_profile.json",
     lambda d: _part(d, "decoder"), PART_ROW),
    (TABLES, "| imagination, actor and critic (15 steps from 128 starts) | 0.123 | 0.074 | 11% |", "cost_profile.json",
     lambda d: _part(d, "imagination, actor and critic"), PART_ROW),
    (TABLES, "| posterior scan and KL (32 steps) | 0.063 | 0.044 | 6% |", "cost_profile.json",
     lambda d: _part(d, "posterior scan and KL"), PART_ROW),
    (TABLES, "| whole update (the parts alone sum to 1.118) | 1.125 | 0.605 | 100% |", "cost_profile.json",
     lambda d: (d["parts"]["whole update"]["parts_sum_cpu_s"], d["parts"]["whole update"]["cpu_s"],
                d["parts"]["whole update"]["wall_s"]), "(the parts alone sum to {:.3f}) | {:.3f} | {:.3f} |"),
    (TABLES, *ENCODER_ROWS["enc"]),
    (TABLES, "(the same world model as `depth16_x3_rec16` on `pinpad_cpu_v1`, 2026-12-01) | 0% | 44.5% | 90.4% |",
     *ENCODER_ROWS["rec16"][1:]),
    *((TABLES, *row) for row in PILOT_UPDATES),
    (TABLES, "Its whole run took 0.087 CPU s per env step", f"{PILOT}/final.json",
     lambda d: d["train_cpu_s"] / d["step"], "took {:.3f} CPU s per env step"),
]


def _flat(text):
    """Text with every run of white space as one space: a quote may wrap where its page wraps."""
    return " ".join(text.split())


def _source(name):
    return REPO / name if name == PROVENANCE else RESULTS / name


@pytest.mark.parametrize("page, quote, name, values, form", FIGURES,
                         ids=[f"{f[0]}: {f[2]}: {f[1][:40]}" for f in FIGURES])
def test_the_page_quotes_the_results_file(page, quote, name, values, form):
    text = _source(name).read_text()
    written = values(json.loads(text) if name.endswith(".json") else text)
    assert _flat(quote) in _flat((REPO / page).read_text()), \
        f"{page} no longer says this: update FIGURES in tests/test_figures.py"
    shown = form.format(*written if isinstance(written, tuple) else (written,))
    assert _flat(shown) in _flat(quote), f"{page} says {quote!r}, {name} gives {shown!r}"


# The README and every page under docs/ written by hand (study.md is written by experiments.study).
LINKED = (README, *sorted(str(p.relative_to(REPO)) for p in (REPO / "docs").rglob("*.md")
                          if p != RESULTS / "study.md"))
LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(([^)\s]+)\)")


def _anchors(path):
    """The GitHub anchors of a Markdown file's headings."""
    anchors = set()
    in_code = False
    for line in path.read_text().splitlines():
        in_code ^= line.startswith("```")
        if not in_code and line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return anchors


def _links(text):
    """The link and image targets of Markdown text, outside code blocks."""
    outside = re.sub(r"```.*?```", "", text, flags=re.S)
    return [target for target in LINK.findall(outside) if not re.match(r"[a-z]+:", target)]


@pytest.mark.parametrize("page", LINKED)
def test_the_links_and_images_of_a_page_exist(page):
    path = REPO / page
    missing = []
    for target in _links(path.read_text()):
        file, _, anchor = target.partition("#")
        linked = (path.parent / file) if file else path
        if not linked.exists():
            missing.append(target)
        elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
            missing.append(target)
    assert not missing, f"{page} links to what is not there: {missing}"


def _linked_from(page):
    """The files a page links to, as paths from the repository's root."""
    path = REPO / page
    return {str((path.parent / target.partition("#")[0]).resolve().relative_to(REPO))
            for target in _links(path.read_text()) if target.partition("#")[0]}


def test_every_page_with_figures_is_linked_from_the_readme_or_the_results_index():
    pages = {page for page, *_ in FIGURES} - {README}
    linked = _linked_from(README) | _linked_from("docs/results/README.md")
    assert pages <= linked, f"not linked from the README or docs/results/README.md: {pages - linked}"


def test_the_results_pages_are_dated_and_the_readme_is_not():
    for page in RESULT_PAGES[1:]:
        first = (REPO / page).read_text().split("\n\n")[1]
        assert re.match(r"Results of \d{4}-\d{2}-\d{2}( to \d{4}-\d{2}-\d{2})?,", first), f"{page} opens undated"
    assert not re.search(r"\d{4}-\d{2}-\d{2}", (REPO / README).read_text()), "the README carries a date"
