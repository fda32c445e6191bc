"""The compiled policy of an ``isolates run`` command line, kept for its next run.

Building a policy from options imports most of isolates (the Policy and Landlock values,
the profiles, the compiler): tens of ms, against a compile of about 1 ms. So run keeps
what it applies (run_exec's ``Ready``) under a name made of everything that decided it,
and the next run of the same command line loads that and execs, importing only the raw
modules. ``ISOLATES_RUN_CACHE=0`` turns it off.

Where, and why there: in the ``__pycache__`` directory beside this module, owned by the
user who runs it. Python trusts that directory for its own bytecode on the same grounds
we do: whoever can write it can write the code beside it. A cache in ``~/.cache`` would
be weaker than the code that reads it: a program run with ``--rw ~/.cache`` (a pip or
npm cache) could plant a policy that allows everything, and the user's next ``isolates
run`` would apply it. Here a program can plant an entry only where it could equally
rewrite isolates itself. An installation the user cannot write (a system one, for a
user other than its owner) gets no cache: run builds its policy every time.

What makes an entry valid (checked before anything is applied; any doubt is a miss, and a
miss only costs the build):

- the key: this format, Python's version, the kernel (release, machine, Landlock ABI),
  the user and groups, the working directory, the environment variables the build reads
  (``POLICY_ENVIRONMENT``), the options and the command as given. The entry holds the
  key itself, compared in full: the file name is only a checksum of it. Another user's
  entry is never read (owner and mode checked);
- isolates' own code: the size and mtime of every isolates module that built the policy
  (as Python's bytecode cache checks a source file);
- the files the policy was made of: the program, its ``#!`` interpreters and its loader
  (the same objects, same size and mtime), ``/etc/ld.so.conf`` and its directory, and
  the bytes of a ``--profile`` file; and every Landlock grant's object (the same
  device and inode; a path that did not exist must still not exist);
- the command resolves to the same file through the same $PATH.

Written atomically (a new file renamed over), read with O_NOFOLLOW, bounded in size and
in number of entries. It is kept whatever PYTHONDONTWRITEBYTECODE says (it is no
bytecode); ISOLATES_RUN_CACHE=0 is its own switch. Runs that keep a parent
for limits or ``--tmp``, and ``--learn`` or ``--dry-run``, are not cached; a run that
reports its denials (the default) is: its Ready holds what run_report.py answers with.
"""

from __future__ import annotations

import marshal
import os
import stat
import sys
import zlib

from .run_exec import environment, which
from .run_report import run_ready

TYPE_CHECKING = False  # not typing's: this module is on the cached start's path
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence
    from typing import Any

    from .run_exec import Ready

FORMAT = 2
MAGIC = b"isolates run cache 2\n"
MAX_ENTRY = 4 << 20  # bytes; a policy's program and plan are a few KiB
MAX_ENTRIES = 256  # past this many, storing a new entry first clears the others
LOADER_CONFIG = ("/etc/ld.so.conf", "/etc/ld.so.conf.d")
#: The variables building a run's policy reads (the command's $PATH, the loader's
#: directories, pledge's home, the CA files, the Landlock ABI cap): a test holds the build
#: to these. The rest of the environment is the program's alone, read again at each run.
POLICY_ENVIRONMENT = (
    "PATH", "LD_LIBRARY_PATH", "HOME", "SSL_CERT_FILE", "SSL_CERT_DIR", "ISOLATES_LANDLOCK_ABI",
)  # fmt: skip


def run_cached(tokens: Sequence[str]) -> int | None:
    """``isolates run`` from its cached policy: returns None when there is none (a miss),
    else only if confining or the exec failed (the exit status); on success the process
    is the program."""
    split = _split(tokens)
    if split is None:
        return None
    options, argv = split
    key = _key(options, argv[0])
    entry = _load(key) if key is not None else None
    if entry is None:
        return None
    env = environment(entry["env"], entry["clear_env"], None, os.environ)
    ready: Ready = entry["ready"]
    if which(argv[0], env.get("PATH", os.defpath)) != ready[0]:
        return None
    for fd in entry["uninherit"]:  # a --profile passed as /proc/self/fd/N
        try:
            os.set_inheritable(fd, False)
        except OSError:
            pass
    return run_ready(ready, argv, env)


