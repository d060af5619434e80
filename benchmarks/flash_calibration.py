"""Do progress and distractor entries flash alike? A pixel-change detector on real pinpad frames, over many seeds.

    python -m benchmarks.flash_calibration          # docs/results/flash_calibration.json (a minute or two on 2 cores)

Per seed: EPISODES episodes of LENGTH steps of one policy (uniform random moves, or the scripted solver with the
evaluation's 10% of random moves) on pinpad_three at 16 x 16 (the CPU preset's images); the frame delta thresholded at
the number of pad entries (the study's common rate); its progress-vs-distractor exact p (one-sided, progress above
distractor), matched on the frame delta as the evaluation reports it, and stratified by episode only. A detector that
sees only pixels must be significant at 0.05 in at most about 5% of seeds when matched; the episode-only test in the
reverse direction (distractor above progress) shows what the matching takes away: on scripted episodes a distractor
entry more often shifts a full history than a progress entry does. The matched test's power beside its size: a
detector that marks every progress entry and each distractor entry with probability PREFER (the flash plays no part):
only strata that hold both kinds of entry carry evidence, so its power grows with the entries that share a flash.
"""

from __future__ import annotations

import argparse
import functools
import math
import sys

import jax
import numpy as np

import pinpad
from benchmarks import record
from dreamer_jax.boundaries import metrics

TASK, SIZE, EPISODES, LENGTH = "pinpad_three", 16, 8, 500
POLICIES = {"random": 1.0, "scripted": 0.1}  # the solver's share of uniform random moves
ALPHA = 0.05
PREFER = 0.5  # the progress-preferring detector's chance of marking a distractor entry


@functools.lru_cache(maxsize=None)
def _episodes(random_rate: float, episodes: int, length: int):
    """A jitted function of a key: `episodes` episodes of the solver with `random_rate` (frames and events)."""
    env = pinpad.make(TASK, length=length, size=SIZE)

    def episode(key):
        reset_key, key = jax.random.split(key)
        return pinpad.scripted_rollout(env, env.reset(reset_key)[0], key, length, random_rate)[1]

    return jax.jit(lambda key: jax.vmap(episode)(jax.random.split(key, episodes)))


def seed_result(policy: str, seed: int, episodes: int = EPISODES, length: int = LENGTH) -> dict:
    """One seed's pixel-change detector at the pad-entry count: its rates and the three p-values (log10)."""
    obs = jax.device_get(_episodes(POLICIES[policy], episodes, length)(jax.random.key(seed)))
    frames = np.asarray(obs["image"])
    valid = metrics.default_valid(frames.shape[:2])
    pad, progress, distractor = (np.asarray(obs[f"event_{k}"]) & valid for k in ("pad", "progress", "distractor"))
    delta = metrics.frame_delta(frames)
    marks = metrics.threshold_at_count(delta, int(pad.sum()), valid, seed)
    matched = metrics.progress_vs_distractor(marks, progress, distractor, valid, flash=delta)
    reverse = metrics.progress_vs_distractor(marks, distractor, progress, valid)
    preferring = progress | (distractor & (np.random.default_rng(seed).random(distractor.shape) < PREFER))
    power = metrics.progress_vs_distractor(preferring, progress, distractor, valid, flash=delta)
    return {"progress": matched["progress_count"], "distractor": matched["distractor_count"],
            "difference": float(matched["rates"]["difference"]), "matched_excess": matched["progress_excess"],
            "matched_log10_p": matched["progress_log10_p"], "episode_log10_p": matched["episode_log10_p"],
            "reverse_episode_log10_p": reverse["episode_log10_p"], "preferring_log10_p": power["progress_log10_p"]}


def calibrate(policy: str, seeds: int, episodes: int = EPISODES, length: int = LENGTH) -> dict:
    """Seeds 0..seeds-1 of `policy`: how many are significant at ALPHA under each test, and the mean rates."""
    rows = [seed_result(policy, seed, episodes, length) for seed in range(seeds)]
    below = lambda key: sum(row[key] < math.log10(ALPHA) for row in rows)  # noqa: E731
    return {"seeds": seeds, "episodes": episodes, "length": length, "random_rate": POLICIES[policy],
            "significant_matched": below("matched_log10_p"), "significant_episode": below("episode_log10_p"),
            "significant_reverse_episode": below("reverse_episode_log10_p"),
            "significant_preferring": below("preferring_log10_p"), "prefer": PREFER,
            "share_matched": below("matched_log10_p") / seeds,
            "mean_difference": float(np.nanmean([row["difference"] for row in rows])),
            "mean_matched_excess": float(np.nanmean([row["matched_excess"] for row in rows])),
            "entries_per_seed": {k: float(np.mean([row[k] for row in rows])) for k in ("progress", "distractor")}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=200, help="seeds per policy")
    p.add_argument("--out", default="docs/results/flash_calibration.json")
    args = p.parse_args(argv)
    if args.seeds < 1:
        print(f"error: --seeds {args.seeds} must be at least 1", file=sys.stderr)
        return 2
    results = {policy: calibrate(policy, args.seeds) for policy in POLICIES}
    for policy, r in results.items():
        print(f"{policy}: {r['significant_matched']}/{r['seeds']} seeds significant at {ALPHA} matched on the flash "
              f"({r['share_matched']:.1%}); episode-stratified {r['significant_episode']}, reverse "
              f"{r['significant_reverse_episode']}; mean difference {r['mean_difference']:+.3f}, matched excess "
              f"{r['mean_matched_excess']:+.3f}; a detector preferring progress entries: "
              f"{r['significant_preferring']}/{r['seeds']} significant (power)")
    record.write(args.out, "benchmarks.flash_calibration", argv, task=TASK, size=SIZE, alpha=ALPHA, policies=results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
