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
from ..catalog.retention import ForgetCounts
from ..errors import UsageError
from .retention import Decision, Policy, apply, parse_count

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ForgetReport:
    decisions: list[Decision]  # every backup, newest first
    counts: ForgetCounts | None  # None for a dry run

    @property
    def removed(self) -> list[Decision]:
        return [d for d in self.decisions if not d.keep]


def policy_from_options(configured: Policy | None, counts: dict[str, str],
                        within: str | None, pins: tuple[str, ...],
                        keep_versions: str | None) -> Policy | None:
    """The policy `btfs forget`'s options give (`counts`: period -> count as typed), or
    None when they give no rule (then the config's, `configured`, applies). keep_versions
    comes from the option, else from the config."""
    given = {f"keep_{k}": parse_count(v, f"--keep-{k}") for k, v in counts.items()
             if v is not None}
    if not given and within is None and not pins:
        if keep_versions is not None:
            raise UsageError("--keep-versions needs a --keep-... rule for the backups")
        return configured
    versions = (parse_count(keep_versions, "--keep-versions") if keep_versions is not None
                else configured.keep_versions if configured is not None else 0)
    return Policy(**given, keep_within=within, keep_snapshots=pins, keep_versions=versions)


def forget(catalog: Catalog, policy: Policy, *, dry_run: bool = False,
           now_ns: int | None = None) -> ForgetReport:
    """Apply `policy` to the catalog's backups (all but a running one)."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    snaps = [s for s in catalog.history.snapshots() if s.state != "running"]
    decisions = apply(policy, [(s.id, s.name, s.started_ns) for s in snaps], now_ns)
    if dry_run:
        return ForgetReport(decisions, None)
    removed = [d.id for d in decisions if not d.keep]
    with catalog.retention.temp_on_disk(), catalog.writer.transaction():
        counts = catalog.retention.forget(removed, policy.keep_versions, now_ns)
    log.info("forgot %d backups: %d versions dropped, %d kept by keep_versions, %d ghosts",
             counts.snapshots, counts.versions_dropped, counts.versions_kept, counts.ghosts)
    return ForgetReport(decisions, counts)
