"""A snapshot's state as a reader sees it: 'running' only while its writer is alive.

A backup killed by kill -9 (or a crash, or a power cut) leaves its snapshot 'running' in
the catalog until the next writer marks it 'interrupted'. Readers (`btfs snapshots`, the
mount) tell the two apart by asking whether the writer lock is held, without taking it
(btfs.lock): a writer holds the lock from before it creates its snapshot until after it
has finished it. Pure reads; never changes the catalog (only a writer does that).
"""

from __future__ import annotations

import dataclasses

from ..catalog import Catalog, Snapshot
from ..lock import WriterLock

RUNNING, INTERRUPTED = "running", "interrupted"


def snapshots_now(catalog: Catalog, lock: WriterLock) -> list[Snapshot]:
    """Every snapshot, oldest first, with those whose writer is dead as 'interrupted'.

    The catalog is read twice around the look at the lock: a snapshot 'running' in both
    reads, with the lock free in between, was running while no writer was alive, so its
    writer died. One read would not do: a backup that finishes (or starts) between the
    read and the look would be called interrupted."""
    snaps = catalog.history.snapshots()
    running = {s.id for s in snaps if s.state == RUNNING}
    if not running or lock.is_held():
        return snaps
    return [dataclasses.replace(s, state=INTERRUPTED)
            if s.state == RUNNING and s.id in running else s
            for s in catalog.history.snapshots()]
