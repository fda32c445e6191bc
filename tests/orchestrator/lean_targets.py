"""Functions for the lean-child and fork-server tests. This module imports only ``os``
and ``sys`` itself, so what an isolate running them has loaded is the isolate's doing."""

import os
import sys


def loaded_modules() -> list[str]:
    return sorted(sys.modules)


def facts() -> dict[str, object]:
    """How the isolate was started, as it sees it."""
    with open("/proc/self/status") as f:
        status = dict(line.split(":\t", 1) for line in f.read().splitlines() if ":\t" in line)
    return {
        "pid": os.getpid(),
        "parent": os.getppid(),
        "own_group": os.getpgrp() == os.getpid(),
        "seccomp": status["Seccomp"].strip(),
        "no_new_privs": status["NoNewPrivs"].strip(),
        "environ": dict(os.environ),
    }


def descriptors() -> dict[int, str]:
    """This process's descriptors (but the one listing them) and what they name."""
    found = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            found[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:  # the listing's own descriptor, closed by now
            continue
    return {fd: what for fd, what in found.items() if not what.endswith("/fd")}


def sleep_then(value: int, seconds: float) -> int:
    import time

    time.sleep(seconds)
    return value


def fail_chained() -> None:
    try:
        {}["missing"]
    except KeyError as exc:
        raise ValueError("while looking it up") from exc


def a_set() -> set[int]:
    return {3, 1, 2}
