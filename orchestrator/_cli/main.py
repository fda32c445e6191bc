"""The ``isolates`` command: ``demo``, ``run``, ``trace`` and ``explain``.

Lean on purpose: ``isolates run`` with a cached policy (run_cache.py) execs its program
before argparse or any subcommand is imported; otherwise only the chosen subcommand's
module is imported (all of them only for ``isolates --help``).
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # not typing's: this module is on the cached start's path
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Sequence
    from typing import TypeAlias

    from .command import Subparsers

    Command: TypeAlias = Callable[[argparse.Namespace], int]

#: Each subcommand and the module that registers it (``demo`` is registered here).
SUBCOMMANDS = {"run": "run", "trace": "trace", "explain": "explain"}


def main(argv: Sequence[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else list(argv)
    if words[:1] == ["run"]:
        from .run_cache import run_cached

        status = run_cached(words[1:])  # returns only without a cached policy, or failing
        if status is not None:
            return status
    return _main(words)


def _main(words: list[str]) -> int:
    import os
    import signal

    parser = _parser(words[:1])
    args = parser.parse_args(words)
    if not hasattr(args, "command"):
        parser.print_help()
        return 2
    args.cache_tokens = words[1:] if words[:1] == ["run"] else None  # run_cache's key
    command: Command = args.command
    try:
        return command(args)
    except BrokenPipeError:  # its reader went away (`| head`): end quietly, as tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE


def _parser(first: list[str]) -> argparse.ArgumentParser:
    import argparse

    parser = argparse.ArgumentParser(
        prog="isolates",
        description="Privilege-separated Python programs: seccomp, Landlock, namespaces.",
    )
    sub = parser.add_subparsers(metavar="COMMAND")
    for register in _subcommands(first[0] if first else None):
        register(sub)
    return parser


def _subcommands(chosen: str | None) -> list[Callable[[Subparsers], None]]:
    """The chosen subcommand's registration alone, or every one (help, a typo)."""
    import importlib

    if chosen == "demo":
        return [_register_demo]
    names = [SUBCOMMANDS[chosen]] if chosen in SUBCOMMANDS else list(SUBCOMMANDS.values())
    modules = [importlib.import_module(f"{__package__}.{name}") for name in names]
    registers = [module.register for module in modules]
    return registers if chosen in SUBCOMMANDS else [_register_demo, *registers]


def _register_demo(subparsers: Subparsers) -> None:
    import argparse

    demo = subparsers.add_parser("demo", help="run the privilege-separated server + writer demo")
    demo.add_argument("demo_args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    demo.set_defaults(command=_demo)


def _demo(args: argparse.Namespace) -> int:
    """``isolates demo [--port P] [--directory D]``: the demo parses its own options."""
    from ..demo import main as demo_main

    return demo_main(list(args.demo_args))
