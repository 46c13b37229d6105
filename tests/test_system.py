"""``ffmix.system``'s file writing: every file goes through one atomic helper that keeps the old file on a full
disk and names the destination (never its temporary file), and a writability check that runs before long work."""
from __future__ import annotations

import pytest

from fsize import file_size_limit
from ffmix.errors import FfmixError, command_line
from ffmix.system import atomic_write, check_writable, write_figure


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_a_full_disk_keeps_the_old_file_and_names_the_destination(tmp_path):
    target = tmp_path / "result.json"
    target.write_text("old content")
    with file_size_limit(1000), pytest.raises(FfmixError) as caught:
        atomic_write(target, "x" * 5000)
    assert target.read_text() == "old content"
    message = str(caught.value)
    assert message.startswith(f"cannot write {target}: ") and ".tmp" not in message and "Errno" not in message
    assert leftovers(tmp_path) == []
    with command_line(), file_size_limit(1000), pytest.raises(FfmixError, match=f"cannot write --json {target}: "):
        atomic_write(target, "x" * 5000, option_name="json")


def test_a_figure_is_rendered_in_memory_then_written_atomically(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    target = tmp_path / "plot.png"
    target.write_bytes(b"an older picture")
    figure = plt.figure(figsize=(4, 3))
    figure.add_subplot().plot(range(100))
    try:
        with file_size_limit(2000), pytest.raises(FfmixError, match=f"cannot write plot {target}: "):
            write_figure(figure, target, option_name="plot", dpi=100)
        assert target.read_bytes() == b"an older picture" and leftovers(tmp_path) == []
        write_figure(figure, tmp_path / "sub" / "plot.png", dpi=50)  # missing folders are created
    finally:
        plt.close(figure)
    assert (tmp_path / "sub" / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_check_writable_refuses_before_any_work_and_creates_nothing(tmp_path):
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "a-dir").mkdir()
    for path, fragment in [(tmp_path / "a-dir", "it is a folder"),
                           (tmp_path / "missing" / "x.png", "does not exist; create it first"),
                           (tmp_path / "a-file" / "x.png", "is not a folder")]:
        with pytest.raises(FfmixError, match=fragment):
            check_writable(path)
    with command_line(), pytest.raises(FfmixError, match=r"cannot write --plot .*a-file/x\.png: "):
        check_writable(tmp_path / "a-file" / "x.png", option_name="plot", create_parents=True)
    assert check_writable(tmp_path / "missing" / "deeper" / "x.png", create_parents=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-dir", "a-file"]
