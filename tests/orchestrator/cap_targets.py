"""What an isolate may do with the capabilities it kept (importable by reference)."""

import os
import socket


def capability_sets() -> dict[str, int]:
    """CapInh, CapPrm, CapEff, CapBnd and CapAmb of this process, as numbers."""
    with open("/proc/self/status") as f:
        lines = [line.split(":") for line in f if line.startswith("Cap")]
    return {name: int(value, 16) for name, value in lines}


def chown_to_root(path: str) -> str:
    os.chown(path, 0, 0)
    return "done"


def read(path: str) -> str:
    with open(path) as f:
        return f.read()


def bind_low_port(port: int) -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", port))
    return "bound"


def regain() -> dict[str, str]:
    """Every way back to a capability a process of ours could try: raise the sets with
    capset, raise an ambient one, clear the securebits, and (the allowed neighbour) drop
    what it does not have, which changes nothing."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)

    class Header(ctypes.Structure):
        _fields_ = (("version", ctypes.c_uint32), ("pid", ctypes.c_int))

    class Data(ctypes.Structure):
        _fields_ = (("eff", ctypes.c_uint32), ("prm", ctypes.c_uint32), ("inh", ctypes.c_uint32))

    def capset(bits: int) -> str:
        header, data = Header(0x20080522, 0), (Data * 2)()
        data[0].eff = data[0].prm = data[0].inh = bits
        return _errno(libc.syscall(126, ctypes.byref(header), ctypes.byref(data)))  # capset

    def prctl(*args: int) -> str:
        return _errno(libc.prctl(*(ctypes.c_ulong(a) for a in (*args, 0, 0, 0)[:5])))

    return {
        "capset all": capset(0xFFFFFFFF),
        "ambient raise NET_RAW": prctl(47, 2, 13),  # PR_CAP_AMBIENT, RAISE, CAP_NET_RAW
        "securebits cleared": prctl(28, 0),  # PR_SET_SECUREBITS
        "keep caps": prctl(8, 1),  # PR_SET_KEEPCAPS (locked off)
        "capset none": capset(0),
    }


def _errno(result: int) -> str:
    import ctypes
    import errno

    return "ok" if result == 0 else errno.errorcode[ctypes.get_errno()]
