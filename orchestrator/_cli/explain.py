"""``isolates explain``: what a policy allows, in a table, and what it answers one call.

    isolates explain app.toml
    isolates explain --pledge "stdio rpath" --read /srv
    isolates explain app.toml --check 'openat(AT_FDCWD, "/etc/shadow", O_RDONLY)'

This module is the command's parser and its entry; the work is explain_policy.py's,
imported only when the command runs (every ``isolates`` command builds this parser).
"""

from __future__ import annotations

import argparse
import sys

from .command import Subparsers, UsageError


def register(subparsers: Subparsers) -> None:
    from .run import add_policy_options

    parser = subparsers.add_parser(
        "explain",
        help="what a policy allows, and what it answers a call",
        description="Explain a policy file (or run's policy options): the syscalls it "
        "allows by group with their conditions, the Landlock grants, ports and scopes; "
        "with --check, whether a call is allowed and which rule decides.",
    )
    parser.add_argument("file", nargs="?", metavar="FILE", help="a policy file")
    add_policy_options(parser)
    parser.add_argument(
        "--check",
        metavar="CALL",
        action="append",
        default=[],
        help="""a call to decide, e.g. 'openat(AT_FDCWD, "/etc/shadow", O_RDONLY)'""",
    )
    parser.set_defaults(command=main, argv=[], tmp_dir=None, kill=False, hard=False)


def main(args: argparse.Namespace) -> int:
    from .explain_policy import decide_call, parse_call, table
    from .run import options_policy

    if args.file is not None:
        if args.profile is not None:
            return _fail("give the policy file once: FILE or --profile FILE", 2)
        args.profile = args.file
    try:
        policy = options_policy(args)
        checks = [parse_call(text) for text in args.check]
    except UsageError as exc:
        return _fail(str(exc), 2)
    if not checks:
        print(table(policy))
        return 0
    verdicts = [decide_call(policy, call) for call in checks]
    for verdict in verdicts:
        print(verdict.text)
    return 0 if all(v.allowed for v in verdicts) else 1


def _fail(message: str, status: int) -> int:
    print(f"isolates explain: {message}", file=sys.stderr)
    return status
