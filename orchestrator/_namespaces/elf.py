"""Reading an executable's interpreter: the ``#!`` line, or an ELF file's PT_INTERP."""

from __future__ import annotations

import os
import struct
from typing import BinaryIO

PT_INTERP = 3


def interpreter(path: str) -> str | None:
    """What the kernel runs to execute ``path``: its ``#!`` program or its ELF
    interpreter (the dynamic loader); None for a static or unreadable file."""
    try:
        with open(path, "rb") as f:
            head = f.read(128)
            if head.startswith(b"#!"):
                words = head[2:].split(b"\n", 1)[0].split()
                return os.fsdecode(words[0]) if words else None
            if head.startswith(b"\x7fELF") and len(head) >= 64:
                return _elf_interpreter(f, head)
    except (OSError, struct.error):
        pass
    return None


def _elf_interpreter(f: BinaryIO, head: bytes) -> str | None:
    """PT_INTERP of an ELF file (``f`` is open at any position), or None if static."""
    wide, order = head[4] == 2, "<" if head[5] == 1 else ">"
    word = order + ("Q" if wide else "I")
    (phoff,) = struct.unpack_from(word, head, 32 if wide else 28)
    size, count = struct.unpack_from(order + "HH", head, 54 if wide else 42)
    for i in range(count):
        f.seek(phoff + i * size)
        header = f.read(size)
        if struct.unpack_from(order + "I", header)[0] == PT_INTERP:
            (offset,) = struct.unpack_from(word, header, 8 if wide else 4)
            (length,) = struct.unpack_from(word, header, 32 if wide else 16)
            f.seek(offset)
            return os.fsdecode(f.read(length).rstrip(b"\0"))
    return None
