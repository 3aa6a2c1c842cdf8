"""A vault in a local directory (or any mounted filesystem).

Layout: `<root>/btfs-vault.json`, `<root>/packs/<2 hex>/<64 hex>`, `<root>/tmp/` for writes
in progress. A put writes a temp file, fsyncs it, hard-links it to its final name (which
fails rather than replaces if the name exists, so an object is never rewritten), fsyncs the
directory, then drops the temp name. A kill at any point leaves either no object or a
whole one; stale temp files are harmless, and the next writer removes those of dead
writers (never another live host's: btfs.vault.tmpfiles).
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

from ..errors import VaultError
from .base import ObjectWriter, Vault
from .tmpfiles import clean_dir, tmp_name

log = logging.getLogger(__name__)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _TempFileWriter(ObjectWriter):
    """Writes to a temp file in `<root>/tmp/` (named as btfs.vault.tmpfiles says); commit
    fsyncs it, hard-links it to its final name (which fails rather than replaces if the
    name exists, so an object is never rewritten: two hosts committing the same pack at
    once both succeed, and the bytes are the same), fsyncs the directory and drops the
    temp name."""

    def __init__(self, vault: LocalVault):
        self._vault = vault
        self._tmp = vault._tmp_path()
        try:
            self._fd: int | None = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL
                                           | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise VaultError(f"cannot write in {self._tmp.parent}: {e.strerror}") from None
        self._buf = bytearray()

    BUFFER = 1 << 20  # small chunks are gathered: one write per chunk costs a syscall each

    def write(self, data: bytes) -> None:
        if len(self._buf) + len(data) < self.BUFFER:
            self._buf += data
            return
        self._flush()
        if len(data) >= self.BUFFER:
            self._write_all(data)  # big enough on its own: no copy into the buffer
        else:
            self._buf += data

    def _flush(self) -> None:
        if self._buf:
            self._write_all(self._buf)
            self._buf.clear()

    def _write_all(self, data: bytes | bytearray) -> None:
        done = 0
        try:
            with memoryview(data) as view:
                while done < len(view):
                    done += os.write(self._fd, view[done:])
        except OSError as e:
            self.abort()
            raise VaultError(f"cannot write {self._tmp}: {e.strerror}") from None

    def commit(self, key: str) -> None:
        final = self._vault._path(key)
        self._flush()
        try:
            os.fsync(self._fd)
            self._close()
            if not final.exists():
                final.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                try:
                    os.link(self._tmp, final)
                except FileExistsError:
                    pass  # the same content-addressed object, written by an earlier run
                _fsync_dir(final.parent)
        except OSError as e:
            raise VaultError(f"cannot write {final}: {e.strerror}") from None
        finally:
            self.abort()

    def abort(self) -> None:
        self._close()
        try:
            os.unlink(self._tmp)
        except FileNotFoundError:
            pass

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class LocalVault(Vault):
    MAX_OPEN = 32

    def __init__(self, root: Path | str):
        self.root = Path(root)
        self.url = str(self.root)
        self._fds: OrderedDict[str, int] = OrderedDict()
        self._fds_lock = threading.Lock()

    def _path(self, key: str) -> Path:
        if key.startswith("packs/"):
            name = key[len("packs/"):]
            return self.root / "packs" / name[:2] / name
        return self.root / key

    def _key(self, path: Path) -> str:
        rel = path.relative_to(self.root)
        if rel.parts[0] == "packs":
            return "packs/" + rel.name
        return str(rel)

    def exists(self) -> bool:
        return self.root.exists()

    def is_empty(self) -> bool:
        return not any(self.root.iterdir())

    def create(self) -> None:
        """Make the directory skeleton (init only)."""
        for d in (self.root, self.root / "packs", self.root / "tmp"):
            d.mkdir(mode=0o700, parents=True, exist_ok=True)

    def put(self, key: str, data: bytes) -> None:
        if self._path(key).exists():
            return
        writer = self.writer()
        writer.write(data)
        writer.commit(key)

    def writer(self) -> _TempFileWriter:
        """The object goes straight to a temp file in the vault: a 16 MiB pack is never
        held in memory, and committing it is an fsync and a hard link, not a copy."""
        return _TempFileWriter(self)

    def _tmp_path(self) -> Path:
        return self.root / "tmp" / tmp_name(".tmp")

    def _fd(self, key: str) -> int:
        """An open descriptor for a pack, from a small LRU: restore and the mount read many
        chunks from the same few packs, and open+close per chunk costs more than pread."""
        with self._fds_lock:
            fd = self._fds.get(key)
            if fd is not None:
                self._fds.move_to_end(key)
                return fd
        fd = os.open(self._path(key), os.O_RDONLY | os.O_CLOEXEC)
        with self._fds_lock:
            if key in self._fds:  # another thread opened it meanwhile
                os.close(fd)
                return self._fds[key]
            self._fds[key] = fd
            while len(self._fds) > self.MAX_OPEN:
                _, old = self._fds.popitem(last=False)
                os.close(old)
        return fd

    def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        path = self._path(key)
        try:
            if length is None:
                with open(path, "rb", buffering=0) as f:
                    f.seek(offset)
                    return f.read()
            # Packs are immutable, so a cached descriptor never goes stale (prune, which
            # deletes packs, runs in a process of its own).
            data = os.pread(self._fd(key), length, offset)
        except FileNotFoundError:
            raise VaultError(f"vault object missing: {key}") from None
        except OSError as e:
            raise VaultError(f"cannot read {path}: {e.strerror}") from None
        if len(data) != length:
            raise VaultError(f"vault object {key} is shorter than expected")
        return data

    def close(self) -> None:
        with self._fds_lock:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()

    def size(self, key: str) -> int | None:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            return None

    def list(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        if prefix.startswith("packs"):
            base = self.root / "packs"
        else:
            # Only below the prefix's directory: listing hosts/ must not walk every pack.
            base = self.root / prefix.rpartition("/")[0]
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = [d for d in dirnames if d != "tmp"]
            for name in filenames:
                path = Path(dirpath) / name
                key = self._key(path)
                if key.startswith(prefix):
                    try:
                        yield key, path.stat().st_size
                    except FileNotFoundError:
                        continue

    def delete(self, key: str) -> None:
        try:
            os.unlink(self._path(key))
        except FileNotFoundError:
            pass
        except OSError as e:
            if e.errno != errno.ENOENT:
                raise VaultError(f"cannot delete {key}: {e.strerror}") from None

    def clean_tmp(self) -> None:
        """Remove temp files of writers that are certainly dead: other hosts may be writing
        into this vault right now (btfs.vault.tmpfiles)."""
        clean_dir(self.root / "tmp")
