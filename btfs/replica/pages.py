"""The catalog file as pages: their digests, and the digests of the last published
generation kept in the data directory (so the next publish uploads only what differs).

The state file is a cache: when it is missing or names another generation than the
vault's head, `publish` rebuilds it from the vault (or writes a new base). It is replaced
atomically, after the generation it describes is in the vault.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from .. import digest as digest_mod
from .objects import CopyDamaged

STATE_FILE = "catalog-copy.state"
_STATE_MAGIC = b"btfs-catalog-copy-state 1\n"
_LEN = struct.Struct(">I")
READ_PAGES = 256  # pages per read while scanning: one syscall per 1 MiB at 4 KiB pages


@dataclass(frozen=True)
class Scan:
    page_size: int
    page_count: int
    digests: bytes  # digest_mod.SIZE bytes per page, in page order
    file_digest: str  # hex BLAKE3 of the whole file

    def page(self, number: int) -> bytes:
        return self.digests[number * digest_mod.SIZE:(number + 1) * digest_mod.SIZE]


@dataclass(frozen=True)
class State:
    """What the head generation in the vault rebuilds to, as far as this host knows."""

    key: str
    number: int
    scan: Scan


def page_size(path: Path) -> int:
    """The page size recorded in an SQLite file's header (bytes 16-17; 1 means 65536)."""
    with open(path, "rb") as f:
        head = f.read(100)
    if len(head) < 100 or not head.startswith(b"SQLite format 3\0"):
        raise CopyDamaged(f"{path} is not an SQLite database")
    (size,) = struct.unpack(">H", head[16:18])
    size = 65536 if size == 1 else size
    if size < 512 or size & (size - 1):
        raise CopyDamaged(f"{path} has a damaged header (page size {size})")
    return size


def scan(path: Path) -> Scan:
    """Digest every page of a catalog file and the whole file, reading it once."""
    size = page_size(path)
    digests = bytearray()
    whole = digest_mod.hasher()
    count = 0
    with open(path, "rb", buffering=0) as f:
        while block := f.read(size * READ_PAGES):
            if len(block) % size:
                raise CopyDamaged(f"{path} is not a whole number of pages")
            whole.update(block)
            with memoryview(block) as view:
                for start in range(0, len(block), size):
                    digests += digest_mod.digest(view[start:start + size])
            count += len(block) // size
    return Scan(size, count, bytes(digests), whole.hexdigest())


def load_state(data_dir: Path) -> State | None:
    try:
        raw = (data_dir / STATE_FILE).read_bytes()
    except FileNotFoundError:
        return None
    try:
        if not raw.startswith(_STATE_MAGIC):
            return None
        at = len(_STATE_MAGIC)
        (length,) = _LEN.unpack_from(raw, at)
        doc = json.loads(raw[at + _LEN.size:at + _LEN.size + length])
        digests = raw[at + _LEN.size + length:]
        scan_ = Scan(doc["page_size"], doc["page_count"], digests, doc["file_digest"])
        if len(digests) != scan_.page_count * digest_mod.SIZE:
            return None
        return State(doc["key"], doc["number"], scan_)
    except (ValueError, KeyError, TypeError, struct.error):
        return None  # a damaged cache is rebuilt, never trusted


def save_state(data_dir: Path, state: State) -> None:
    doc = json.dumps({"key": state.key, "number": state.number,
                      "page_size": state.scan.page_size, "page_count": state.scan.page_count,
                      "file_digest": state.scan.file_digest}).encode()
    final = data_dir / STATE_FILE
    tmp = final.with_name(final.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(_STATE_MAGIC + _LEN.pack(len(doc)) + doc + state.scan.digests)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, final)
