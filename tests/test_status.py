"""Status files and atomic writes: exact round trips, a shell can source them, clear errors, never half a file."""

import subprocess
import threading

import pytest

from dreamer_jax.status import StatusError, parse_status, read_status, write_atomic, write_status

AWKWARD = {
    "PLAIN": "done",
    "EMPTY": "",
    "LINES": "line one\nline two\r\n",
    "EQUALS": "a=b==c",
    "QUOTES": "it's \"quoted\"",
    "BACKSLASHES": "C:\\path\\n is not a line break\\",
    "CODE": "$HOME `ls` ; echo $((1+1))",
    "UNICODE": "ü → ✓",
    "SPACES": "  padded  ",
    "HASH": "# not a comment",
}


def test_values_round_trip_exactly_one_line_each(tmp_path):
    path = tmp_path / "status.env"
    write_status(path, {**AWKWARD, "NUMBER": 3})
    assert read_status(path) == {**AWKWARD, "NUMBER": "3"}
    assert list(read_status(path)) == [*AWKWARD, "NUMBER"]
    assert len(path.read_text().splitlines()) == len(AWKWARD) + 1


def test_a_shell_can_source_it(tmp_path):
    path = tmp_path / "status.env"
    write_status(path, AWKWARD)
    script = 'source "$0"; printf "%s\\0" ' + " ".join(f'"${name}"' for name in AWKWARD)
    out = subprocess.run(["bash", "-c", script, str(path)], capture_output=True, text=True, check=True).stdout
    # The shell sees the escaped text: line breaks as \n, backslashes doubled; every other value exactly.
    escaped = {"LINES": "line one\\nline two\\r\\n", "BACKSLASHES": AWKWARD["BACKSLASHES"].replace("\\", "\\\\")}
    assert out.split("\0")[:-1] == [escaped.get(name, value) for name, value in AWKWARD.items()]


def test_comments_and_blank_lines_are_skipped():
    assert parse_status("# a comment\n\nA=1\nB=''\nC=\n") == {"A": "1", "B": "", "C": ""}


@pytest.mark.parametrize("text", ["NO_EQUALS\n", "lower=1\n", "A='unclosed\n", "A=two words\n", "=1\n"])
def test_malformed_lines_are_refused_with_the_line_number(text):
    with pytest.raises(StatusError, match="line 1"):
        parse_status(text)


def test_keys_that_are_not_shell_names_are_refused_and_nothing_is_written(tmp_path):
    path = tmp_path / "status.env"
    write_status(path, {"A": 1})
    with pytest.raises(StatusError, match="bad-key"):
        write_status(path, {"B": 2, "bad-key": 3})
    assert read_status(path) == {"A": "1"}


def test_a_failed_write_leaves_the_old_file_and_no_temporary_file(tmp_path):
    path = tmp_path / "file.txt"
    write_atomic(path, "old")
    with pytest.raises(UnicodeEncodeError):
        write_atomic(path, "new \udc80")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["file.txt"]


def test_a_reader_sees_the_old_or_the_new_file_never_a_mix(tmp_path):
    path = tmp_path / "status.env"
    versions = [{"STATE": "running", "STEP": str(i), "PAD": "x" * 4000} for i in range(2)]
    write_status(path, versions[0])
    stop = threading.Event()

    def writer():
        i = 0
        while not stop.is_set():
            i += 1
            write_status(path, versions[i % 2])

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        reads = [read_status(path) for _ in range(300)]
    finally:
        stop.set()
        thread.join()
    assert all(read in versions for read in reads)
    assert [p.name for p in tmp_path.iterdir()] == ["status.env"]
