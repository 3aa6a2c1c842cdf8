"""The service layer: every operation a user can ask btfs for, as a method of `Repo`.

A `Repo` is config + catalog + vault, opened together (`Repo.open`); writing operations
run inside `repo.writer()`, which holds the writer lock. Each method takes and returns
plain values (the records below, the engine's reports, bytes paths), so the CLI, a
daemon or a web page call the same thing: the CLI only parses, calls one method and
formats. Operations that need no open Repo or open their own (init, track, untrack,
the config; the mount, whose server may run in a forked process) are classmethods.

Never prints and never exits: results are returned, problems raised as BtfsError. The
engine is imported inside the methods that need it, so `btfs mount` does not load the
backup engine.
"""

from __future__ import annotations

import logging
import os
import stat
import time
import uuid
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, NamedTuple

from . import config as config_mod
from .catalog import DELETED, DIR, FILE, SYMLINK, Catalog, Snapshot
from .config import (  # noqa: F401  (xdg_paths: for the CLI)
    Config,
    Mirror,
    Paths,
    S3Settings,
    TrackedDir,
    xdg_paths,
)
from .engine.running import snapshots_now
from .errors import BtfsError, UsageError, VaultError
from .lock import WriterLock
from .own import OwnDir, check_trackable, data_dirs, never_backed_up, skipped_inside
from .text import display_path
from .userpath import is_under, to_catalog_path
from .vault import Vault, open_vault

if TYPE_CHECKING:  # the engine is imported where it is used (see above)
    from .catalog import Version
    from .engine.backup import Stats
    from .engine.check import CheckReport
    from .engine.codec import Codec
    from .engine.forget import ForgetReport
    from .engine.prune import PruneReport
    from .engine.repair import RepairReport
    from .engine.restore import RestoreResult
    from .engine.retention import Policy
    from .engine.status import Status
    from .replica.fetch import HostCopy
    from .replica.otherhost import HostView
    from .replica.recover import Recovered
    from .replica.sync import SyncReport

log = logging.getLogger(__name__)

# Chunks the restore keeps decoded: a file's chunks are read in order, so a small cache
# only serves the chunks that hard links and repeated content share.
RESTORE_CACHE_BYTES = 16 << 20


class Setup(NamedTuple):
    """What init and track leave: the config, whether init created anything, and btfs's
    own directories inside what is tracked (never backed up, see btfs.own)."""

    config: Config
    created: bool
    skipped: list[OwnDir]
    other_hosts: int = 0  # hosts whose backups the vault already held (a shared vault)


class ConfigView(NamedTuple):
    """`btfs config show`: where btfs keeps its files and every setting, defaults filled."""

    config_file: str
    catalog: str
    cache_dir: str
    settings: dict  # config key -> value, as config.to_dict(full=True)
    text: str  # the settings as TOML


class Work(NamedTuple):
    """How much the next backup will likely go through (for its progress and ETA)."""

    entries: int
    bytes: int


class NamedSnapshot(NamedTuple):
    name: str  # as under by-time/ in the mount, and as --snapshot takes it
    snapshot: Snapshot


@dataclass
class LogRow:
    """One version of a path, as `btfs log` shows it."""

    version: int | None  # its number (btfs.engine.history.numbered); None: a deletion
    snapshot: str  # the snapshot's name
    snapshot_id: int
    type: str
    size: int
    blake3: str | None  # hex digest of a file's content
    target: bytes | None  # a symlink's target
    mode: str | None  # as `ls -l` shows it
    uid: int
    gid: int
    mtime_ns: int

    @property
    def deleted(self) -> bool:
        return self.version is None


@dataclass
class Restored:
    """What a restore wrote (RestoreResult) and whether it was one file (then a failure
    is the whole restore failing, not a partial one)."""

    result: RestoreResult
    single_file: bool


def expected_work(snaps: list[Snapshot]) -> Work:
    """(entries, bytes) the next backup will likely go through, from the last finished
    one: its entries, and the bytes it read — unless most of its entries were new (an
    initial backup, or a newly tracked directory), whose reads will not come again."""
    done = [s for s in snaps if s.state in ("complete", "partial")]
    if not done:
        return Work(0, 0)
    last = done[-1]
    repeats = last.files_new * 2 < last.entries
    return Work(last.entries, last.bytes_read if repeats else 0)


def _fuse_mount():
    """btfs.fuse.mount, or the one-line reason it cannot be loaded: everything else
    works without pyfuse3."""
    try:
        from .fuse import mount
    except ImportError as e:
        raise BtfsError(f"mounting needs pyfuse3 and trio: {e}") from None
    return mount


