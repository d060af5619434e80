"""A small progress bar with rate and ETA; on a terminal it redraws one line, elsewhere it prints now and then."""

from __future__ import annotations

import sys
import time


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60:02d}:{seconds % 60:02d}"


class Bar:
    """`Bar(total, desc)`; `update(done, note="")` redraws; `close()` ends the line."""

    def __init__(self, total: int, desc: str = "", stream=None, width: int = 24, every: float = 10.0):
        self.total, self.desc, self.width, self.every = total, desc, width, every
        self.stream = stream or sys.stderr
        self.tty = getattr(self.stream, "isatty", lambda: False)()
        self.start = time.monotonic()
        self.first_done: int | None = None
        self.last_print = 0.0

    def line(self, done: int, note: str = "") -> str:
        """The bar as text: description, percent, bar, count, elapsed<eta, rate, note."""
        elapsed = time.monotonic() - self.start
        if self.first_done is None:
            self.first_done = done
        rate = (done - self.first_done) / elapsed if elapsed > 0 else 0.0
        eta = _clock((self.total - done) / rate) if rate > 0 else "?"
        frac = min(1.0, done / self.total) if self.total else 1.0
        filled = int(frac * self.width)
        bar = "#" * filled + "-" * (self.width - filled)
        return (f"{self.desc} {frac:4.0%} |{bar}| {done}/{self.total} "
                f"[{_clock(elapsed)}<{eta}, {rate:.1f}/s]" + (f" {note}" if note else ""))

    def update(self, done: int, note: str = "") -> None:
        now = time.monotonic()
        if self.tty:
            self.stream.write("\r" + self.line(done, note) + "\033[K")
        elif now - self.last_print >= self.every or done >= self.total:
            self.stream.write(self.line(done, note) + "\n")
            self.last_print = now
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
