"""The ``splitnet`` command: thin subcommands over the library.

Each subcommand lives in its own module with ``add_parser(subparsers)``, which
sets ``func`` to a function ``(args) -> int``. Bad input (a
:class:`splitnet.SplitnetError`, or an ``OSError`` such as a missing file)
prints one line on stderr and exits 2, with no traceback; any other exception
is a bug and shows its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from splitnet._errors import SplitnetError

# subcommand modules, in the order of ``splitnet --help``
COMMANDS = (
    "models",
    "points",
    "profile",
    "export",
    "bench-head",
    "serve",
    "device",
    "publish",
    "calibrate",
    "explain",
    "fit-svm",
    "optimize",
    "variants",
    "demo",
    "train",
    "train-bottleneck",
    "evaluate",
    "rate-accuracy",
    "plan",
    "index",
)


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors (``splitnet points: error: ...``), exit code 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="splitnet",
        description="Split inference between an edge device and the cloud.",
    )
    from splitnet import __version__

    parser.add_argument("--version", action="version", version=f"splitnet {__version__}")
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=ArgumentParser
    )
    for name in COMMANDS:
        importlib.import_module(f"splitnet.cli.{name.replace('-', '_')}").add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``splitnet`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit code."""
    # gRPC's informational logs (e.g. about fork handlers) are noise on a terminal
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # a usage error (2) or --help (0): a code, for callers in-process
        return e.code if isinstance(e.code, int) else 2
    try:
        return int(args.func(args) or 0)
    except (SplitnetError, OSError) as e:
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"splitnet {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except (MemoryError, RuntimeError) as e:
        # torch's allocator raises RuntimeError (OutOfMemoryError on CUDA): too large an
        # input or batch is bad input, said in one line; any other RuntimeError is a bug
        if not _out_of_memory(e):
            raise
        print(
            f"splitnet {args.command}: error: out of memory ({_first_line(e)}); "
            "try a smaller --input or batch",
            file=sys.stderr,
        )
        return 2


def _out_of_memory(e: BaseException) -> bool:
    return (
        isinstance(e, MemoryError)
        or type(e).__name__ == "OutOfMemoryError"
        or "can't allocate memory" in str(e)
    )


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    # torch's: "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't ..."
    text = text.split("DefaultCPUAllocator: ")[-1]
    return text.splitlines()[0] if text else type(e).__name__


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
