"""What an isolate may do with the capabilities it kept (importable by reference)."""

import os
import socket


def capability_sets() -> dict[str, int]:
    """CapInh, CapPrm, CapEff, CapBnd and CapAmb of this process, as numbers."""
    with open("/proc/self/status") as f:
        lines = [line.split(":") for line in f if line.startswith("Cap")]
    return {name: int(value, 16) for name, value in lines}


def chown_to_root(path: str) -> str:
    try:
        os.chown(path, 0, 0)
    except OSError as exc:
        return f"denied: {exc.strerror}"
    return "done"


def read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError as exc:
        return f"denied: {exc.strerror}"


def bind_low_port(port: int) -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            return f"denied: {exc.strerror}"
    return "bound"
