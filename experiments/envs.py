"""The pinpad environment a configuration names: its task, episode length and image size."""

from __future__ import annotations

import pinpad
from dreamer_jax.config import Config


def make_env(config: Config, length: int | None = None) -> pinpad.Pinpad:
    """`config.task` with episodes of `length` steps (default `config.time_limit`) and `config.size` images."""
    return pinpad.make(config.task, length or config.time_limit, config.size)
