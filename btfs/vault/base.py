"""The vault interface: immutable objects, written once, read by byte range.

It is deliberately what S3 offers and nothing more: no appends, no renames, no locks. An
object is put whole or not at all; putting a key that exists is a no-op because keys are
content hashes (or the vault's own identity, written once by init). Implementations are
thread-safe: the engine uploads from a worker thread and the mount reads from many.
"""

from __future__ import annotations

import json
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass

from ..errors import VaultError

IDENTITY_KEY = "btfs-vault.json"
VAULT_FORMAT = 2  # 1: SHA-256 names; 2: BLAKE3 (btfs.digest)


class ObjectWriter:
    """An object being written piece by piece, then committed under a key it only gets
    at the end (a pack is named by the hash of its bytes). This default keeps the bytes in
    memory and `put`s them; a vault that can spool to storage overrides `Vault.writer`.
    Not thread-safe: one writer thread, though commit may run on another."""

    def __init__(self, vault: Vault):
        self._vault = vault
        self._buf = bytearray()

    def write(self, data: bytes) -> None:
        self._buf += data

    def commit(self, key: str) -> None:
        """Make the object durable under `key` (as `put`); the writer is spent."""
        data, self._buf = self._buf, bytearray()
        self._vault.put(key, data)

    def abort(self) -> None:
        self._buf = bytearray()


@dataclass(frozen=True)
class VaultIdentity:
    vault_id: str
    format: int


class Vault(ABC):
    url: str
    max_uploads: int = 1  # packs a backup may have uploading at once (ChunkStore)
    # Bytes a sequential reader's read-ahead fetches per vault read (0: one chunk per
    # read). A remote vault pays a round trip and a request per read, so it gets chunks
    # that lie one after another in a pack in one ranged read; a local one reads each
    # chunk in a worker of its own, which verifies them in parallel.
    read_run_bytes: int = 0

    @abstractmethod
    def put(self, key: str, data: bytes) -> None:
        """Store `data` under `key` durably and atomically; no-op if `key` exists."""

    def writer(self) -> ObjectWriter:
        """A new object to write incrementally and commit under a key decided at the end."""
        return ObjectWriter(self)

    @abstractmethod
    def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        """Bytes of an object, or a range of it; VaultError if it is missing or short."""

    @abstractmethod
    def size(self, key: str) -> int | None:
        """Size of an object, None if it does not exist."""

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        """(key, size) of every object whose key starts with `prefix`."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove an object (prune only); no error if it is already gone."""

    # ---- setup (init) ------------------------------------------------------------------

    @abstractmethod
    def exists(self) -> bool:
        """Whether the vault's place exists (a directory; a bucket)."""

    @abstractmethod
    def is_empty(self) -> bool:
        """Whether nothing is stored there yet (init refuses to take over anything else)."""

    @abstractmethod
    def create(self) -> None:
        """Make the vault's place (init only; a no-op where there is nothing to make)."""

    def check_access(self) -> None:  # noqa: B027 (optional hook)
        """Prove that this process can list, write, read and delete there; VaultError
        naming the problem if not (init)."""

    # ---- optional hooks ----------------------------------------------------------------

    def drop_cached(self, key: str, offset: int, length: int) -> bool:
        """Forget a locally cached copy of this range, which failed verification; True if
        the vault keeps such copies (then reading it again goes to the source)."""
        return False

    def abandon_retries(self, abandon: bool = True) -> None:  # noqa: B027 (optional hook)
        """While set, requests waiting to retry a temporary failure give up at once (a
        backup that failed or was interrupted must not wait out the retry budget of its
        other uploads); `abandon=False` ends that."""

    def limit_upload(self, rate: int) -> None:  # noqa: B027 (optional hook)
        """Cap uploads at `rate` bytes per second for this process (0: no limit)."""

    def close(self) -> None:  # noqa: B027 (optional hook: most vaults hold nothing)
        """Release cached resources (open files, connections)."""

    def clean_tmp(self) -> None:  # noqa: B027 (optional hook)
        """Remove what writers killed mid-put left behind; call holding the writer lock."""

    # ---- identity: which vault is this? ----------------------------------------------

    def read_identity(self) -> bytes | None:
        """The identity object's bytes; None if there is none."""
        if self.size(IDENTITY_KEY) is None:
            return None
        return self.get(IDENTITY_KEY)

    def identity(self) -> VaultIdentity | None:
        raw = self.read_identity()
        if raw is None:
            return None
        try:
            doc = json.loads(raw)
            return VaultIdentity(vault_id=doc["vault_id"], format=doc["format"])
        except (ValueError, KeyError, TypeError):
            raise VaultError(f"{self.url}: {IDENTITY_KEY} is damaged") from None

    def checked_identity(self) -> VaultIdentity:
        """The identity of a vault this btfs can read; VaultError naming the problem if it
        is missing or of another format."""
        ident = self.identity()
        if ident is None:
            raise VaultError(f"vault {self.url} is missing or not initialized (is it mounted?)")
        self.check_format(ident)
        return ident

    def check_format(self, ident: VaultIdentity) -> None:
        if ident.format != VAULT_FORMAT:
            raise VaultError(f"vault {self.url} has format {ident.format}; this btfs reads "
                             f"format {VAULT_FORMAT} only (back up into a new vault)")

    def create_identity(self) -> VaultIdentity:
        ident = VaultIdentity(vault_id=str(uuid.uuid4()), format=VAULT_FORMAT)
        self.put(IDENTITY_KEY, json.dumps({"vault_id": ident.vault_id,
                                           "format": ident.format}).encode())
        return ident


def pack_key(name: str) -> str:
    return f"packs/{name}"
