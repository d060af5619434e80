"""Agent tracking: does a run's world model draw the pinpad agent where it stands, observed and imagined?

Scripted episodes (10% random moves) are observed for CONTEXT frames and then imagined under their recorded actions
(`dreamer_jax.openloop.predict`); `pinpad.agent_tracking` reads the agent's cell off every decoded frame. The
posterior share is over the observed frames, the imagined shares at imagined steps 1, 5, 15 and 45.
"""

from __future__ import annotations

import jax
import numpy as np

import pinpad
from dreamer_jax import openloop
from dreamer_jax.boundaries import analysis

CONTEXT, LENGTH = 5, 50  # observed frames, then imagined ones up to LENGTH: imagined steps 1..45
IMAGINED_STEPS = (1, 5, 15, 45)
PROBE_EPISODES = 8  # per periodic evaluation while training: cheap, coarse
RANDOM_RATE = 0.1  # the scripted solver's share of random moves


def predict_episodes(learner, params, env: pinpad.Pinpad, episodes: int, key, context: int = CONTEXT,
                     length: int = LENGTH) -> tuple[dict, dict]:
    """(scripted episodes (E, length), the model's open-loop predictions of them: `recon` and `read`)."""
    policy = pinpad.ScriptedPolicy(env, RANDOM_RATE)
    collect_key, predict_key = jax.random.split(key)
    data = analysis.rollout(learner, params, env, episodes, collect_key, policy, length)
    inputs = {k: data[k] for k in ("image", "action", "is_first", "reward")}
    return data, jax.device_get(openloop.predict(learner, params, inputs, predict_key, context))


def tracking(recon: np.ndarray, cells: np.ndarray, context: int) -> dict:
    """{"posterior": share of observed frames, "imagined": {"k": share at imagined step k}} for decoded frames
    (E, T, H, W, 3) of episodes whose agent stands in `cells` (E, T); imagined step k is frame context - 1 + k."""
    length = recon.shape[1]
    return {"posterior": pinpad.agent_tracking(recon[:, :context], cells[:, :context]),
            "imagined": {str(k): pinpad.agent_tracking(recon[:, context - 1 + k], cells[:, context - 1 + k])
                         for k in IMAGINED_STEPS if context - 1 + k < length}}


def flat(result: dict) -> dict[str, float]:
    """A tracking result as metrics.jsonl keys: tracking_posterior, tracking_imagined_1, ..."""
    return {"tracking_posterior": result["posterior"],
            **{f"tracking_imagined_{k}": v for k, v in result["imagined"].items()}}


def measure(learner, params, env: pinpad.Pinpad, episodes: int, key) -> dict:
    """`tracking` of one agent's world model on `episodes` fresh scripted episodes of `env`'s task and size."""
    env = pinpad.make(env.task, max(env.length, LENGTH), env.size)
    data, out = predict_episodes(learner, params, env, episodes, key)
    return tracking(out["recon"], data["agent_cell"], CONTEXT)


def probe(env: pinpad.Pinpad, episodes: int = PROBE_EPISODES):
    """The periodic-evaluation probe of a pinpad run: (learner, one agent's params, key) -> tracking metrics."""
    return lambda learner, params, key: flat(measure(learner, params, env, episodes, key))