@dataclass
class Repo:
    paths: Paths
    config: Config
    catalog: Catalog
    vault: Vault
    other_host: HostView | None = None  # another host's copy is open (open(host=))

    # -- opening ---------------------------------------------------------------------

    @classmethod
    def open(cls, paths: Paths, *, readonly: bool = False, host: str | None = None) -> Repo:
        """`host`: another host's history instead (a name or id, see `hosts`), from its
        catalog copy in the vault, cached and opened read-only (btfs.replica.otherhost);
        this host's own when `host` names it."""
        cfg = config_mod.load(paths)
        if not paths.catalog.exists():
            raise BtfsError(f"no catalog at {paths.catalog}: run 'btfs init' first")
        vault = open_vault(cfg.vault, cfg.s3, paths.cache_dir)
        try:
            # The format first: a catalog is migrated when opened for writing, and one of
            # a vault this btfs cannot read must be left as it is.
            ident = vault.checked_identity()
            view = None if host is None else _host_view(paths, cfg, vault, host)
            if view is not None:
                paths, cfg = view.paths, view.config
            catalog = Catalog(paths.catalog, readonly=readonly, immutable=view is not None)
        except BaseException:
            vault.close()
            raise
        if catalog.history.get_meta("vault_id") != ident.vault_id:
            catalog.close()
            vault.close()
            raise VaultError(f"vault {vault.url} is not the one this catalog belongs to")
        return cls(paths, cfg, catalog, vault, view)

    @cached_property
    def codec(self) -> Codec:
        """How this repo's chunks are stored (btfs.engine.codec), made once from the config
        and handed to whatever writes or reads chunks. Imported when first needed: zstd is
        not loaded by commands that never touch a chunk."""
        from .engine.codec import Codec

        return Codec(self.config.compression_level)

    def close(self) -> None:
        self.catalog.close()
        self.vault.close()

    def __enter__(self) -> Repo:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def writer(self, *, wait: bool = False, what: str = "backup"):
        """Hold the writer lock; clear what a killed writer left behind."""
        if self.config.read_only:
            raise BtfsError(f"{what} refused: this machine browses a read-only recovery of "
                            f"host {self.config.host_id} (config key read_only)")
        lock = WriterLock(self.paths.lock)
        lock.acquire(wait=wait, what=what)
        try:
            with self.catalog.writer.transaction():
                dead = self.catalog.writer.mark_interrupted()
            if dead:
                log.info("snapshots %s were interrupted; their committed files are kept", dead)
            self.vault.clean_tmp()
            yield
        finally:
            lock.release()

    # -- the always-on daemon (btfs.watch) -------------------------------------------

    @staticmethod
    def watch(paths: Paths, *, detach: bool, log_level: int, web_listen: str | None = None,
              allow_remote: bool = False) -> str | None:
        """`btfs watch`: run the daemon until it stops (None), or with `detach` start it
        in the background and return a line saying where it runs. It serves the status
        page when `web_listen` ("" for the default address, or ADDR:PORT) is given or the
        config has a [web] table; `allow_remote` lets it listen beyond loopback."""
        from .watch.daemon import start
        from .web.settings import from_config

        web = from_config(config_mod.load(paths), str(paths.config_file), web_listen,
                          allow_remote)
        return start(paths, detach=detach, log_level=log_level, web=web)

    @staticmethod
    def web_url(paths: Paths) -> str:
        """`btfs web-url`: the running daemon's status page, with its token."""
        from .watch.daemon import ask
        from .web.access import load_token

        url = ask("status").get("web")
        if not url:
            raise BtfsError("btfs watch is running without the status page: start it with "
                            "'btfs watch --web' (or add a [web] table to the config)")
        return f"{url}?token={load_token(paths)}"

    @staticmethod
    def daemon_request(command: str) -> dict:
        """`btfs daemon COMMAND`: the running daemon's answer (BtfsError if it refused)."""
        from .watch.daemon import ask

        return ask(command)

    # -- setting up (no catalog needed) ----------------------------------------------

    @classmethod
    def init(cls, paths: Paths, vault_url: str, track: Sequence[str] = (), *,
             endpoint: str | None = None, region: str | None = None,
             profile: str | None = None) -> Setup:
        """`btfs init`: config, catalog and vault (see init_repo), then track `track`.
        `endpoint`, `region`, `profile`: how an S3 vault is reached (config [s3])."""
        from .replica.objects import generations
        from .replica.publish import put_host_record

        cfg, created = init_repo(paths, vault_url, _s3_options(endpoint, region, profile))
        others = 0
        if created:
            # A vault is shared, a catalog is per host: a new host joins a vault that
            # other hosts back up into (and dedups against their packs, engine/packsync).
            vault = open_vault(cfg.vault, cfg.s3, paths.cache_dir)
            try:
                others = len({g.host_id for g in generations(vault)} - {cfg.host_id})
                put_host_record(vault, cfg.host_id)  # a prune elsewhere waits for it
            finally:
                vault.close()
        if track:
            cfg = track_dirs(paths, list(track))
        return Setup(cfg, created, _skipped(paths, cfg), others)

    @classmethod
    def recover(cls, paths: Paths, vault_url: str, host: str | None = None, *,
                read_only: bool = False, endpoint: str | None = None,
                region: str | None = None, profile: str | None = None) -> Recovered:
        """`btfs recover`: this machine set up from the vault alone (btfs.replica.recover).
        ChooseHost (a UsageError listing them) when the vault holds several hosts and
        `host` is None."""
        from .replica.recover import recover

        return recover(paths, vault_url, host, read_only=read_only,
                       s3=_s3_options(endpoint, region, profile))

    @classmethod
    def track(cls, paths: Paths, dirs: Sequence[str], excludes: Sequence[str] = (),
              includes: Sequence[str] = ()) -> Setup:
        """`btfs track`: add directories to the backup set or replace their patterns."""
        cfg = track_dirs(paths, list(dirs), excludes, includes)
        return Setup(cfg, False, _skipped(paths, cfg))

    @classmethod
    def untrack(cls, paths: Paths, dirs: Sequence[str]) -> Config:
        """`btfs untrack`: the config without these directories."""
        return untrack_dirs(paths, list(dirs))

    @classmethod
    def show_config(cls, paths: Paths) -> ConfigView:
        """`btfs config show`."""
        doc = config_mod.to_dict(config_mod.load(paths), full=True)
        return ConfigView(str(paths.config_file), str(paths.catalog), str(paths.cache_dir),
                          doc, config_mod.dumps(doc))

    # -- recording -------------------------------------------------------------------

    def expected_work(self) -> Work:
        """What the next backup will likely go through, for a progress meter's ETA."""
        return expected_work(self.catalog.history.snapshots())

    def backup(self, *, one_file_system: bool = False, limit_upload: int | None = None,
               progress: Callable[[Stats, bytes], None] | None = None, only=None,
               stop=None, skip_unchanged: bool = False) -> Stats:
        """Run one backup; the caller holds `writer()`. `one_file_system` and
        `limit_upload` (bytes per second) override the config's one_file_system and
        s3.limit_upload for this run. `progress` is called now and then with the stats
        so far and the path being read. `only` (scanner.Subtree items) records only what
        changed below those paths; `stop` (a threading.Event) ends it between files;
        `skip_unchanged` keeps no snapshot when nothing changed (btfs.engine.backup)."""
        from .engine.backup import run_backup
        from .engine.memory import tune_process_for_backup
        from .engine.packsync import sync_condemned, sync_foreign_packs
        from .replica.publish import publish_repo

        tune_process_for_backup()  # once per process: a daemon runs many backups
        if limit_upload is not None:
            self.vault.limit_upload(limit_upload)
        if one_file_system:
            self.config = config_mod.with_changes(self.config, one_file_system=True)
        # Packs a prune condemned are not stored any more for this backup (prune_shared),
        # read before anything else looks at the vault's packs.
        sync_condemned(self.catalog, self.vault)
        if self.config.dedup_across_hosts:
            # What other hosts stored in the vault since the last backup counts as stored.
            sync_foreign_packs(self.catalog, self.vault)
        with self._store() as store:
            stats = run_backup(self.catalog, store, self.config, self.codec, progress=progress,
                               never=never_backed_up(self.paths, self.config), only=only,
                               stop=stop, skip_unchanged=skip_unchanged)
        if stats.state == "unchanged":  # no snapshot landed: nothing to forget or publish
            return stats
        policy = self.config.retention
        if policy is not None and policy.forget_after_backup:
            try:
                self._forget(policy)
            except BtfsError as e:  # the backup itself is done and committed
                log.warning("backup done, but forget_after_backup failed: %s", e)
        publish_repo(self)  # the catalog's copy in the vault (btfs.replica), still locked
        self._sync_after_backup(stop)
        return stats

    def forget(self, policy: Policy | None = None, *, keep: dict[str, str | None] | None = None,
               within: str | None = None, pins: Sequence[str] = (),
               keep_versions: str | None = None, dry_run: bool = False) -> ForgetReport:
        """`btfs forget`: remove backups by a retention policy (btfs.engine.forget): the
        `policy` given, else the one the options give (`keep` maps a period, 'last',
        'hourly' ... 'yearly', to a count as typed, N or 'unlimited'; `within` is a
        duration; `pins` names or ids of backups to keep), else the config's [retention]
        table. The caller holds `writer()` unless `dry_run`; a real forget is published
        (the catalog's copy in the vault)."""
        from .engine.forget import policy_from_options
        from .replica.publish import publish_repo

        if policy is None:
            policy = policy_from_options(self.config.retention, keep or {}, within,
                                         tuple(pins), keep_versions)
        if policy is None:
            raise UsageError("no retention rule: give --keep-... options or add a "
                             f"[retention] table to {self.paths.config_file}")
        report = self._forget(policy, dry_run=dry_run)
        if not dry_run:
            publish_repo(self)
        return report

    def _forget(self, policy, *, dry_run: bool = False) -> ForgetReport:
        from .engine.forget import forget

        return forget(self.catalog, policy, dry_run=dry_run)

    def prune(self, *, max_unused: float | str = 0.05, dry_run: bool = False,
              progress: Callable[[str], None] | None = None) -> PruneReport:
        """`btfs prune`: delete dead packs and repack those with more than `max_unused` (a
        fraction, or a percentage as typed: '5%') unused (btfs.engine.prune); the caller
        holds `writer()` unless `dry_run`. The catalog's copy in the vault is published
        once the catalog no longer refers to the packs, before they are deleted, so the
        newest copy never names a pack that is gone. In a vault shared with other hosts
        (or holding condemned packs) packs are condemned, and deleted only under the
        rules of btfs.engine.prune_shared (the report's `shared` says what waits)."""
        from .engine.condemned import PREFIX
        from .engine.prune import parse_fraction, prune
        from .engine.prune_shared import SharedPrune, shared_hosts
        from .replica.publish import publish_repo

        if isinstance(max_unused, str):
            max_unused = parse_fraction(max_unused, "--max-unused")
        others = shared_hosts(self.vault, self.config.host_id)
        shared = None
        if others or next(iter(self.vault.list(PREFIX)), None) is not None:
            shared = SharedPrune(self.catalog, self.vault, host_id=self.config.host_id,
                                 cache_dir=self.paths.cache_dir, grace_s=self.config.prune_grace,
                                 others=others)
        try:
            report = prune(self.catalog, self.vault, self.codec,
                           pack_size=self.config.pack_size, max_unused=max_unused,
                           dry_run=dry_run, progress=progress,
                           committed=lambda: publish_repo(self), shared=shared)
            if shared is not None and not dry_run:
                publish_repo(self)  # packs given back are this host's again
            return report
        finally:
            if shared is not None:
                shared.close()

    def hosts(self) -> list[HostCopy]:
        """`btfs hosts`: every host with a catalog copy in the vault, as its newest one
        says (name, id, last backup, backups, catalog size), by name."""
        from .replica.fetch import list_hosts

        return list_hosts(self.vault)

    def add(self, paths: list[str]) -> list[str]:
        """`btfs add`: stage files and symlinks now; the absolute paths staged. The
        caller holds `writer()`."""
        from .engine.stage import stage_paths

        with self._store() as store:
            return stage_paths(self.catalog, store, self.config, self.codec, list(paths))

    def status(self, path: str | bytes | None = None) -> Status:
        """What the next backup would record (everywhere, or only at `path` and below)."""
        from .engine.status import status

        under = to_catalog_path(path, self._tracked()) if path else None
        return status(self.catalog, self.config, under,
                      never=never_backed_up(self.paths, self.config))

    # -- reading history -------------------------------------------------------------

    def snapshots(self) -> list[Snapshot]:
        """Every snapshot, oldest first; one whose backup was killed is 'interrupted'
        (btfs.engine.running), even before the next writer marks it so."""
        return snapshots_now(self.catalog, WriterLock(self.paths.lock))

    def named_snapshots(self) -> list[NamedSnapshot]:
        """`btfs snapshots`: every snapshot with the name the mount shows it by."""
        return [NamedSnapshot(s.name, s) for s in self.snapshots()]

    def log(self, path: str) -> list[LogRow]:
        """`btfs log`: every version of `path`, oldest first, numbered."""
        from .engine.history import numbered

        node, _ = self._node(path)
        names = self.catalog.history.snapshot_names()  # a ghost's versions too
        rows = []
        for number, v in numbered(self.catalog.history.versions_of(node)):
            m = v.meta
            b3 = self.catalog.chunks.content(m.content_id).digest.hex() if v.type == FILE else None
            rows.append(LogRow(number, names[v.snapshot_id], v.snapshot_id, v.type, m.size,
                               b3, m.target,
                               stat.filemode(m.mode) if v.type != DELETED else None,
                               m.uid, m.gid, m.mtime_ns))
        return rows

    def restore(self, path: str, *, at: str | None = None, number: int | None = None,
                snapshot: str | None = None, dest: str | None = None,
                content_only: bool = False) -> Restored:
        """`btfs restore`: `path` as it was (newest, or at a time, version number or
        snapshot: one of them), written to `dest` or beside the original; never
        overwrites (btfs.engine.restore)."""
        from .engine.history import pick_version
        from .engine.reader import ChunkSource
        from .engine.restore import Restorer

        if sum(x is not None for x in (at, number, snapshot)) > 1:
            raise UsageError("give only one of --at, --version, --snapshot")
        if dest is None and self.other_host:
            raise UsageError(f"restoring from host {self.other_host.host.name}'s history "
                             "needs --to: beside the original is a place on that machine")
        node, raw = self._node(path)
        version, snapshot_id = pick_version(self.catalog, node, at=at, number=number,
                                            snapshot=snapshot)
        target = self._restore_target(raw, version, dest)
        source = ChunkSource(self.vault, self.codec, cache_bytes=RESTORE_CACHE_BYTES)
        restorer = Restorer(self.catalog, source, content_only=content_only)
        result = restorer.restore(node, version, snapshot_id, target, raw)
        return Restored(result, version.type == FILE)

    def _restore_target(self, raw: bytes, version: Version, dest: str | None) -> bytes:
        """Where a restore writes: into `dest` if it is a directory, else at `dest`;
        without one, beside the original as NAME.<tag> (a file's content digest, a
        symlink's target digest, a directory's snapshot name)."""
        from . import digest

        name = os.path.basename(raw) or b"root"
        if dest is not None:
            target = os.fsencode(os.path.abspath(os.path.expanduser(dest)))
            if os.path.isdir(target) and not os.path.islink(target):
                target = os.path.join(target, name)
            return target
        if version.type == FILE:
            tag = self.catalog.chunks.content(version.meta.content_id).digest.hex()[:8]
        elif version.type == SYMLINK:
            tag = digest.hexdigest(version.meta.target)[:8]
        else:
            tag = self.catalog.history.snapshot_names()[version.snapshot_id]
        return os.path.join(os.path.dirname(raw), name + b"." + tag.encode())

    # -- looking after the vault -----------------------------------------------------

    def check(self, *, read_data: bool = False,
              progress: Callable[[int, int], None] | None = None,
              mirror: str | None = None) -> CheckReport:
        """`btfs check`, and the damage it found recorded in the catalog (schema v6), so
        that the next backup and `btfs repair` store those chunks afresh. The report's
        `names` name the snapshots of its `affected` versions.

        The check reads (a reader's connection, no lock: it may take hours with
        --read-data). Recording is a write, so it takes the writer lock, waiting for a
        running backup: a backup that does not know of the damage would only go on
        reusing the damaged chunks. The record is kept only for chunks that still lie
        where the check read them (ChunkIndex.record_damage). With `mirror`, the mirror
        of that name is checked instead, and nothing recorded (_check_mirror)."""
        from .engine.check import check

        if mirror is not None:
            return self._check_mirror(mirror, read_data, progress)
        report = check(self.catalog, self.vault, self.codec, read_data=read_data,
                       progress=progress)
        if report.damaged or report.sound:
            lock = WriterLock(self.paths.lock)
            lock.acquire(wait=True, what="check")
            try:
                with Catalog(self.paths.catalog) as catalog, catalog.writer.transaction():
                    marked = catalog.chunks.record_damage(report.damaged, report.sound,
                                                   time.time_ns())
            finally:
                lock.release()
            log.info("recorded %d damaged chunks; %d known damaged verified", marked,
                     len(report.sound))
        if report.affected:
            report.names = self.catalog.history.snapshot_names()
        return report

    def repair(self) -> RepairReport:
        """Store afresh the damaged chunks still found in files; the caller holds
        `writer()`. The report's `names` name the snapshots of `still_damaged`."""
        from .engine.repair import repair

        with self._store() as store:
            report = repair(self.catalog, store, self.config, self.codec)
        if report.still_damaged:
            report.names = self.catalog.history.snapshot_names()
        return report

    # -- mirrors: other vaults holding a copy of this one (btfs.mirrors, replica.sync) -

    @classmethod
    def add_mirror(cls, paths: Paths, name: str, url: str, *, endpoint: str | None = None,
                   region: str | None = None, profile: str | None = None,
                   sync_after_backup: bool = True) -> Mirror:
        """`btfs mirror add`: check the place, claim it, record it in the config."""
        from . import mirrors

        return mirrors.add(paths, Mirror(name, url, endpoint or "", region or "",
                                         profile or "", sync_after_backup))

    @classmethod
    def remove_mirror(cls, paths: Paths, name: str) -> Mirror:
        """`btfs mirror remove`: the config forgets it; its data stays."""
        from . import mirrors

        return mirrors.remove(paths, name)

    @classmethod
    def mirrors(cls, paths: Paths) -> tuple[Mirror, ...]:
        """`btfs mirror list`."""
        return config_mod.load(paths).mirrors

    def sync(self, names: Sequence[str] = (),
             progress: Callable[[SyncReport], None] | None = None,
             stop=None) -> list[SyncReport]:
        """`btfs sync`: copy into each mirror named (every one when `names` is empty)
        what it lacks (btfs.replica.sync). A mirror that cannot be synced gets its
        report's `error` and the others are still synced; an unknown name is a
        UsageError before anything is done. `stop` (a threading.Event) ends it between
        packs. Needs no lock: it only reads this vault."""
        from . import mirrors
        from .replica.sync import SyncReport, sync_vault

        chosen = [mirrors.find(self.config, n) for n in names] or list(self.config.mirrors)
        if not chosen:
            raise UsageError("no mirror configured: add one with 'btfs mirror add NAME URL'")
        reports = []
        for m in chosen:
            report = SyncReport(m.name, m.url)
            try:
                vault = mirrors.open_mirror(self.paths, self.config, m)
                # Remote ends wait on round trips: a few packs in flight hide them.
                local = vault.max_uploads == 1 and self.vault.max_uploads == 1
                try:
                    sync_vault(self.vault, vault, report, workers=2 if local else 4,
                               progress=progress, stop=stop)
                finally:
                    vault.close()
            except BtfsError as e:
                report.error = str(e)
            reports.append(report)
        return reports

    def _sync_after_backup(self, stop=None) -> None:
        """The mirrors with sync_after_backup, synced; a failure is a warning (the backup
        stands, and the next sync copies what is missing). `stop`: the daemon's, which
        must not wait for a long first sync to end."""
        names = [m.name for m in self.config.mirrors if m.sync_after_backup]
        for report in self.sync(names, stop=stop) if names else ():
            if stop is not None and stop.is_set():
                log.info("mirror %s: %s", report.name, report.error or "synced")
                continue
            for problem in [report.error] if report.error else report.damaged:
                log.warning("backup done, but mirror %s is not complete: %s", report.name,
                            problem)

    def _check_mirror(self, name: str, read_data: bool,
                      progress: Callable[[int, int], None] | None) -> CheckReport:
        """`btfs check --mirror NAME`: the mirror against this catalog. Nothing is
        recorded: the catalog's damage records are about the main vault."""
        from . import mirrors
        from .engine.check import check

        vault = mirrors.open_mirror(self.paths, self.config, mirrors.find(self.config, name))
        try:
            if vault.checked_identity().vault_id != self.catalog.history.get_meta("vault_id"):
                raise VaultError(f"mirror {name} ({vault.url}) is not a copy of this vault")
            report = check(self.catalog, vault, self.codec, read_data=read_data,
                           progress=progress, known_damage=False)
        finally:
            vault.close()
        report.names = self.catalog.history.snapshot_names() if report.affected else {}
        return report

    # -- mounting --------------------------------------------------------------------

    @classmethod
    def prepare_mountpoint(cls, paths: Paths, mountpoint: str, host: str | None = None) -> str:
        """The absolute mountpoint, checked (btfs.fuse.mount.check_mountpoint: not over
        files, a tracked directory, btfs's own directories or another btfs mount) and
        ready; a dead btfs mount there is cleared. `host`: another host's copy is fetched
        now, so that a wrong name fails here, before a server is started."""
        fuse_mount = _fuse_mount()
        if host is not None:  # first: a wrong name must not leave a mountpoint made
            cls.open(paths, readonly=True, host=host).close()
        with cls.open(paths, readonly=True) as repo:
            return fuse_mount.check_mountpoint(mountpoint, repo._tracked(),
                                               data_dirs(paths, repo.config))

    @classmethod
    def serve_mount(cls, paths: Paths, mountpoint: str, *, allow_other: bool = False,
                    host: str | None = None) -> None:
        """Serve the history at `mountpoint` (from prepare_mountpoint) until unmounted:
        this host's, or `host`'s from its catalog copy (followed: btfs.fuse.mount)."""
        fuse_mount = _fuse_mount()
        with cls.open(paths, readonly=True, host=host) as repo:
            fuse_mount.serve(repo, mountpoint, allow_other=allow_other)

    def newer_copy(self) -> Catalog | None:
        """With another host's history open (open(host=)): the vault's newer copy of it,
        fetched (deltas only) and opened, for the caller to switch to (then to set as
        `catalog`, closing the one before); None when there is none. Blocking I/O."""
        from .replica.otherhost import refresh

        if self.other_host is None:
            return None
        view = refresh(self.other_host, self.vault)
        if view is None:
            return None
        self.other_host = view
        return Catalog(view.paths.catalog, immutable=True)

    @staticmethod
    def unmount(mountpoint: str) -> bool:
        """`btfs umount`; True when the mount was dead (its server killed) and cleared."""
        from .mounts import unmount

        return unmount(mountpoint)

    # ---- browsing history (btfs.engine.browse) ----------------------------------------

    def find(self, pattern: str, *, under: str | None = None, since: str | None = None,
             until: str | None = None, deleted: bool = False) -> list:
        """Every path in the history matching `pattern`, with its versions (FoundPath)."""
        from .engine.browse import find
        from .engine.history import parse_time

        # Ghosts of forgotten backups included: the versions they hold are still shown.
        snaps = self.catalog.history.snapshots(forgotten=True)
        low = parse_time(since) if since else None
        high = parse_time(until) if until else None
        shown = None if low is None and high is None else {
            s.id for s in snaps if (low is None or s.started_ns >= low)
            and (high is None or s.started_ns <= high)}
        top = self._catalog_path(under) if under is not None else None
        return list(find(self.catalog, {s.id: s.name for s in snaps}, pattern, under=top,
                         shown=shown, deleted_only=deleted))

    def diff(self, before: str, after: str, under: str | None = None) -> list:
        """What changed from snapshot `before` to `after` (names, ids or 'latest'), below
        `under` if given (Change records)."""
        from .engine.browse import diff

        ids = [self._snapshot_id(name) for name in (before, after)]
        top = self._catalog_path(under) if under is not None else None
        return diff(self.catalog, *ids, under=top)

    def folder_log(self, path: str, *, files: bool = False) -> list | None:
        """The backups in which something below directory `path` changed (FolderStep),
        or None when `path` is not a directory in the history (its own log then)."""
        from .engine.browse import folder_log

        node = self.catalog.history.node_for_path(self._catalog_path(path))
        if node is None or not self.catalog.history.node_has_children(node):
            return None
        return folder_log(self.catalog, node, self.catalog.history.snapshot_names(),
                          files=files)

    def snapshot_names(self) -> list[str]:
        """Every snapshot's name, oldest first (shell completion)."""
        return [s.name for s in self.snapshots()]

    def complete_path(self, incomplete: str) -> list[str]:
        """Paths the history has ever held that start with `incomplete` (shell completion,
        deleted paths included), spelled as typed: `~/no` -> `~/notes/`. A directory
        ends in '/'."""
        typed_dir, _, prefix = incomplete.rpartition("/")
        base = (typed_dir or "/") if incomplete.startswith("/") else (typed_dir or ".")
        node = self.catalog.history.node_for_path(self._catalog_path(base + "/"))
        if node is None:
            return []
        lead = typed_dir + "/" if "/" in incomplete else ""
        wanted = os.fsencode(prefix)
        return [lead + os.fsdecode(name) + ("/" if self._is_dir(child) else "")
                for child, name in self.catalog.history.node_children(node)
                if name.startswith(wanted)]

    def _is_dir(self, node: int) -> bool:
        history = self.catalog.history
        head = history.head(node)
        return (head is not None and head.type == DIR) or history.node_has_children(node)

    def _catalog_path(self, path: str) -> bytes:
        return to_catalog_path(path, self._tracked())

    def _snapshot_id(self, name: str) -> int:
        from .engine.history import find_snapshot

        if name == "latest":
            snaps = self.snapshots()
            if not snaps:
                raise UsageError("no backups yet: run 'btfs backup'")
            return snaps[-1].id
        return find_snapshot(self.catalog, name).id

    # -- helpers ---------------------------------------------------------------------

    def _tracked(self) -> list[str]:
        return [t.path for t in self.config.tracked]

    def _node(self, path: str) -> tuple[int, bytes]:
        """The node and catalog path of a path the user gave, which must have been
        backed up."""
        raw = to_catalog_path(path, self._tracked())
        node = self.catalog.history.node_for_path(raw)
        if node is None or not self.catalog.history.versions_of(node):
            raise UsageError(f"{path} was never backed up")
        return node, raw

    @contextmanager
    def _store(self):
        """A ChunkStore writing to this vault, closed after."""
        from .engine.store import ChunkStore

        store = ChunkStore(self.catalog, self.vault, self.config.pack_size)
        try:
            yield store
        finally:
            store.close()


