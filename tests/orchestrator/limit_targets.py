"""What an isolate under Limits tries (importable by reference)."""

import os
import resource


def allocate(mib: int) -> int:
    block = bytearray(mib << 20)
    return len(block) >> 20


def spin(seconds_of_cpu: float) -> str:
    import time

    start = time.process_time()
    while time.process_time() - start < seconds_of_cpu:
        pass
    return "done"


def write(path: str, size: int) -> int:
    with open(path, "wb") as f:
        f.write(b"x" * size)
    return size


def open_many(directory: str, count: int) -> int:
    files = [open(os.path.join(directory, f"f{i}"), "w") for i in range(count)]  # noqa: SIM115
    for f in files:
        f.close()
    return count


def raise_limit() -> str:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard + 1, hard + 1))
    except (OSError, ValueError) as exc:
        refused = type(exc).__name__
    else:
        return "raised"
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft - 1, hard - 1))  # lowering: allowed
    return f"refused ({refused}), lowered to {resource.getrlimit(resource.RLIMIT_NOFILE)[0]}"


def core_limit() -> tuple[int, int]:
    return resource.getrlimit(resource.RLIMIT_CORE)
