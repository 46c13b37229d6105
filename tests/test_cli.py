"""The command line's one rule for errors: the user's mistakes are one line, ffmix's bugs keep their traceback."""
from __future__ import annotations

import errno

import pytest

import ffmix.inspect
from ffmix import cli
from ffmix.errors import FfmixError


@pytest.mark.parametrize("raised, code", [
    (FfmixError("--count must be at least 1, got 0"), cli.EXIT_USER_ERROR),
    (FileNotFoundError("no such .beton file: x.beton"), cli.EXIT_USER_ERROR),
    (OSError(errno.ENOSPC, "No space left on device"), cli.EXIT_USER_ERROR),
    (ValueError("operands could not be broadcast together"), cli.EXIT_BUG),
    (KeyError("f3"), cli.EXIT_BUG),
    (OSError(errno.EBADF, "Bad file descriptor"), cli.EXIT_BUG),
])
def test_user_errors_are_one_line_and_bugs_keep_their_traceback(monkeypatch, capsys, tmp_path, raised, code):
    def failing_run(args):
        raise raised

    monkeypatch.setattr(ffmix.inspect, "run", failing_run)
    assert cli.main(["inspect", str(tmp_path / "x.beton")]) == code
    stderr = capsys.readouterr().err
    if code == cli.EXIT_USER_ERROR:
        assert stderr.strip().count("\n") == 0 and stderr.startswith("ffmix inspect: error: ")
        assert "Traceback" not in stderr
    else:
        assert "Traceback (most recent call last)" in stderr and "failing_run" in stderr
        assert "this is a bug in ffmix" in stderr


def test_interrupt_exits_130(monkeypatch, capsys, tmp_path):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(ffmix.inspect, "run", interrupted)
    assert cli.main(["inspect", str(tmp_path / "x.beton")]) == cli.EXIT_INTERRUPTED
    assert capsys.readouterr().err.strip() == "ffmix inspect: interrupted"
