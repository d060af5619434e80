"""Open-loop prediction: what the world model learned, shown as the official DreamerV3 reports it.

Observe the first `context` frames of recorded episodes (posterior states), then imagine the remaining
steps from the last posterior under the recorded actions, decoding every state. The prediction error per
imagined step says how far ahead the model can see; the figure shows truth, prediction and error rows.
For VTA the imagined boundaries (READ from the prior) are returned and marked.
"""

from __future__ import annotations

import functools
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


def open_loop(dynamics, start, actions, key):
    """The prior's states (H, N, ...) imagined from `start` (N, ...) under given one-hot actions (H, N, A)."""
    def step(state, inputs):
        state = dynamics.img_step(state, *inputs)
        return state, state

    return jax.lax.scan(step, start, (actions, jax.random.split(key, len(actions))))[1]


@functools.partial(jax.jit, static_argnums=(0, 4))
def predict(learner, params, data: dict, key, context: int) -> dict:
    """Reconstructions of episodes (E, T): posterior for t < `context`, imagined under the recorded actions after.

    `data` holds `image` (E, T, H, W, 3) uint8, `action` (E, T) int (the action taken after each step),
    `is_first` and `reward` (E, T). Returns `recon` (E, T, H, W, 3) in [0, 1] and `read` (E, T) bool (the
    boundary of each state: VTA's READ; all False for dynamics without boundaries).
    """
    agent = nnx.merge(learner.graphdef, params)
    dynamics = agent.dynamics
    episodes, length = data["action"].shape
    observe_key, imagine_key = jax.random.split(key)
    action = jax.nn.one_hot(data["action"], agent.action_dim, dtype=jnp.float32)
    seen = lambda x: x[:, :context]  # noqa: E731
    embed = agent.encoder(seen(data["image"]))
    _, post, _ = dynamics.observe(dynamics.initial(episodes), embed, seen(action), seen(data["is_first"]),
                                  observe_key, reward=seen(data["reward"]))

    swap = lambda x: jnp.swapaxes(x, 0, 1)  # noqa: E731
    imagined = open_loop(dynamics, jax.tree.map(lambda x: x[:, -1], post), swap(action[:, context - 1:-1]),
                         imagine_key)
    states = jax.tree.map(lambda a, b: jnp.concatenate([a, swap(b)], 1), post, imagined)
    recon = agent.decoder(*dynamics.decoder_inputs(states))
    read = states.read > 0.5 if hasattr(states, "read") else jnp.zeros((episodes, length), bool)
    return {"recon": recon, "read": read}


@functools.partial(jax.jit, static_argnums=(0, 4, 5))
def reward_audit(learner, params, data: dict, key, horizon: int, stride: int) -> dict:
    """What imagination pays against what the episodes earned, from posterior states every `stride` steps.

    From each start t (the posterior after observing steps 0..t), `horizon` steps are imagined twice: under the
    recorded actions (open loop) and under the actor, as training imagines. Returns (N, horizon) arrays, N the
    starts of every episode: `real` (the recorded reward at t+1..t+horizon), `openloop` and `imagined` (the reward
    head's mean at the imagined states); and the policy's entropy where the agent acted, `acting_entropy` (E, T) at
    the posterior states, against `imagined_entropy` (N, horizon) at the actor's imagined ones. `data` as in
    `predict`.
    """
    agent = nnx.merge(learner.graphdef, params)
    dynamics = agent.dynamics
    episodes, length = data["action"].shape
    observe_key, open_key, imagine_key = jax.random.split(key, 3)
    action = jax.nn.one_hot(data["action"], agent.action_dim, dtype=jnp.float32)
    embed = agent.encoder(data["image"])
    _, post, _ = dynamics.observe(dynamics.initial(episodes), embed, action, data["is_first"], observe_key,
                                  reward=data["reward"])
    starts = jnp.arange(stride, length - horizon, stride)
    window = starts[:, None] + jnp.arange(horizon)  # (S, H): the steps whose actions lead out of each state
    flat = lambda x: x.reshape((-1,) + x.shape[2:])  # noqa: E731  (E, S, ...) -> (E * S, ...)
    start = jax.tree.map(lambda x: flat(x[:, starts]), post)
    reward = lambda states: agent.twohot(agent.reward(dynamics.features(states))).mean()  # noqa: E731

    opened = open_loop(dynamics, start, jnp.swapaxes(flat(action[:, window]), 0, 1), open_key)
    imagined, _ = dynamics.imagine(start, agent.sample_action, horizon, imagine_key)
    entropy = lambda states: agent.policy(dynamics.features(states)).entropy()  # noqa: E731
    return {"real": flat(data["reward"][:, window + 1]), "openloop": jnp.swapaxes(reward(opened), 0, 1),
            "imagined": reward(imagined)[:, 1:], "acting_entropy": entropy(post),
            "imagined_entropy": entropy(jax.tree.map(lambda x: x[:, :-1], imagined))}


def step_mse(image: np.ndarray, recon: np.ndarray, context: int) -> np.ndarray:
    """Mean squared error per imagined step (T - context,), over episodes and pixels, images scaled to [0, 1]."""
    error = np.square(np.asarray(recon, np.float64) - np.asarray(image, np.float64) / 255.0)
    return error[:, context:].mean(axis=(0, 2, 3, 4))


def figure(image: np.ndarray, recon: np.ndarray, read: np.ndarray, context: int, out: str | os.PathLike,
           every: int = 2, title: str = "") -> pathlib.Path:
    """Truth, prediction and error rows of one episode (T, H, W, 3), every `every`-th step; observed frames are
    framed green, imagined ones red, imagined READs marked with a yellow bar above the prediction. Writes a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = np.arange(0, image.shape[0], every)
    truth = np.asarray(image, np.float32) / 255.0
    pred = np.clip(np.asarray(recon, np.float32), 0.0, 1.0)
    rows = (("truth", truth), ("prediction", pred), ("error", (pred - truth + 1.0) / 2.0))
    fig, axes = plt.subplots(3, len(steps), figsize=(0.75 * len(steps), 2.6), squeeze=False)
    for r, (label, frames) in enumerate(rows):
        for c, t in enumerate(steps):
            ax = axes[r, c]
            ax.imshow(frames[t], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_color("tab:green" if t < context else "tab:red")
                spine.set_linewidth(2)
            if r == 0:
                ax.set_title(str(t), fontsize=6)
            if r == 1 and t >= context and read[t]:
                ax.set_title("READ", fontsize=6, color="black", backgroundcolor="gold")
        axes[r, 0].set_ylabel(label, fontsize=7)
    fig.suptitle(title or f"open loop: {context} frames observed (green), then imagined (red)", fontsize=8)
    fig.tight_layout(pad=0.2)
    out = pathlib.Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
