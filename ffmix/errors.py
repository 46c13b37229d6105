"""The one exception type for problems with the user's input or machine (as opposed to bugs in ffmix), and how
a message names an option: the flag on the command line, the keyword in the Python API."""
from __future__ import annotations

import contextvars
from contextlib import contextmanager
from typing import Iterator, Optional

# Set while the ``ffmix`` command runs a subcommand (``cli.main``), so that one message, written once, names
# ``--num-classes`` to a command-line user and ``num_classes=`` to a Python caller.
_ON_COMMAND_LINE = contextvars.ContextVar("ffmix_on_command_line", default=False)


class FfmixError(ValueError):
    """A problem with the user's input or environment, phrased for the user: what, which value, what to do.

    A ``ValueError``, so code that catches ``ValueError`` around ffmix calls keeps working; the command line
    prints these as one line and anything else as a traceback with a request for a bug report.
    """


class FfmixWarning(UserWarning):
    """Something in the user's input that ffmix worked around (e.g. a symbolic-link cycle it did not follow);
    the command line prints these as ``ffmix COMMAND: warning: ...`` lines."""


def on_command_line() -> bool:
    """Whether ffmix runs as the ``ffmix`` command (rather than being called from Python)."""
    return _ON_COMMAND_LINE.get()


_NO_VALUE = object()


def option(name: str, value=_NO_VALUE, *, flag: Optional[str] = None) -> str:
    """How the user spells option ``name`` (a Python keyword such as ``num_classes``), with ``value`` when given:
    ``--num-classes 10`` on the command line, ``num_classes=10`` in the Python API (``--num-classes`` and
    ``num_classes`` without a value). ``flag`` is the command-line spelling where it is not the keyword's."""
    if on_command_line():
        return (flag or f"--{name.replace('_', '-')}") + ("" if value is _NO_VALUE else f" {value}")
    return name + ("" if value is _NO_VALUE else f"={value!r}" if isinstance(value, str) else f"={value}")


def switch(name: str) -> str:
    """A boolean option turned on: ``--force`` on the command line, ``force=True`` in the Python API."""
    return f"--{name.replace('_', '-')}" if on_command_line() else f"{name}=True"


@contextmanager
def command_line() -> Iterator[None]:
    """Within this block, messages name options as command-line flags (see ``option``)."""
    token = _ON_COMMAND_LINE.set(True)
    try:
        yield
    finally:
        _ON_COMMAND_LINE.reset(token)