def _host_view(paths: Paths, cfg: Config, vault: Vault, host: str) -> HostView | None:
    """btfs.replica.otherhost.host_view, imported only by a command given --host."""
    from .replica.otherhost import host_view

    return host_view(paths, cfg, vault, host)


def _skipped(paths: Paths, cfg: Config) -> list[OwnDir]:
    return skipped_inside(paths, cfg, [t.path for t in cfg.tracked])


def _s3_options(endpoint: str | None, region: str | None,
                profile: str | None) -> S3Settings | None:
    """The [s3] settings given on a command line, validated; None when none is given."""
    if not (endpoint or region or profile):
        return None
    s3 = S3Settings(endpoint=endpoint or "", region=region or "", profile=profile or "")
    config_mod.validate(config_mod.Config(host_id="", vault="", s3=s3), "--endpoint")
    return s3


def init_repo(paths: Paths, vault_url: str,
              s3: S3Settings | None = None) -> tuple[Config, bool]:
    """Create config, catalog and vault; (config, created). Idempotent for the same vault.
    `s3` holds the settings an S3 vault is reached with (init's --endpoint and friends)."""
    from .vault import normalize_url, vault_kind

    url = normalize_url(vault_url)
    existing = None
    if paths.config_file.exists():
        existing = config_mod.load(paths)
        if normalize_url(existing.vault) != url:
            raise BtfsError(f"already initialized with vault {existing.vault}; refusing to "
                            f"switch to {url} (edit {paths.config_file} if you mean it)")
        if s3 is not None and s3 != existing.s3:
            raise BtfsError(f"already initialized; the [s3] settings differ from "
                            f"{paths.config_file} (edit it if you mean it)")
    if s3 is not None and s3 != S3Settings() and vault_kind(url).name != "s3":
        raise UsageError("--endpoint, --region and --profile are for s3:// vaults only")
    settings = existing.s3 if existing else (s3 or S3Settings())
    vault = open_vault(url, settings, paths.cache_dir)
    try:
        vault.check_access()
        ident = vault.identity()
        if ident is not None:
            vault.check_format(ident)
        catalog_exists = paths.catalog.exists()
        if existing and ident and catalog_exists:
            return existing, False
        if ident is None:
            if vault.exists() and not vault.is_empty():
                raise BtfsError(f"{url} is not empty and is not a btfs vault")
            vault.create()
            ident = vault.create_identity()
    finally:
        vault.close()
    paths.ensure()
    cfg = existing or Config(host_id=str(uuid.uuid4()), vault=url, s3=settings)
    with Catalog(paths.catalog) as catalog:
        known = catalog.history.get_meta("vault_id")
        if known is not None and known != ident.vault_id:
            raise BtfsError(f"catalog {paths.catalog} belongs to another vault")
        with catalog.writer.transaction():
            catalog.writer.set_meta("vault_id", ident.vault_id)
            catalog.writer.set_meta("host_id", cfg.host_id)
    os.chmod(paths.catalog, 0o600)
    config_mod.save(paths, cfg)
    return cfg, True


