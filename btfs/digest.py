"""The one hash btfs names things by: BLAKE3, 256-bit output.

A chunk's id, a file content's key and a pack's name are all this digest (vault format 2;
format 1 used SHA-256). An initial backup of large files digests every byte three times:
as chunks, as the whole file and as packs. With SHA-256 that was a third of such a
backup's CPU time even with the CPU's SHA instructions (2.0 GB/s on one core of the bench
machine); BLAKE3 does 64 KiB and larger inputs at 9.9 GB/s there. Like hashlib it releases
the GIL on large inputs, so worker threads digest in parallel. Its keyed mode is what
opt-in encryption needs for chunk ids that do not reveal the content.
"""

from __future__ import annotations

import blake3

SIZE = 32  # bytes


def digest(data: bytes | bytearray | memoryview) -> bytes:
    return blake3.blake3(data).digest()


def hexdigest(data: bytes | bytearray | memoryview) -> str:
    return blake3.blake3(data).hexdigest()


def hasher() -> blake3.blake3:
    """An incremental digest: `update(data)` any number of times, then `digest()`.
    Single-threaded (the default), since the engine already runs one job per core."""
    return blake3.blake3()


EMPTY = digest(b"")
