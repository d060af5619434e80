"""The six pinpad layouts and pad colours, exactly as the reference draws them."""

import numpy as np

# 14 rows of 16 characters: '#' wall, ' ' floor, a digit a cell of that pad.
LAYOUTS = {
    "pinpad_three": (
        "################",
        "#1111      3333#",
        "#1111      3333#",
        "#1111      3333#",
        "#1111      3333#",
        "#              #",
        "#              #",
        "#              #",
        "#              #",
        "#     2222     #",
        "#     2222     #",
        "#     2222     #",
        "#     2222     #",
        "################",
    ),
    "pinpad_four": (
        "################",
        "#1111      4444#",
        "#1111      4444#",
        "#1111      4444#",
        "#1111      4444#",
        "#              #",
        "#              #",
        "#              #",
        "#              #",
        "#3333      2222#",
        "#3333      2222#",
        "#3333      2222#",
        "#3333      2222#",
        "################",
    ),
    "pinpad_five": (
        "################",
        "#          4444#",
        "#111       4444#",
        "#111       4444#",
        "#111           #",
        "#111        555#",
        "#           555#",
        "#           555#",
        "#333        555#",
        "#333           #",
        "#333       2222#",
        "#333       2222#",
        "#          2222#",
        "################",
    ),
    "pinpad_six": (
        "################",
        "#111        555#",
        "#111        555#",
        "#111        555#",
        "#              #",
        "#33          66#",
        "#33          66#",
        "#33          66#",
        "#33          66#",
        "#              #",
        "#444        222#",
        "#444        222#",
        "#444        222#",
        "################",
    ),
    "pinpad_seven": (
        "################",
        "#111        444#",
        "#111        444#",
        "#11          44#",
        "#              #",
        "#33          55#",
        "#33          55#",
        "#33          55#",
        "#33          55#",
        "#              #",
        "#66          22#",
        "#666  7777  222#",
        "#666  7777  222#",
        "################",
    ),
    "pinpad_eight": (
        "################",
        "#111  8888  444#",
        "#111  8888  444#",
        "#11          44#",
        "#              #",
        "#33          55#",
        "#33          55#",
        "#33          55#",
        "#33          55#",
        "#              #",
        "#66          22#",
        "#666  7777  222#",
        "#666  7777  222#",
        "################",
    ),
}
TASKS = tuple(LAYOUTS)

# Full colour of pads 1..8 (index 0 unused).
PAD_COLOURS = np.array(
    [
        (0, 0, 0),
        (255, 0, 0),
        (0, 255, 0),
        (0, 0, 255),
        (255, 255, 0),
        (255, 0, 255),
        (0, 255, 255),
        (128, 0, 128),
        (0, 128, 128),
    ],
    np.uint8,
)
WHITE = (255, 255, 255)
LIGHT_GREEN = (223, 255, 223)  # background while the countdown runs
GREY = (192, 192, 192)  # walls and status bar
BLACK = (0, 0, 0)  # the agent
WALL = -1  # grid code of a wall cell; 0 is floor, k > 0 a cell of pad k


def pale(colour: np.ndarray) -> np.ndarray:
    """The tint of a pad the agent is not on: 10% colour, 90% white, truncated."""
    return ((10 * colour.astype(np.int64) + 90 * 255) // 100).astype(np.uint8)


def grid(task: str) -> np.ndarray:
    """(14, 16) int8 cell codes indexed [y, x]: WALL, 0 floor, k pad k."""
    rows = LAYOUTS[task]
    codes = [[WALL if c == "#" else 0 if c == " " else int(c) for c in row] for row in rows]
    return np.array(codes, np.int8)