def remember(
    tokens: Sequence[str],
    argv: Sequence[str],
    ready: Ready,
    *,
    env: tuple[str, ...],
    clear_env: bool,
    profiles: Iterable[tuple[str, bytes]] = (),
    uninherit: tuple[int, ...] = (),
) -> None:
    """Keep ``ready`` for the next run of ``tokens`` (the words after ``run``), whose
    program argv the options parsed to ``argv``. Best effort: a cache that cannot be
    written is no cache."""
    split = _split(tokens)
    if split is None or split[1] != list(argv):
        return  # the options did not end at the first "--": keyed words would lie
    key = _key(split[0], split[1][0])
    if key is None:
        return
    entry = {
        "key": key,
        "ready": ready,
        "env": tuple(env),
        "clear_env": clear_env,
        "uninherit": uninherit,
        "code": _signatures(_isolates_files()),
        "files": _signatures(_program_files(ready[0])),
        "contents": tuple(profiles),
    }
    try:
        _store(_entry_path(key), marshal.dumps(entry))
    except (OSError, ValueError):
        pass


def _split(tokens: Sequence[str]) -> tuple[list[str], list[str]] | None:
    if not _enabled() or "--" not in tokens:
        return None
    i = list(tokens).index("--")
    options, argv = list(tokens[:i]), list(tokens[i + 1 :])
    return (options, argv) if argv else None


def _enabled() -> bool:
    return os.environ.get("ISOLATES_RUN_CACHE", "1") != "0"


def _key(options: list[str], command: str) -> tuple[object, ...] | None:
    from isolates.sandbox.lowlevel import landlock_abi

    try:
        cwd = os.getcwd()
    except OSError:
        return None
    uname = os.uname()
    return (
        FORMAT, sys.version, sys.executable, uname.release, uname.machine, landlock_abi(),
        os.geteuid(), os.getegid(), tuple(os.getgroups()), cwd,
        tuple((name, os.environ.get(name)) for name in POLICY_ENVIRONMENT),
        tuple(options), command,
    )  # fmt: skip


def _entry_path(key: tuple[object, ...]) -> str:
    words = repr(key).encode("utf-8", "surrogateescape")
    name = f"run-{os.geteuid()}-{zlib.crc32(words):08x}{zlib.adler32(words):08x}.policy"
    return os.path.join(_directory(), name)


def _directory() -> str:
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "__pycache__")


# -- reading ---------------------------------------------------------------------------


def _load(key: tuple[object, ...]) -> dict[str, Any] | None:
    return _load_at(_entry_path(key), key)


def _load_at(path: str, key: tuple[object, ...]) -> dict[str, Any] | None:
    data = _read_owned(path)
    if data is None or not data.startswith(MAGIC):
        return None
    checksum, _, payload = data[len(MAGIC) :].partition(b"\n")
    if checksum != b"%08x" % zlib.crc32(payload):
        return None
    try:
        entry = marshal.loads(payload)
    except (ValueError, EOFError, TypeError):
        return None
    if not isinstance(entry, dict) or entry.get("key") != key:
        return None
    return entry if _still_valid(entry) else None


def _read_owned(path: str) -> bytes | None:
    """The file's bytes if it and its directory are this user's and nobody else can
    write them; None otherwise (or if there is no such file)."""
    if not _owned(os.lstat, _directory(), stat.S_ISDIR):
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not _owned(os.fstat, fd, stat.S_ISREG) or os.fstat(fd).st_size > MAX_ENTRY:
            return None
        return os.read(fd, MAX_ENTRY + 1)
    except OSError:
        return None
    finally:
        os.close(fd)


