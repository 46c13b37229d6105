"""Which shard files a SOURCE names: one file, a folder (its files with the format's suffixes, sorted), a glob
(``data/train-*.parquet``) or a brace range (``shards/train-{000000..000099}.tar``, WebDataset's notation, zero
padding kept; ``{a,b}`` lists too). The same real file named twice (a repeated range, a link) is refused, since
its samples would be written twice.
"""
from __future__ import annotations

import glob
import os
import re
from pathlib import Path
from typing import List, Sequence

from ..errors import FfmixError

_BRACES = re.compile(r"\{([^{}]*)\}")
_RANGE = re.compile(r"(\d+)\.\.(\d+)\Z")


def is_pattern(text: str) -> bool:
    """Whether ``text`` holds glob or brace notation (a file that exists under that name is not a pattern)."""
    return not os.path.exists(text) and any(mark in text for mark in "*?[{")


def expand_braces(pattern: str) -> List[str]:
    """``a-{00..02}.tar`` -> ``[a-00.tar, a-01.tar, a-02.tar]``; ``{x,y}`` -> both; nested in order."""
    match = _BRACES.search(pattern)
    if match is None:
        return [pattern]
    inside = match.group(1)
    numbers = _RANGE.match(inside)
    if numbers:
        first, last = numbers.groups()
        if int(last) < int(first):
            raise FfmixError(f"{pattern}: the range {{{inside}}} runs backwards")
        width = len(first) if first.startswith("0") else 0
        choices = [str(k).zfill(width) for k in range(int(first), int(last) + 1)]
    else:
        choices = inside.split(",")
    head, tail = pattern[:match.start()], pattern[match.end():]
    return [expanded for choice in choices for expanded in expand_braces(head + choice + tail)]


def list_shards(source: str, suffixes: Sequence[str], kind: str) -> List[Path]:
    """The shard files ``source`` names, in order; raises ``FfmixError`` when there are none, one is missing or
    unreadable, or one real file is named twice. ``kind`` (e.g. ``parquet``) is for messages."""
    text = os.fspath(source)
    if os.path.isdir(text):
        with os.scandir(text) as listing:
            paths = sorted(Path(entry.path) for entry in listing
                           if entry.name.lower().endswith(tuple(suffixes)) and not entry.name.startswith("."))
        if not paths:
            raise FfmixError(f"{text} holds no {kind} files ({', '.join(suffixes)})")
    elif os.path.exists(text):
        paths = [Path(text)]
    else:
        paths = []
        for expanded in expand_braces(text):
            if any(mark in expanded for mark in "*?["):
                found = sorted(glob.glob(expanded))
                if not found:
                    raise FfmixError(f"no {kind} files match {expanded}")
                paths += [Path(path) for path in found]
            elif os.path.exists(expanded):
                paths.append(Path(expanded))
            else:
                raise FfmixError(f"{kind} shard {expanded} does not exist (from {text}); fix the pattern or the "
                                 "range")
    _refuse_repeats(paths, text)
    return paths


def _refuse_repeats(paths: List[Path], source: str) -> None:
    seen = {}
    for path in paths:
        try:
            status = os.stat(path)
        except OSError as exc:
            raise FfmixError(f"cannot read shard {path}: {exc.strerror or exc}") from None
        if not os.path.isfile(path):
            raise FfmixError(f"shard {path} is not a file")
        if not os.access(path, os.R_OK):
            raise FfmixError(f"shard {path} is not readable (permission denied)")
        identity = (status.st_dev, status.st_ino)
        if identity in seen:
            raise FfmixError(f"{source}: {seen[identity]} and {path} are the same file; each shard must be named "
                             "once, or its samples would be written twice")
        seen[identity] = path
