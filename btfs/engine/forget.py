"""`btfs forget`: remove backups by a retention policy, keeping what a person still needs.

The policy (btfs.engine.retention, restic's semantics) decides which backups stay. Then the
catalog drops what no kept backup shows (btfs.catalog.retention):

- a version stays while a kept backup shows it: versions are recorded only where a path
  changed, so the version of a file recorded in a forgotten backup is often what a later
  kept backup shows; it stays where it is, and its backup stays as a hidden "ghost" that
  keeps its name (out of by-time/ and `btfs snapshots`, its versions in by-file/);
- `keep_versions = N` is a per-file safety net: the N newest distinct contents (or symlink
  targets) of every path stay reachable in by-file/, `btfs log` and `restore --version`
  even when every backup that held them is forgotten;
- everything else goes: versions, contents no version uses, and backups left empty.
  Chunks and packs stay in the vault until `btfs prune`.

Must never decide without the writer lock (the caller holds it), and a dry run must not
change the catalog.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from ..catalog import Catalog
from ..catalog.retention import ForgetCounts, RetentionStore
from .retention import Decision, Policy, apply

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ForgetReport:
    decisions: list[Decision]  # every backup, newest first
    counts: ForgetCounts | None  # None for a dry run

    @property
    def removed(self) -> list[Decision]:
        return [d for d in self.decisions if not d.keep]


def forget(catalog: Catalog, policy: Policy, *, dry_run: bool = False,
           now_ns: int | None = None) -> ForgetReport:
    """Apply `policy` to the catalog's backups (all but a running one)."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    snaps = [s for s in catalog.snapshots() if s.state != "running"]
    decisions = apply(policy, [(s.id, s.name, s.started_ns) for s in snaps], now_ns)
    if dry_run:
        return ForgetReport(decisions, None)
    removed = [d.id for d in decisions if not d.keep]
    with catalog.transaction():
        counts = RetentionStore(catalog.db).forget(removed, policy.keep_versions, now_ns)
    log.info("forgot %d backups: %d versions dropped, %d kept by keep_versions, %d ghosts",
             counts.snapshots, counts.versions_dropped, counts.versions_kept, counts.ghosts)
    return ForgetReport(decisions, counts)
