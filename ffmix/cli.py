"""The ``ffmix`` command: one entry point, one module per subcommand.

Each subcommand module defines ``configure_parser(parser)`` and ``run(args) -> int``. They are imported only
when chosen, so ``ffmix convert --help`` answers without importing torch.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import List, Optional

from .errors import FfmixError

# subcommand -> (module, one-line help)
SUBCOMMANDS = {
    "convert": ("ffmix.convert", "write a dataset (ImageFolder, CIFAR, IDX, .npz) to an FFCV .beton"),
    "inspect": ("ffmix.inspect", "describe a .beton: samples, fields, classes, image sizes"),
    "preview": ("ffmix.preview", "save a grid of one mixed batch as a PNG"),
    "bench": ("ffmix.bench", "measure ffmix against the usual MixUp/CutMix data paths"),
    "train": ("ffmix.train", "train a classifier on the mixed stream and report accuracy"),
}

# Errors that come from the user's input or machine rather than from a bug: print one line, no traceback.
USER_ERRORS = (FfmixError, ValueError, FileNotFoundError, FileExistsError, PermissionError,
               NotADirectoryError, IsADirectoryError)


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
        return int(module.run(args) or 0)
    except USER_ERRORS as exc:
        print(f"ffmix {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"ffmix {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
