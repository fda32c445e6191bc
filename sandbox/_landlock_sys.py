"""The kernel side of Landlock: the syscalls bound with ctypes, and enforcing a plan that
was already fitted to this kernel (``_landlock_plan.resolve``).

An isolate enforces its plan with this module alone: it imports nothing but ctypes and
the other raw modules (no enum, no dataclasses, no typing), because it runs before the
isolate is confined, where every module costs start-up time.

Safety argument, kept next to the code it covers:

- Every call goes through ``_kernel.syscall`` (glibc's ``syscall(2)`` through ctypes with
  ``use_errno``), which reads errno *only* when the call returned -1: a stale errno after
  a successful call is never reported as a failure.
- ``syscall(2)`` is variadic, so every integer is passed as a ``c_long`` (a full register,
  never a C ``int`` with undefined upper bits) and every pointer as ``byref`` of a
  structure held in a local variable until the call returns. The kernel copies the
  structures (``copy_struct_from_user``) and keeps no pointer to them.
- The structure layouts are the UAPI's and are checked at import: ``landlock_ruleset_attr``
  is three u64 (passed with the size the running ABI knows), ``landlock_path_beneath_attr``
  is packed (12 bytes), ``landlock_net_port_attr`` is two u64.
- Every descriptor opened here (one ``O_PATH`` per granted path, the ruleset itself) is
  closed in a ``finally``: nothing leaks, whatever fails.
- Nothing here can widen rights: a ruleset only restricts, and enforcing it is one-way.
"""

from __future__ import annotations

import _thread
import ctypes
import errno
import os
import stat

from . import _kernel
from ._errors import SandboxError

TYPE_CHECKING = False  # typing only for the type checker (see the docstring)
if TYPE_CHECKING:
    from collections.abc import Collection, Iterable
    from typing import Final, TypeAlias

# The UAPI's numbers this module passes (include/uapi/linux/landlock.h). _landlock_abi,
# which names every right as an enum, checks at import that it agrees with these.
CREATE_RULESET_VERSION: Final = 1 << 0
CREATE_RULESET_ERRATA: Final = 1 << 1
RULE_PATH_BENEATH: Final = 1
RULE_NET_PORT: Final = 2
TSYNC: Final = 1 << 3  # LANDLOCK_RESTRICT_SELF_TSYNC (ABI 8)
#: The rights that apply to a file (not only a directory): EXECUTE, WRITE_FILE, READ_FILE,
#: TRUNCATE, IOCTL_DEV.
FILE_RIGHTS: Final = 1 | 2 | 4 | 1 << 14 | 1 << 15
#: What ``dropped`` names when no Landlock domain could be made at all.
DOMAIN: Final = "domain"
#: Enforcement values (``Enforcement``'s, as plain strings).
FULL: Final = "full"
PARTIAL: Final = "partial"
NONE: Final = "none"

#: Test hook: the highest ABI this process believes the kernel has (read at apply time).
ABI_CAP_ENV: Final = "ISOLATES_LANDLOCK_ABI"
_UNAVAILABLE: Final = (errno.ENOSYS, errno.EOPNOTSUPP)


class RulesetAttr(ctypes.Structure):
    _fields_ = (
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    )


class PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = (("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32))


class NetPortAttr(ctypes.Structure):
    _fields_ = (("allowed_access", ctypes.c_uint64), ("port", ctypes.c_uint64))


assert ctypes.sizeof(RulesetAttr) == 24
assert ctypes.sizeof(PathBeneathAttr) == 12
assert ctypes.sizeof(NetPortAttr) == 16


def _call(name: str, *args: object) -> int:
    return _kernel.syscall(name, *(ctypes.c_long(a) if isinstance(a, int) else a for a in args))


def kernel_abi() -> int:
    """The Landlock ABI version of the running kernel; 0 when Landlock is unavailable.
    Asked once per process: the kernel does not change under it."""
    global _KERNEL_ABI
    if _KERNEL_ABI is None:
        try:
            _KERNEL_ABI = _call("landlock_create_ruleset", None, 0, CREATE_RULESET_VERSION)
        except OSError as exc:  # SandboxError(ENOSYS) too: an architecture without numbers
            if exc.errno not in _UNAVAILABLE:
                raise
            _KERNEL_ABI = 0
    return _KERNEL_ABI


_KERNEL_ABI: int | None = None


def abi() -> int:
    """The ABI to use: the kernel's, capped by ``$ISOLATES_LANDLOCK_ABI`` when set."""
    cap = os.environ.get(ABI_CAP_ENV, "").strip()
    if cap and not cap.isdigit():
        raise SandboxError(errno.EINVAL, f"${ABI_CAP_ENV}={cap!r}: expected an ABI number")
    kernel = kernel_abi()
    return min(kernel, int(cap)) if cap else kernel


def errata() -> int:
    """Bitmask of fixed errata (bit N-1: erratum N); 0 when the kernel cannot say."""
    try:
        return _call("landlock_create_ruleset", None, 0, CREATE_RULESET_ERRATA)
    except OSError as exc:
        if exc.errno in (*_UNAVAILABLE, errno.EINVAL):  # EINVAL: before the errata query
            return 0
        raise


def create_ruleset(fs: int, net: int, scopes: int, abi: int) -> int:
    """A new ruleset descriptor handling these rights; the caller closes it."""
    attr = RulesetAttr(fs, net, scopes)
    size = 8 if abi < 4 else 16 if abi < 6 else 24  # the struct as this ABI knows it
    return _call("landlock_create_ruleset", ctypes.byref(attr), size, 0)


def add_path_rule(ruleset: int, parent_fd: int, access: int) -> None:
    attr = PathBeneathAttr(access, parent_fd)
    _call("landlock_add_rule", ruleset, RULE_PATH_BENEATH, ctypes.byref(attr), 0)


def add_port_rule(ruleset: int, port: int, access: int) -> None:
    attr = NetPortAttr(access, port)
    _call("landlock_add_rule", ruleset, RULE_NET_PORT, ctypes.byref(attr), 0)


def restrict_self(ruleset: int, flags: int) -> None:
    """Enforce ``ruleset`` on the calling thread (all threads with TSYNC). One-way."""
    _kernel.set_no_new_privs()  # required without CAP_SYS_ADMIN; seccomp sets it anyway
    _call("landlock_restrict_self", ruleset, flags)


#: (absolute path, AccessFs bits, missing_ok, st_dev, st_ino): what a plan grants on one
#: path, and the identity of the object the path named when the grant was made (0, 0 if
#: it did not exist then).
PathGrant: TypeAlias = "tuple[str, int, bool, int, int]"
Paths: TypeAlias = "Iterable[PathGrant]"
Ports: TypeAlias = "Iterable[tuple[int, int]]"
#: A plan fitted to one kernel (``_landlock_plan.resolve``), as plain data an isolate can
#: be sent: (fs, net, scopes, restrict, dropped, paths, ports, abi, hard). ``fs``, ``net``
#: and ``scopes`` are what the ruleset handles (all 0: no domain can be made), ``restrict``
#: the restrict_self flags, ``dropped`` what the kernel lacks, ``hard`` the plan's
#: Compat.HARD (then anything dropped is an error).
Resolved: TypeAlias = (
    "tuple[int, int, int, int, tuple[str, ...], tuple[PathGrant, ...], "
    "tuple[tuple[int, int], ...], int, bool]"
)


def for_threads(resolved: Resolved, all_threads: bool, covered: Collection[int] = ()) -> Resolved:
    """``resolved`` as it can be enforced by this thread for ``all_threads``: Landlock is
    per-thread until ABI 8 (TSYNC), so on an older kernel ``all_threads`` holds only when
    this is the process's sole thread, and is otherwise reported as dropped. ``covered``
    names threads (native ids) that already applied this plan themselves (a supervisor's
    own helper threads): they do not count."""
    fs, net, scopes, restrict, dropped, paths, ports, version, hard = resolved
    if not all_threads:
        return resolved
    if version >= 8:
        restrict |= TSYNC
    elif not _alone(covered):
        dropped = (*dropped, "all_threads")
    return (fs, net, scopes, restrict, dropped, paths, ports, version, hard)


def _alone(covered: Collection[int]) -> bool:
    try:  # a sole thread is the whole process, and nobody else can start one meanwhile
        others = set(os.listdir("/proc/self/task")) - {str(t) for t in covered}
        return others == {str(_thread.get_native_id())}
    except OSError:
        return False


def enforce_resolved(resolved: Resolved) -> tuple[str, int, tuple[str, ...]]:
    """Enforce a fitted plan (see ``for_threads``): (enforcement, abi, dropped). The
    caller has refused a Compat.HARD plan that dropped anything (``_landlock_plan``
    words that error)."""
    fs, net, scopes, restrict, _dropped, paths, ports, version, _hard = resolved
    if fs or net or scopes:
        enforce((fs, net, scopes, restrict), paths, ports, version)
    return enforcement_of(resolved)


def enforcement_of(resolved: Resolved) -> tuple[str, int, tuple[str, ...]]:
    """What ``enforce_resolved`` will report for ``resolved``, known before enforcing it
    (``isolates run`` says a partial domain before the program's first call, whatever
    its policy lets it write)."""
    fs, net, scopes, _restrict, dropped, _paths, _ports, version, _hard = resolved
    if not (fs or net or scopes):
        return NONE, version, dropped
    return (PARTIAL if dropped else FULL), version, dropped


def enforce(handled: tuple[int, int, int, int], paths: Paths, ports: Ports, abi: int) -> None:
    """Build the ruleset ``handled`` (fs, net, scopes, restrict flags) describes, add every
    rule, and enforce it."""
    fs, net, scopes, restrict = handled
    try:
        ruleset = create_ruleset(fs, net, scopes, abi)
    except OSError as exc:
        raise _explain("landlock_create_ruleset", exc) from None
    try:
        _add_paths(ruleset, paths, fs)
        _add_ports(ruleset, ports, net)
        restrict_self(ruleset, restrict)
    except SandboxError:
        raise
    except OSError as exc:
        raise _explain("landlock_restrict_self", exc) from None
    finally:
        os.close(ruleset)


def _add_paths(ruleset: int, paths: Paths, handled: int) -> None:
    for path, access, missing_ok, dev, ino in paths:
        if path == ROOT:
            _add_path(ruleset, _root_fd(), path, access & handled)
            continue
        fd = _open_path(path, missing_ok, (dev, ino))
        if fd is None:
            continue
        try:
            if not stat.S_ISDIR(_fstat(fd, path).st_mode):
                access &= FILE_RIGHTS  # the path became a file since the policy was built
            _add_path(ruleset, fd, path, access & handled)
        finally:
            os.close(fd)


def _add_path(ruleset: int, fd: int, path: str, access: int) -> None:
    if access:
        try:
            add_path_rule(ruleset, fd, access)
        except OSError as exc:
            raise _explain(f"landlock_add_rule({path!r})", exc) from None


#: The grant path that means "this process's root directory" (the minimal domain's).
ROOT: Final = ""
_root: tuple[int, int, int] | None = None  # (fd, st_dev, st_ino)


def _root_fd() -> int:
    """An O_PATH descriptor of "/", opened once per process and kept (close-on-exec).

    A policy stacked on a first one that denies openat still needs it for its minimal
    domain; the first apply opens it, before any filter. A process cannot change its
    root once confined (mount and pivot_root are always denied), so it stays right.
    The descriptor is checked before each use: a program that closed it, or whose fd
    number now names something else, gets a new one. A forked child inherits it.
    """
    global _root
    if _root is not None:
        fd, dev, ino = _root
        try:
            st = os.fstat(fd)
        except OSError as exc:
            if exc.errno == errno.EPERM:  # a filter denies fstat: trust it. At worst the
                return fd  # grant lands elsewhere, and a grant never widens anything.
        else:
            if (st.st_dev, st.st_ino) == (dev, ino) and stat.S_ISDIR(st.st_mode):
                return fd
    opened = _open_path("/", False, (0, 0))
    assert opened is not None  # "/" always exists: only a missing_ok path gives None
    st = os.fstat(opened)
    _root = (opened, st.st_dev, st.st_ino)
    return opened


def _open_path(path: str, missing_ok: bool, identity: tuple[int, int]) -> int | None:
    """An O_PATH descriptor of the object the grant was made on, or None if it is gone.

    A grant is on an *object*: if something (say a confined worker that can write the
    parent directory) replaced the path since the policy was built, by a symlink to "/"
    or anything else, the grant would follow it there. So the object must be the one
    recorded (same st_dev and st_ino), and a path that did not exist then must now
    resolve without any symlink.
    """
    try:
        if identity == (0, 0):
            return _open_no_symlinks(path)
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except SandboxError:
        raise
    except (FileNotFoundError, NotADirectoryError) as exc:
        if missing_ok:
            return None
        raise SandboxError(
            exc.errno,
            f"Landlock: {path!r} no longer exists (it did when the policy was "
            "built); pass missing_ok=True to grant it only when present",
        ) from None
    except OSError as exc:
        reason = _open_failed(exc)
        raise SandboxError(exc.errno, f"Landlock: cannot open {path!r}: {reason}") from None
    st = _fstat(fd, path, close=True)
    if (st.st_dev, st.st_ino) != identity:
        os.close(fd)
        raise SandboxError(
            errno.ESTALE,
            f"Landlock: {path!r} is no longer the object the policy granted (device:inode "
            f"{identity[0]}:{identity[1]}, now {st.st_dev}:{st.st_ino}): it was replaced or "
            "moved, perhaps by a symlink, since the policy was built. Build the policy again "
            "if the change is legitimate.",
        )
    return fd


def _open_no_symlinks(path: str) -> int:
    """O_PATH open of ``path``, one component at a time, refusing any symlink on the way."""
    fd = os.open("/", os.O_PATH | os.O_CLOEXEC)
    for part in [p for p in path.split("/") if p]:
        try:
            nxt = os.open(part, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
        finally:
            os.close(fd)
        fd = nxt
        if stat.S_ISLNK(_fstat(fd, path, close=True).st_mode):
            os.close(fd)
            raise SandboxError(
                errno.ELOOP,
                f"Landlock: {path!r} did not exist when the policy was built and now "
                f"resolves through a symlink ({part!r}); grant the real path instead",
            )
    return fd


def _fstat(fd: int, path: str, *, close: bool = False) -> os.stat_result:
    try:
        return os.fstat(fd)
    except OSError as exc:
        if close:
            os.close(fd)
        raise SandboxError(
            exc.errno, f"Landlock: cannot fstat {path!r} to grant it: {_open_failed(exc)}"
        ) from None


def _open_failed(exc: OSError) -> str:
    if exc.errno == errno.EPERM:  # seccomp's answer: Landlock says EACCES
        return (
            "EPERM, from a seccomp filter already loaded here; stacking a policy that "
            "grants paths needs openat(O_PATH) and fstat, so the first policy must allow "
            "them (e.g. SystemIO.allow_open_readonly() and allow_metadata())"
        )
    return str(exc.strerror)


def _add_ports(ruleset: int, ports: Ports, handled: int) -> None:
    for port, access in ports:
        if access & handled:
            try:
                add_port_rule(ruleset, port, access & handled)
            except OSError as exc:
                raise _explain(f"landlock_add_rule(port {port})", exc) from None


_REASONS: Final = {
    errno.ENOSYS: "this kernel has no Landlock (CONFIG_SECURITY_LANDLOCK, Linux 5.13+)",
    errno.EOPNOTSUPP: "Landlock is built in but disabled: add 'landlock' to the lsm= boot "
    "parameter (or CONFIG_LSM)",
    errno.E2BIG: "this thread already has 16 stacked Landlock domains, the kernel's limit",
    errno.EPERM: "the thread has neither NO_NEW_PRIVS nor CAP_SYS_ADMIN in its namespace",
    errno.EINVAL: "the kernel refused a right or flag (a bug: isolates fits requests to "
    "the running ABI first)",
    errno.ENOMSG: "a rule grants no right the ruleset handles",
    errno.EBADFD: "a rule's descriptor is not a usable file",
}


def _explain(call: str, exc: OSError) -> SandboxError:
    err = exc.errno or errno.EPERM
    return SandboxError(err, f"Landlock: {call} failed: {_REASONS.get(err, exc.strerror)}")


def rehearse() -> None:
    """Make a ruleset with one rule and close it, never enforced: the first-time costs of
    the path (and the root descriptor, kept), paid before a confinement that needs them.
    Nothing is restricted: a ruleset does nothing until landlock_restrict_self."""
    version = abi()
    if version < 2:
        return
    refer = 1 << 13  # LANDLOCK_ACCESS_FS_REFER
    try:
        ruleset = create_ruleset(refer, 0, 0, version)
    except OSError:
        return
    try:
        add_path_rule(ruleset, _root_fd(), refer)
    except OSError:
        pass
    finally:
        os.close(ruleset)
