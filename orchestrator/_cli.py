"""The ``isolates`` command: ``demo``, ``run`` and ``trace``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

Command = Callable[[argparse.Namespace], int]


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "command"):
        parser.print_help()
        return 2
    command: Command = args.command
    return command(args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="isolates",
        description="Privilege-separated Python programs: seccomp, Landlock, namespaces.",
    )
    sub = parser.add_subparsers(metavar="COMMAND")
    demo = sub.add_parser("demo", help="run the privilege-separated server + writer demo")
    demo.add_argument("demo_args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    demo.set_defaults(command=_demo)
    for register in _extra_commands():
        register(sub)
    return parser


def _demo(args: argparse.Namespace) -> int:
    from .demo import main as demo_main

    return demo_main(list(args.demo_args))


def _extra_commands() -> list[
    Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]
]:
    """Subcommands defined in their own modules (run, trace)."""
    from . import _cli_run, _trace

    return [_cli_run.register, _trace.register]


if __name__ == "__main__":
    sys.exit(main())
