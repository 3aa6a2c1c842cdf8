"""Walking a tracked directory and comparing it with the catalog: what is new, changed, gone.

Shared by `backup` (which records what it finds) and `status` (which only reports it), so
both agree on what counts as a change. Runs on the caller's thread.

Order: depth-first, each directory's entries in name order, a subdirectory's contents
where its name comes. That is the order `tar`, `cp -a` and `btfs restore` read a snapshot
in, and a backup packs files in the order it meets them, so reading a snapshot back walks
its packs forwards. (Listing a directory's files before its subdirectories made `tar`
through the mount jump back in a pack after every subdirectory: most of its read misses
came from that.) One listing and one open directory are held per level being walked.

Change detection is by lstat alone (size, mtime_ns, ctime_ns, inode, type; never st_dev):
an unchanged file is not opened.

Subtrees (`btfs watch`): `scan(tracked, only=[Subtree, ...])` walks only towards the given
paths. A directory on the way is listed but only the names leading on are compared (the
others are neither compared nor reported deleted); a `Subtree(path, deep=False)` is
compared itself and, if a directory, its entries too, with new subdirectories walked
whole; a deep one is walked whole. Every directory on the way is compared, so a changed
parent directory is recorded as well.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable, Container, Iterable, Iterator
from dataclasses import dataclass, field

from ..catalog import DELETED, DIR, FILE, ROOT, SYMLINK, BackupWriter, History, LiveChild
from ..config import Config, TrackedDir
from ..userpath import is_under
from .excludes import Matcher, is_cache_dir
from .meta import meta_from_stat

log = logging.getLogger(__name__)

# st_mode's type bits -> btfs's type; fifos, sockets and devices are not stored.
_KINDS = {stat.S_IFREG: FILE, stat.S_IFDIR: DIR, stat.S_IFLNK: SYMLINK}

# (parent node, name, is a directory) -> node id; the backup creates missing nodes, status
# does not (None).
NodeResolver = Callable[[int | None, bytes, bool], int | None]


# Plain (not frozen) slotted classes: the scanner makes one per entry per backup, and a
# frozen dataclass's __init__ costs three times as much.
@dataclass(slots=True)
class Changed:
    """A path whose current state differs from its newest version (or that is new)."""

    node_id: int | None  # None only when the resolver does not create nodes
    path: bytes
    st: os.stat_result
    kind: str
    is_new: bool  # never seen, or deleted since
    counted: bool = True  # False for directories above a tracked directory


@dataclass(slots=True)
class Unchanged:
    node_id: int
    path: bytes
    counted: bool = True


@dataclass(slots=True)
class Listed:
    """A directory whose entries have all been compared. Unchanged entries are counted
    here rather than reported one by one (a no-change backup of a million files would
    otherwise make a million events), except those in `Scanner.report_unchanged`."""

    path: bytes
    unchanged: int
    counted: bool = True


@dataclass(slots=True)
class Deleted:
    """A path the catalog has as live that is gone (or now excluded)."""

    entry: LiveChild
    path: bytes
    counted: bool = True


@dataclass(slots=True)
class _Descend:
    """Between the scanner's own generators: walk this subdirectory now."""

    path: bytes
    node_id: int | None
    rel: bytes
    plan: _Plan | None = None  # None: walk it whole


@dataclass(frozen=True, slots=True)
class Subtree:
    """A path below a tracked directory to scan (`Scanner.scan(only=...)`): `deep` walks
    everything below it; otherwise only the path and, for a directory, its entries."""

    path: bytes
    deep: bool = True


@dataclass(slots=True)
class _Plan:
    """What to walk of one directory in a subtree scan: with `listed`, compare all its
    entries; else only the names in `children` (each a _Plan, or None: walk it whole)."""

    listed: bool = False
    children: dict[bytes, _Plan | None] = field(default_factory=dict)


def plan_subtrees(root: bytes, only: Iterable[Subtree]) -> _Plan | None | bool:
    """The walk of `root` that covers `only`: a _Plan, None (walk it whole) or False
    (nothing of `only` is below root)."""
    top = root.rstrip(b"/") + b"/"
    plan = _Plan()
    touched = False
    for sub in only:
        if sub.path == root or sub.path.rstrip(b"/") == root.rstrip(b"/"):
            if sub.deep:
                return None
            plan.listed = touched = True
            continue
        if not sub.path.startswith(top):
            continue
        touched = True
        parts = [p for p in sub.path[len(top):].split(b"/") if p]
        here: _Plan | None = plan
        for name in parts[:-1]:
            if name not in here.children:
                here.children[name] = _Plan()
            here = here.children[name]
            if here is None:
                break  # already walked whole
        else:
            last = parts[-1]
            if sub.deep:
                here.children[last] = None
            elif last not in here.children:
                here.children[last] = _Plan(listed=True)
            elif here.children[last] is not None:
                here.children[last].listed = True
    return plan if touched else False


