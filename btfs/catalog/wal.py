"""Bring a catalog's write-ahead log into its main file, so that the file alone is the
whole catalog (btfs.replica copies it page by page).

Opens a connection of its own to the file: it needs nothing of `Catalog` and never
changes a row. Call it holding the writer lock, or a backup may append to the log again
before the caller has read the file.
"""

from __future__ import annotations

import logging
from pathlib import Path

import apsw

log = logging.getLogger(__name__)


def checkpoint(path: Path) -> bool:
    """Copy every committed page of the log into the main file and empty the log; False
    when a reader kept the log in use past the busy timeout (the file may then lack the
    newest transactions)."""
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READWRITE)
    try:
        # The busy timeout lets a reader's short transaction (the mount's query) end:
        # TRUNCATE waits for readers, which PASSIVE would skip, leaving pages behind.
        conn.set_busy_timeout(10_000)
        busy, log_pages, done = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    finally:
        conn.close()
    log.debug("checkpoint of %s: busy %d, log %d, done %d", path, busy, log_pages, done)
    # A database not in WAL mode answers (0, -1, -1): its file is whole already.
    return busy == 0 and log_pages == done
