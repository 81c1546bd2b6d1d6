"""The ``grunet`` command: one subcommand per stage, each a thin call into the package.

Each subcommand lives in its own module ``grunet/cli/<name>.py`` exposing
``add_parser(subparsers) -> argparse.ArgumentParser`` (which sets ``func=run``) and
``run(args) -> int``. Errors a user can act on (:class:`grunet.errors.GrunetError`) are printed as
one line on stderr with exit code 2; nothing else is caught.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import sys
import warnings

from grunet import __version__
from grunet.cli import lean_dask
from grunet.errors import GrunetError, MetadataWarning
from grunet.memory import keep_large_buffers_off_heap

SUBCOMMANDS = (
    "run",
    "check",
    "convert",
    "train",
    "predict",
    "segment",
    "measure",
    "count",
    "evaluate",
    "report",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="grunet", description="Segment, measure and count cells with GRUU-Net."
    )
    parser.add_argument("--version", action="version", version=f"grunet {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"grunet.cli.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"grunet.cli.{name}":
                raise
            continue  # stage not built yet
        module.add_parser(subparsers)
    return parser


def _one_line_warnings(command: str) -> None:
    """Show metadata warnings (they name the file) as one line, without grunet's source line."""
    default = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, MetadataWarning):
            print(f"grunet {command}: warning: {message}", file=file or sys.stderr)
        else:
            default(message, category, filename, lineno, file, line)

    warnings.showwarning = show


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``grunet`` console script."""
    args = build_parser().parse_args(argv)
    _one_line_warnings(args.command)
    if args.command != "train":
        keep_large_buffers_off_heap()  # peak RSS = working set, whatever the image size
    try:
        return int(args.func(args) or 0)
    except GrunetError as err:
        print(f"grunet {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"grunet {args.command}: interrupted", file=sys.stderr)
        return 130


def console() -> None:
    """The ``grunet`` executable (and ``python -m grunet``): :func:`main`, then exit.

    Before the interpreter shuts down, every object is moved out of the garbage collector's
    reach (``gc.freeze``): shutdown's collections would otherwise walk the ~300,000 objects of
    torch, dask, zarr and pandas only to free memory the OS takes back anyway (from the end of
    :func:`main` to the process being gone: 0.58 → 0.13 s, ``benchmarks/cli_overhead.py``).
    Files are closed and ``atexit`` handlers still run; outputs are complete before
    :func:`main` returns (written atomically). Before :func:`main`, dask.array is kept from
    importing integrations grunet does not use (:mod:`grunet.cli.lean_dask`).
    """
    lean_dask.install()
    code = main()
    gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    console()
