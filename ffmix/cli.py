"""The ``ffmix`` command: one entry point, one module per subcommand.

Each subcommand module defines ``configure_parser(parser)`` and ``run(args) -> int``. They are imported only
when chosen, so ``ffmix convert --help`` answers without importing torch.
"""
from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys
import traceback
import warnings
from typing import List, Optional

from .errors import FfmixError, FfmixWarning, command_line

# subcommand -> (module, one-line help)
SUBCOMMANDS = {
    "convert": ("ffmix.convert", "write a dataset (ImageFolder, CIFAR, IDX, .npz) to an FFCV .beton"),
    "inspect": ("ffmix.inspect", "describe a .beton: samples, fields, classes, image sizes"),
    "preview": ("ffmix.preview", "save a grid of one mixed batch as a PNG"),
    "bench": ("ffmix.bench", "measure ffmix against the usual MixUp/CutMix data paths"),
    "train": ("ffmix.train", "train a classifier on the mixed stream and report accuracy"),
}

# Errors that come from the user's input or machine rather than from a bug: one line, no traceback. Anything
# else is a bug in ffmix and keeps its traceback: a ValueError from deep inside must not pass for bad input.
USER_ERRORS = (FfmixError, FileNotFoundError, FileExistsError, PermissionError, NotADirectoryError,
               IsADirectoryError)
MACHINE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EMFILE, errno.EFBIG}
EXIT_USER_ERROR, EXIT_BUG, EXIT_INTERRUPTED = 1, 70, 130
BUG_REPORT = ("this is a bug in ffmix, not a problem with your input; please report it with the command line "
              "and the traceback above")


def is_user_error(exc: BaseException) -> bool:
    """The one place that decides: a one-line message for the user, or a traceback for a bug report."""
    if isinstance(exc, USER_ERRORS):
        return True
    return isinstance(exc, OSError) and exc.errno in MACHINE_ERRNOS


def warning_printer(command: str, fallback):
    """A ``warnings.showwarning`` that prints ffmix's own warnings as one ``ffmix COMMAND: warning:`` line."""
    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, FfmixWarning):
            print(f"ffmix {command}: warning: {message}", file=sys.stderr, flush=True)
        else:
            fallback(message, category, filename, lineno, file, line)
    return show


def user_message(exc: BaseException) -> str:
    """The one line for a user error. An OSError's own text ("[Errno 28] No space left on device") may name no
    file, or a temporary one; ffmix's own messages name the destination, so this is the fallback's wording."""
    if not isinstance(exc, OSError) or isinstance(exc, FfmixError) or not exc.strerror:
        return str(exc)
    if exc.filename is not None:
        return f"{exc.filename}: {exc.strerror}"
    return f"{exc.strerror} (the system named no file; check the output paths and free space)"


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults that say something: not ``None``/``False``, nor where the help already explains it."""

    def _get_help_string(self, action):
        if action.default in (None, False) or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def build_parser(argv: List[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ffmix",
        description="Fast, correct MixUp/CutMix data loading for PyTorch on FFCV.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run `ffmix COMMAND --help` for the options of one command.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text[0].upper() + help_text[1:] + ".",
                                    formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        if name == chosen:  # import only the module that will run
            importlib.import_module(module_name).configure_parser(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    module = importlib.import_module(SUBCOMMANDS[args.command][0])
    try:
        with command_line(), warnings.catch_warnings():  # messages name --flags, not keyword arguments
            warnings.simplefilter("once", FfmixWarning)
            warnings.showwarning = warning_printer(args.command, warnings.showwarning)
            return int(module.run(args) or 0)
    except KeyboardInterrupt as exc:
        if os.environ.get("RANK", "0") == "0":  # one line per run: the other ranks under torchrun stay quiet
            print(f"ffmix {args.command}: interrupted" + (f" {exc}" if str(exc) else ""), file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - sorted into user errors and bugs right here
        if is_user_error(exc):
            print(f"ffmix {args.command}: error: {user_message(exc)}", file=sys.stderr)
            return EXIT_USER_ERROR
        traceback.print_exc()
        print(f"ffmix {args.command}: internal error: {type(exc).__name__}: {exc}\n{BUG_REPORT}", file=sys.stderr)
        return EXIT_BUG


if __name__ == "__main__":
    sys.exit(main())
