"""Parse untrusted input in a fresh isolate that can do nothing but compute.

``parse_config`` runs in a new interpreter per call, confined by a policy that allows no
file, no socket, no process: only what CPython needs to run, and returning its result.
If the parser were exploited, the attacker would hold a process that can open nothing,
connect nowhere and is killed at its first forbidden syscall, naming it.

    python examples/parse_untrusted.py
"""

from __future__ import annotations

import configparser
import sys

from isolates.orchestrator import IsolateViolation, isolate
from isolates.sandbox import Action, Policy

COMPUTE_ONLY = Policy(default=Action.KILL_PROCESS)


@isolate(COMPUTE_ONLY, timeout=10)
def parse_config(text: str) -> dict[str, dict[str, str]]:
    parser = configparser.ConfigParser()
    parser.read_string(text)
    return {section: dict(parser[section]) for section in parser.sections()}


@isolate(COMPUTE_ONLY, timeout=10)
def exploited_parser(text: str) -> str:
    """What a compromised parser would try: read a secret."""
    with open("/etc/passwd") as f:
        return f.read()


def main() -> int:
    good = "[server]\nhost = example.org\nport = 8080\n"
    print("parsed:", parse_config(good))
    try:
        parse_config("[broken\nno closing bracket")
    except configparser.Error as exc:  # a custom exception comes back as WorkerFailed
        print("unexpected:", exc)
    except Exception as exc:
        print(f"bad input -> {type(exc).__name__}: {str(exc).splitlines()[0]}")
    try:
        exploited_parser("")
    except IsolateViolation as exc:
        print(f"exploited parser -> IsolateViolation: {exc.syscall} was refused, here is safe")
    return 0


if __name__ == "__main__":
    sys.exit(main())
