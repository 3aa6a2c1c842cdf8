"""The xattr cache of the mount (btfs.fuse.xattrcache), without a kernel: snapshot entries'
xattrs come from the attributes lookups hand out, at no query; others expire."""

from __future__ import annotations

from btfs.engine.meta import encode_xattrs
from btfs.fuse.tree import Attr, Description, file_dir_ino, version_ino
from btfs.fuse.xattrcache import XattrCache


def attr(ino: int, xattrs: bytes | None, *, stable: bool = True) -> Attr:
    return Attr(ino, 0o100644, 1, 0, 0, 0, 0, 0, 0, stable, xattrs)


class Model:
    """tree.Tree.describe over a dict, counting its calls."""

    def __init__(self, xattrs: dict[int, dict[bytes, bytes]]):
        self.xattrs = xattrs
        self.calls: list[int] = []

    def describe(self, ino: int) -> Description:
        self.calls.append(ino)
        return Description(attr(ino, None), dict(self.xattrs.get(ino, {})))


def test_entries_seen_in_a_listing_answer_without_asking_the_model():
    model = Model({})
    cache = XattrCache(model.describe, live_seconds=1.0)
    f, bare = version_ino(7), version_ino(8)
    cache.note(attr(f, encode_xattrs([(b"user.a", b"1"), (b"user.b", b"")])))
    cache.note(attr(bare, None))
    assert cache.get(f) == {b"user.a": b"1", b"user.b": b""}
    assert cache.get(bare) == {}
    assert model.calls == []


def test_a_miss_asks_the_model_once_and_live_entries_expire():
    now = [100.0]
    stable, live = version_ino(9), file_dir_ino(5)
    model = Model({stable: {b"user.k": b"v"}, live: {}})
    cache = XattrCache(model.describe, live_seconds=1.0, clock=lambda: now[0])
    cache.note(attr(live, b"ignored", stable=False))  # live attributes are not kept
    for _ in range(3):
        assert cache.get(stable) == {b"user.k": b"v"}
        assert cache.get(live) == {}
    assert model.calls == [stable, live]
    now[0] += 1.5
    cache.get(stable), cache.get(live)
    assert model.calls == [stable, live, live]  # a snapshot entry never changes


def test_the_cache_is_bounded_oldest_first():
    model = Model({})
    cache = XattrCache(model.describe, live_seconds=1.0, kept=3)
    for i in range(1, 6):
        cache.note(attr(version_ino(i), None))
    assert len(cache) == 3
    cache.get(version_ino(1))  # forgotten: asked again
    assert model.calls == [version_ino(1)]
