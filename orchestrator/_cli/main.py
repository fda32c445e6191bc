"""The ``isolates`` command: ``demo``, ``run`` and ``trace``."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import TypeAlias

from . import explain, run, trace
from .command import Subparsers

Command: TypeAlias = Callable[[argparse.Namespace], int]


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "command"):
        parser.print_help()
        return 2
    command: Command = args.command
    try:
        return command(args)
    except BrokenPipeError:  # its reader went away (`| head`): end quietly, as tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="isolates",
        description="Privilege-separated Python programs: seccomp, Landlock, namespaces.",
    )
    sub = parser.add_subparsers(metavar="COMMAND")
    for register in _subcommands():
        register(sub)
    return parser


def _subcommands() -> list[Callable[[Subparsers], None]]:
    return [_register_demo, run.register, trace.register, explain.register]


def _register_demo(subparsers: Subparsers) -> None:
    demo = subparsers.add_parser("demo", help="run the privilege-separated server + writer demo")
    demo.add_argument("demo_args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    demo.set_defaults(command=_demo)


def _demo(args: argparse.Namespace) -> int:
    """``isolates demo [--port P] [--directory D]``: the demo parses its own options."""
    from ..demo import main as demo_main

    return demo_main(list(args.demo_args))
