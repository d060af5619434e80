"""The per-step record of evaluation episodes that every boundary metric and figure reads.

All arrays are numpy with a leading (episodes, steps) shape (E, T); every episode has the same
length and starts at t = 0 with `is_first` (a forced READ, excluded from scoring).
"""

from __future__ import annotations

import dataclasses

import numpy as np

EVENT_TYPES = ("pad", "progress", "distractor", "reward", "countdown_pad", "respawn", "pad_visual", "frame_delta")


@dataclasses.dataclass(frozen=True)
class Trace:
    """Frames, rewards, ground-truth events and the world model's boundary outputs, step by step.

    `read`, `read_prob`, `read_prior`, `read_prob_prior`, `forced`, `seg_len`, `seg_num` and
    `kl_abstract` are None for an RSSM (no boundaries); `kl_obs` is then its KL(post || prior)
    (the surprise baseline).
    """

    frames: np.ndarray  # (E, T, H, W, 3) uint8
    reward: np.ndarray  # (E, T) float32
    action: np.ndarray  # (E, T) int32: the action taken after the step's observation
    events: dict  # name -> (E, T) bool: the env's event_* flags without the prefix (pad, progress, ...)
    kl_obs: np.ndarray  # (E, T) float32: KL(posterior || prior) of the observation level (RSSM: of its state)
    read: np.ndarray | None = None  # (E, T) bool: hard READ sampled from the posterior (the model's boundaries)
    read_prob: np.ndarray | None = None  # (E, T) float32: posterior q(m_t = READ)
    read_prior: np.ndarray | None = None  # (E, T) bool: hard READ sampled from the prior p(m_t = READ)
    read_prob_prior: np.ndarray | None = None  # (E, T) float32: prior p(m_t = READ)
    forced: np.ndarray | None = None  # (E, T) bool: a constraint or episode start decided the boundary
    seg_len: np.ndarray | None = None  # (E, T) int32: steps since the last READ (1 at a READ)
    seg_num: np.ndarray | None = None  # (E, T) int32: READs so far in the episode
    kl_abstract: np.ndarray | None = None  # (E, T) float32: KL(post || prior) of z at READ steps, 0 at COPY

    @property
    def has_boundaries(self) -> bool:
        return self.read is not None

    @property
    def shape(self) -> tuple[int, int]:
        return self.reward.shape

    def boundaries(self, source: str = "posterior") -> np.ndarray:
        """Hard READ decisions (E, T) of the posterior or the prior."""
        return {"posterior": self.read, "prior": self.read_prior}[source]

    def probabilities(self, source: str = "posterior") -> np.ndarray:
        """READ probabilities (E, T) of the posterior or the prior."""
        return {"posterior": self.read_prob, "prior": self.read_prob_prior}[source]
