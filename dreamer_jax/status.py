"""Files that other processes read while they are written: atomic writes, and KEY=VALUE status files.

A reader never sees half a file: the text goes to a temporary file beside the target, which `os.replace`
then swaps in. A status file has one `KEY=VALUE` per line, each value shell-quoted with its backslashes and
line breaks escaped, so `read_status` returns exactly what `write_status` was given and a shell can
`source` the file. Imports no JAX.
"""

from __future__ import annotations

import os
import pathlib
import re
import shlex
from typing import Any, Mapping

_KEY = re.compile(r"[A-Z_][A-Z0-9_]*\Z")
_ESCAPE = str.maketrans({"\\": "\\\\", "\n": "\\n", "\r": "\\r"})
_UNESCAPE = {"\\": "\\", "n": "\n", "r": "\r"}


class StatusError(ValueError):
    """A file that is not a status file as `write_status` writes it, or a key it cannot hold."""


def write_atomic(path: str | os.PathLike, text: str) -> None:
    """Replace `path` by a file holding `text`, so that a reader sees the old file or the new one, never a mix."""
    path = pathlib.Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine (one of another user's counts)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def format_status(values: Mapping[str, Any]) -> str:
    """The status file's text: `KEY=VALUE` lines in the given order, values as `str(value)`, quoted and escaped."""
    bad = [key for key in values if not _KEY.match(key)]
    if bad:
        raise StatusError(f"status keys {bad} are not shell names; use upper-case letters, digits and '_'")
    return "".join(f"{key}={shlex.quote(str(value).translate(_ESCAPE))}\n" for key, value in values.items())


def parse_status(text: str, source: str = "status") -> dict[str, str]:
    """The values of a status file's text, as strings; StatusError naming the line that does not parse."""
    values = {}
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip() or line.startswith("#"):
            continue
        key, sep, rest = line.partition("=")
        try:
            tokens = shlex.split(rest)
        except ValueError:
            tokens = None
        if not sep or not _KEY.match(key) or tokens is None or len(tokens) > 1:
            raise StatusError(f"{source}, line {number}: expected KEY=VALUE as written by write_status, got "
                              f"{line[:80]!r}; is this a sweep status file?")
        values[key] = re.sub(r"\\(.)", lambda m: _UNESCAPE.get(m.group(1), m.group(0)), tokens[0] if tokens else "")
    return values


def write_status(path: str | os.PathLike, values: Mapping[str, Any]) -> None:
    """Write `values` as a status file, atomically."""
    write_atomic(path, format_status(values))


def read_status(path: str | os.PathLike) -> dict[str, str]:
    """Read a status file written by `write_status`; FileNotFoundError if there is none, StatusError if malformed."""
    return parse_status(pathlib.Path(path).read_text(), str(path))
