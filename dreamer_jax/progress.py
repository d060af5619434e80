"""Progress bars with rate and ETA; on a terminal they are redrawn in place, elsewhere printed now and then."""

from __future__ import annotations

import math
import shutil
import sys
import time

_PER = {"s": 1.0, "h": 3600.0}


def clock(seconds: float) -> str:
    """Seconds as MM:SS, or H:MM:SS from an hour up."""
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60:02d}:{seconds % 60:02d}"


class Panel:
    """A block of lines kept at the bottom of a terminal and redrawn in place; elsewhere printed every `every` s."""

    def __init__(self, stream=None, every: float = 10.0):
        self.stream = stream or sys.stderr
        self.every = every
        self.tty = getattr(self.stream, "isatty", lambda: False)()
        self.shown: list[str] = []
        self.last_print = -math.inf  # the first show prints

    def show(self, lines: list[str], force: bool = False) -> None:
        """Redraw `lines` on a terminal; elsewhere print them when `every` seconds have passed, or when `force`."""
        now = time.monotonic()
        if self.tty:
            self.stream.write(self._erase() + self._fit(lines))
            self.shown = list(lines)
        elif force or now - self.last_print >= self.every:
            self.stream.write("".join(line + "\n" for line in lines))
            self.last_print = now
        self.stream.flush()

    def message(self, text: str) -> None:
        """Print `text` above the block (which a terminal then shows again below it)."""
        self.stream.write((self._erase() + text + "\n" + self._fit(self.shown)) if self.tty else text + "\n")
        self.stream.flush()

    def close(self) -> None:
        """Leave the block on screen and move below it."""
        if self.tty and self.shown:
            self.stream.write("\n")
            self.stream.flush()
        self.shown = []

    def _erase(self) -> str:
        """Terminal codes that move to the start of the block and clear it."""
        up = len(self.shown) - 1
        return "\r" + (f"\033[{up}A" if up > 0 else "") + "\033[J"

    def _fit(self, lines: list[str]) -> str:
        """The lines cut to the terminal's width (a wrapped line would break the redraw)."""
        width = shutil.get_terminal_size().columns - 1
        return "\n".join(line[:width] for line in lines)


class Bar:
    """`Bar(total, desc)`; `update(done, note="")` redraws; `close()` ends the line.

    `elapsed` and `first_done` continue a bar begun elsewhere (e.g. drawn from a status file); `per` is the
    rate's time unit, s or h.
    """

    def __init__(self, total: int, desc: str = "", stream=None, width: int = 24, every: float = 10.0,
                 elapsed: float = 0.0, first_done: int | None = None, per: str = "s"):
        self.total, self.desc, self.width, self.per = total, desc, width, per
        self.panel = Panel(stream, every)
        self.start = time.monotonic() - elapsed
        self.first_done = first_done

    def line(self, done: int, note: str = "") -> str:
        """The bar as text: description, percent, bar, count, elapsed<eta, rate, note."""
        elapsed = time.monotonic() - self.start
        if self.first_done is None:
            self.first_done = done
        rate = (done - self.first_done) / elapsed if elapsed > 0 else 0.0
        eta = clock((self.total - done) / rate) if rate > 0 else "?"
        frac = min(1.0, done / self.total) if self.total else 1.0
        filled = int(frac * self.width)
        bar = "#" * filled + "-" * (self.width - filled)
        return (f"{self.desc} {frac:4.0%} |{bar}| {done}/{self.total} "
                f"[{clock(elapsed)}<{eta}, {rate * _PER[self.per]:.1f}/{self.per}]" + (f" {note}" if note else ""))

    def update(self, done: int, note: str = "") -> None:
        self.panel.show([self.line(done, note)], force=done >= self.total)

    def close(self) -> None:
        self.panel.close()
