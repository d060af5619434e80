"""Where an image draws the agent: the darkest cell of the play field, if it is dark enough to be the agent.

The agent is the only black cell (0, 0, 0) pinpad draws; every other colour of the play field has a channel mean of
at least 1/3 (pads 3, 7 and 8). So a decoded frame "draws the agent" in a cell when that cell's mean over its pixels
and channels is the play field's darkest and below 1/4: darker than anything else pinpad draws there, with a
margin, while a dark grey dot (a decoder's soft black) still counts. A world model that draws the agent where
it stands tracks it; `agent_tracking` is the share of frames where it does.
"""

from __future__ import annotations

import numpy as np

from pinpad.env import GRID, HEIGHT

AGENT_DARKNESS = 0.25  # a cell darker than this (mean of [0, 1] values) reads as the agent
NO_AGENT = -1  # the cell index read from a frame that draws no agent


def agent_cell(image) -> np.ndarray:
    """The cell index y * 16 + x where each image (..., size, size, 3) draws the agent, or NO_AGENT (-1).

    `image` is uint8 (0..255) or float in [0, 1] (a decoder's output), at any size that is 16 cells across."""
    image = np.asarray(image)
    scale = 255.0 if image.dtype == np.uint8 else 1.0
    size = image.shape[-2]
    if image.shape[-3:] != (size, size, 3) or size % GRID:
        raise ValueError(f"images must be (..., size, size, 3) with size a multiple of {GRID}; got {image.shape}")
    pixel = size // GRID
    cells = image.astype(np.float64).reshape(image.shape[:-3] + (GRID, pixel, GRID, pixel, 3)).mean((-4, -2, -1))
    field = cells[..., :HEIGHT, :].reshape(image.shape[:-3] + (HEIGHT * GRID,)) / scale  # status rows left out
    darkest = field.argmin(-1)
    return np.where(np.take_along_axis(field, darkest[..., None], -1)[..., 0] < AGENT_DARKNESS, darkest, NO_AGENT)


def agent_tracking(images, cells) -> float:
    """The share of frames (..., size, size, 3) that draw the agent in its true cell `cells` (..., y * 16 + x)."""
    return float(np.mean(agent_cell(images) == np.asarray(cells)))
