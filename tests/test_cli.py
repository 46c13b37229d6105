"""The command line's one rule for errors: the user's mistakes are one line, ffmix's bugs keep their traceback."""
from __future__ import annotations

import errno

import numpy as np
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


@pytest.mark.parametrize("raised, expected", [
    (OSError(errno.ENOSPC, "No space left on device"),
     "No space left on device (the system named no file; check the output paths and free space)"),
    (OSError(errno.EROFS, "Read-only file system", "/mnt/out.json"), "/mnt/out.json: Read-only file system"),
    (OSError(errno.EFBIG, "File too large", "big.beton"), "big.beton: File too large"),
])
def test_a_system_error_is_worded_for_the_user_never_a_bare_errno(monkeypatch, capsys, tmp_path, raised, expected):
    monkeypatch.setattr(ffmix.inspect, "run", lambda args: (_ for _ in ()).throw(raised))
    assert cli.main(["inspect", str(tmp_path / "x.beton")]) == cli.EXIT_USER_ERROR
    assert capsys.readouterr().err.strip() == f"ffmix inspect: error: {expected}"


def test_the_api_names_keywords_and_the_command_line_names_flags(tmp_path, capsys):
    """The Python API raised FileExistsError and named --flags; the command line named keyword arguments."""
    from ffmix.convert import convert_arrays
    from ffmix.metadata import read_meta
    images = np.zeros((3, 4, 4), np.uint8)
    out = tmp_path / "o.beton"
    np.savez(tmp_path / "s.npz", images=images, labels=np.arange(3))
    for call, keyword, flag in [
            (lambda: convert_arrays(images, [0, 1, 2], out, jpeg_quality=0), "jpeg_quality must", "--jpeg-quality"),
            (lambda: convert_arrays(images, [0, 1, 2], out, num_workers=0), "num_workers must", "--workers")]:
        with pytest.raises(FfmixError, match=keyword) as caught:
            call()
        assert "--" not in str(caught.value)
    code = cli.main(["convert", str(tmp_path / "s.npz"), str(out), "--jpeg-quality", "0"])
    assert code == 1 and "--jpeg-quality must" in capsys.readouterr().err
    code = cli.main(["convert", str(tmp_path / "s.npz"), str(out), "--workers", "0"])
    assert code == 1 and "--workers must" in capsys.readouterr().err
    convert_arrays(images, [0, 1, 2], out)
    with pytest.raises(FfmixError, match=r"already exists; pass force=True to overwrite it$"):
        convert_arrays(images, [0, 1, 2], out)
    assert cli.main(["convert", str(tmp_path / "s.npz"), str(out)]) == 1
    assert capsys.readouterr().err.strip().endswith("already exists; pass --force to overwrite it")
    # a plain FFCV file: the API can read one with num_classes=, the command line has no such option
    meta_path = tmp_path / "o.beton.json"
    meta_path.unlink()
    with pytest.raises(FileNotFoundError, match="or pass num_classes="):
        read_meta(out)
    assert cli.main(["preview", str(out), "--out", str(tmp_path / "p.png")]) == 1
    err = capsys.readouterr().err
    assert "no ffmix metadata" in err and "num_classes" not in err
    with pytest.raises(FfmixError, match="is a folder, not a .beton file"):
        read_meta(tmp_path)