def _owned(stat_of: Any, what: Any, kind: Any) -> bool:
    try:
        st = stat_of(what)
    except OSError:
        return False
    return bool(kind(st.st_mode)) and st.st_uid == os.geteuid() and not st.st_mode & 0o022


def _still_valid(entry: dict[str, Any]) -> bool:
    for kind in ("code", "files"):  # a derived value has no files
        kept = entry.get(kind, ())
        if _signatures(path for path, *_ in kept) != kept:
            return False
    for path, content in entry.get("contents", ()):
        if _content(path) != content:
            return False
    if "ready" not in entry:
        return True
    _path, _bpf, start, landlock, *_rest = entry["ready"]
    return all(_same_objects(r) for r in (start, landlock) if r is not None)


def _same_objects(resolved: tuple[Any, ...]) -> bool:
    """Every grant's path still names the object it was made on (what Landlock would
    check as it applies them, known here before anything is applied)."""
    for path, _access, _missing_ok, dev, ino in resolved[5]:
        if not path:  # the process's root
            continue
        try:
            st = os.stat(path)
        except OSError:
            if (dev, ino) != (0, 0):
                return False
            continue
        if (st.st_dev, st.st_ino) != (dev, ino):
            return False
    return True


def _signatures(paths: Iterable[str]) -> tuple[tuple[str, int, int, int, int], ...]:
    out = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            out.append((path, 0, 0, -1, 0))
            continue
        out.append((path, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(out)


def _content(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read(MAX_ENTRY)
    except OSError:
        return None


def content_of(path: str) -> bytes | None:
    """A --profile file's bytes as an entry keeps them (None: unreadable, not cached)."""
    return _content(path)


# -- other values derived from isolates' code alone ---------------------------------------


def derived(name: str, compute: Callable[[], Any]) -> Any:
    """``compute()``, kept beside the code under ``name`` like a run's policy and valid
    while isolates' own code is unchanged (the trace's table of which arguments matter,
    built from every profile: 90 ms). The value must be plain data ``marshal`` stores."""
    if not _enabled():
        return compute()
    key = (FORMAT, sys.version, name)
    path = os.path.join(_directory(), f"{name}-{os.geteuid()}.marshal")
    entry = _load_at(path, key)
    if entry is not None:
        return entry["value"]
    value = compute()
    entry = {"key": key, "value": value, "code": _signatures(_isolates_files())}
    try:
        _store(path, marshal.dumps(entry))
    except (OSError, ValueError):
        pass
    return value


# -- writing ---------------------------------------------------------------------------


def _isolates_files() -> list[str]:
    """The source of every isolates module loaded (they built the policy), and the
    profiles' data files."""
    files = sorted(
        str(module.__file__)
        for name, module in list(sys.modules.items())
        if name.startswith("isolates.") and getattr(module, "__file__", None)
    )
    profiles = sys.modules.get("isolates.sandbox.profiles")
    if profiles is not None and getattr(profiles, "__file__", None):
        folder = os.path.dirname(profiles.__file__ or "")
        files += sorted(os.path.join(folder, n) for n in os.listdir(folder) if n.endswith(".json"))
    return files


def _program_files(path: str) -> list[str]:
    from .run_startup import exec_chain

    return [*exec_chain(path), *LOADER_CONFIG]


def _store(path: str, entry: bytes) -> None:
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        os.mkdir(directory, 0o755)
    if not _owned(os.lstat, directory, stat.S_ISDIR):
        return
    names = [n for n in os.listdir(directory) if n.startswith("run-") and n.endswith(".policy")]
    if len(names) >= MAX_ENTRIES:
        for name in names:
            _unlink(os.path.join(directory, name))
    data = MAGIC + b"%08x\n" % zlib.crc32(entry) + entry
    temporary = os.path.join(directory, f".run-{os.getpid()}-{os.urandom(4).hex()}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(temporary, flags, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(temporary, path)
    except OSError:
        _unlink(temporary)
        raise


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