def track_dirs(paths: Paths, dirs: list[str], excludes=(), includes=()) -> Config:
    """Add directories to the backup set (or update their patterns)."""
    cfg = config_mod.load(paths)
    tracked = list(cfg.tracked)
    for d in dirs:
        path = os.fsdecode(to_catalog_path(d, directory=True))
        if not os.path.isdir(path):
            raise UsageError(f"not a directory: {d}")
        check_trackable(path, paths, cfg)
        for t in tracked:
            if t.path != path and (is_under(path, t.path) or is_under(t.path, path)):
                raise UsageError(f"{display_path(path)} overlaps tracked directory "
                                 f"{display_path(t.path)}")
        entry = TrackedDir(path, tuple(excludes), tuple(includes))
        tracked = [entry if t.path == path else t for t in tracked]
        if entry not in tracked:
            tracked.append(entry)
    cfg = config_mod.with_changes(cfg, tracked=tuple(tracked))
    config_mod.save(paths, cfg)
    return cfg


def untrack_dirs(paths: Paths, dirs: list[str]) -> Config:
    cfg = config_mod.load(paths)
    wanted = {os.fsdecode(to_catalog_path(d, directory=True)) for d in dirs}
    missing = wanted - {t.path for t in cfg.tracked}
    if missing:
        raise UsageError(f"not tracked: {display_path(sorted(missing)[0])}")
    cfg = config_mod.with_changes(cfg, tracked=tuple(t for t in cfg.tracked
                                                     if t.path not in wanted))
    config_mod.save(paths, cfg)
    return cfg