# Directories held open at once while walking (one per level); deeper ones are walked
# after their parent's listing, so a pathologically deep tree cannot exhaust descriptors.
MAX_OPEN_LEVELS = 128


class Scanner:
    def __init__(self, reads: History | BackupWriter, config: Config, resolve: NodeResolver,
                 warn: Callable[[str], None], report_unchanged: Container[int] = (),
                 fresh: Container[int] = (), never: Iterable[bytes] = ()):
        # The newest versions to compare with: a backup's writer (its reads see the rows
        # it has queued) or, for status, the catalog's history.
        self.reads = reads
        self.config = config
        self.resolve = resolve
        self.warn = warn
        self.report_unchanged = report_unchanged  # node ids the caller wants to see
        # Directory nodes the resolver created in this run: they have no children in the
        # catalog, so their listing is not asked for (one query per directory of an
        # initial backup, ~3% of its main thread).
        self.fresh = fresh
        # Absolute paths never backed up (btfs's own directories and mounts, see
        # btfs/own.py), as parent directory -> names to drop from its listing: one dict
        # lookup per directory, nothing per file. A parent is also keyed as the scanner
        # spells it below a tracked "/" ("//home"), which costs nothing elsewhere.
        self.never = frozenset(never)
        self._hidden: dict[bytes, set[bytes]] = {}
        for path in self.never:
            parent, name = path.rsplit(b"/", 1)
            for key in {parent or b"/", b"/" + parent}:
                self._hidden.setdefault(key, set()).add(name)

    def scan(self, tracked: TrackedDir, only: Iterable[Subtree] | None = None
             ) -> Iterator[Changed | Unchanged | Listed | Deleted]:
        """Walk `tracked` (all of it, or only towards the `only` subtrees)."""
        root = os.fsencode(tracked.path)
        plan = None if only is None else plan_subtrees(root, only)
        if plan is False:
            return
        try:
            root_st = os.lstat(root)
        except OSError as e:
            self.warn(f"tracked directory {tracked.path}: {e.strerror}; keeping its last backup")
            return
        if not stat.S_ISDIR(root_st.st_mode):
            self.warn(f"tracked directory {tracked.path} is not a directory; skipped")
            return
        if any(is_under(root, p) for p in self.never):
            self.warn(f"tracked directory {tracked.path} is never backed up (btfs's own "
                      "files or mount, or /proc, /sys, /dev, /run); skipped")
            return
        node: int | None = ROOT
        parts = [p for p in root.split(b"/") if p]
        for depth, name in enumerate(parts):
            path = b"/" + b"/".join(parts[:depth + 1])
            node = self.resolve(node, name, True)
            is_root = depth == len(parts) - 1
            st = root_st if is_root else os.lstat(path)
            # Directories above the tracked one are recorded so the mount can show them
            # as they were, but they are not part of the backup's counts.
            yield self._compare_ancestor(node, path, st, counted=is_root)
        matcher = Matcher(self.config.excludes + tracked.excludes, tracked.includes)
        # One generator per directory being walked; a _Descend from the innermost one
        # starts its subdirectory's. A stack rather than recursion: trees deeper than
        # Python's recursion limit exist.
        walking = [self._scan_dir(root, node, b"", matcher, root_st.st_dev, inline=True,
                                  plan=plan)]
        while walking:
            for event in walking[-1]:
                if isinstance(event, _Descend):
                    walking.append(self._scan_dir(
                        event.path, event.node_id, event.rel, matcher, root_st.st_dev,
                        inline=len(walking) < MAX_OPEN_LEVELS, plan=event.plan))
                    break
                yield event
            else:
                walking.pop()

    def _compare_ancestor(self, node: int | None, path: bytes, st: os.stat_result, *,
                          counted: bool) -> Changed | Unchanged:
        head = self.reads.head(node) if node else None
        live = head is not None and head.type != DELETED
        if live and head.meta.same_stat(meta_from_stat(st, DIR)):
            return Unchanged(node, path, counted)
        return Changed(node, path, st, DIR, not live, counted)

    def _scan_dir(self, path: bytes, node: int | None, rel: bytes, matcher: Matcher,
                  root_dev: int, *, inline: bool, plan: _Plan | None = None):
        """A directory's events, with a _Descend where each subdirectory is to be walked:
        at its name (`inline`, keeping this directory open meanwhile) or, past
        MAX_OPEN_LEVELS, after the listing is done and the directory closed."""
        try:
            # lstat relative to the directory's fd: no walk of the whole path per entry.
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as e:
            self.warn(f"cannot list {os.fsdecode(path)}: {e.strerror}")
            return  # its children keep their last versions: not "deleted"
        deferred: list[_Descend] = []
        try:
            for event in self._scan_listed(fd, path, node, rel, matcher, root_dev, plan):
                if inline or not isinstance(event, _Descend):
                    yield event
                else:
                    deferred.append(event)
        finally:
            os.close(fd)
        yield from deferred

    def _scan_listed(self, fd: int, path: bytes, node: int | None, rel: bytes,
                     matcher: Matcher, root_dev: int, plan: _Plan | None = None):
        """The events of one directory's entries, then Listed. Long because its loop runs
        for every entry of every backup: a helper per entry would add a call (and its
        locals' set-up) to the backup's hottest path."""
        wanted = None if plan is None or plan.listed else plan.children
        if wanted is not None:
            # On the way to a subtree: only the names leading on are compared (a name gone
            # from disk fails its stat below), and only they can be found deleted; neither
            # the directory nor its catalog listing is read whole.
            names = sorted(wanted)
        else:
            try:
                names = sorted(os.listdir(path))  # no DirEntry objects: names suffice
            except OSError as e:
                self.warn(f"cannot list {os.fsdecode(path)}: {e.strerror}")
                return
        if (self.config.exclude_caches and (wanted is not None or b"CACHEDIR.TAG" in names)
                and is_cache_dir(path)):
            # The directory itself is kept (as tar and borg do); its contents are not.
            log.info("skipping contents of cache directory %s", os.fsdecode(path))
            names = []
        hidden = self._hidden.get(path)
        if hidden:
            # Left out like an excluded entry: not stat-ed (a dead mount would fail), not
            # recorded, and what an earlier backup recorded of it is deleted from here on.
            names = [n for n in names if n not in hidden]
        if node is None or node in self.fresh:
            live = {}
        elif wanted is not None:
            live = self.reads.live_children_named(node, names)
        else:
            live = self.reads.live_children(node)
        unchanged = 0
        report = self.report_unchanged
        xdev = self.config.one_file_system
        max_size = self.config.max_file_size
        excluded = matcher.entry_excluded
        # The loop below runs for every entry of every backup: paths are joined only
        # where an entry is new, changed, a directory or worth a warning.
        for name in names:
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                continue  # vanished since the listing
            except OSError as e:
                self.warn(f"cannot stat {os.fsdecode(path + b'/' + name)}: {e.strerror}")
                live.pop(name, None)  # unknown state: keep its last version
                continue
            kind = _KINDS.get(st.st_mode & 0o170000)
            child_rel = rel + b"/" + name if rel else name
            if kind is None or excluded(child_rel, name, kind == DIR):
                continue
            if kind == FILE and max_size and st.st_size > max_size:
                log.info("skipping %s: larger than max_file_size",
                         os.fsdecode(path + b"/" + name))
                continue
            entry = live.pop(name, None)  # what is left in `live` at the end is gone
            # Change detection: lstat against the newest version by the one rule,
            # catalog.model.UNCHANGED_BY_STAT (LiveChild holds those fields after its
            # node_id), spelled as one tuple compare: this runs for every entry.
            same = entry is not None and entry[1:] == (kind, st.st_size, st.st_mtime_ns,
                                                       st.st_ctime_ns, st.st_ino)
            if same and kind != DIR and entry.node_id not in report:
                unchanged += 1
                continue
            child_path = path + b"/" + name
            if entry is not None and entry.type == DIR and kind != DIR:
                # A directory replaced by a file or symlink: its old contents end here.
                for gone_name, gone in self.reads.live_children(entry.node_id).items():
                    yield Deleted(gone, child_path + b"/" + gone_name)
            child = entry.node_id if entry else self.resolve(node, name, kind == DIR)
            if not same:
                yield Changed(child, child_path, st, kind, entry is None)
            elif child in report:
                yield Unchanged(child, child_path)
            else:
                unchanged += 1
            if kind == DIR and not (xdev and st.st_dev != root_dev):
                if plan is None or entry is None or entry.type != DIR:
                    yield _Descend(child_path, child, child_rel)  # whole: all of it is new
                elif name in plan.children:
                    yield _Descend(child_path, child, child_rel, plan.children[name])
        for name, entry in live.items():
            yield Deleted(entry, path + b"/" + name)
        yield Listed(path, unchanged)
