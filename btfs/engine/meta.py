"""File metadata: from the filesystem into `Meta`, and back onto a restored file.

Xattrs are stored as one blob: for each attribute, sorted by name, a u16 name length, the
name, a u32 value length and the value. Ownership is restored only when running as root
(as tar does); a failure to set metadata is a warning, never a lost file.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import struct

from ..catalog.model import DIR, FILE, SYMLINK, Meta
from ..text import display_path

log = logging.getLogger(__name__)

_NAME = struct.Struct("<H")
_VALUE = struct.Struct("<I")


_new_tuple = tuple.__new__
# meta_from_stat builds Meta positionally: it must follow the fields' order.
assert Meta._fields == ("type", "size", "mode", "uid", "gid", "atime_ns", "mtime_ns",
                        "ctime_ns", "btime_ns", "ino", "nlink", "target", "xattrs",
                        "content_id")


def file_type(mode: int) -> str | None:
    """btfs's type for a mode, None for what btfs does not store (fifos, sockets, devices)."""
    if stat.S_ISREG(mode):
        return FILE
    if stat.S_ISDIR(mode):
        return DIR
    if stat.S_ISLNK(mode):
        return SYMLINK
    return None


def meta_from_stat(st: os.stat_result, kind: str, *, target: bytes | None = None,
                   xattrs: bytes | None = None, content_id: int | None = None,
                   atime_ns: int | None = None) -> Meta:
    """`atime_ns` overrides the stat's (a file's atime from before btfs read it)."""
    # Built with tuple.__new__ in Meta's field order, not Meta(type=..., ...): a backup
    # makes one per entry it records, on its main thread, and keyword arguments to a named
    # tuple cost 2.8 us against 1.1 us (6% of that thread's time with the GIL).
    return _new_tuple(Meta, (kind, st.st_size, st.st_mode, st.st_uid, st.st_gid,
                             st.st_atime_ns if atime_ns is None else atime_ns,
                             st.st_mtime_ns, st.st_ctime_ns, None, st.st_ino, st.st_nlink,
                             target, xattrs, content_id))


def encode_xattrs(pairs: list[tuple[bytes, bytes]]) -> bytes | None:
    if not pairs:
        return None
    out = bytearray()
    for name, value in sorted(pairs):
        out += _NAME.pack(len(name)) + name + _VALUE.pack(len(value)) + value
    return bytes(out)


def decode_xattrs(blob: bytes | None) -> list[tuple[bytes, bytes]]:
    pairs = []
    pos = 0
    while blob and pos < len(blob):
        (n,) = _NAME.unpack_from(blob, pos)
        pos += _NAME.size
        name = blob[pos:pos + n]
        pos += n
        (v,) = _VALUE.unpack_from(blob, pos)
        pos += _VALUE.size
        pairs.append((name, blob[pos:pos + v]))
        pos += v
    return pairs


def read_xattrs(path: bytes | int) -> bytes | None:
    """The xattrs of `path` (not following symlinks) or of an open fd, encoded; None when
    there are none."""
    follow = isinstance(path, int)  # an fd: "following" is meaningless but required
    try:
        names = os.listxattr(path, follow_symlinks=follow)
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.ENODATA, errno.EPERM):
            return None
        raise
    pairs = []
    for name in names:
        try:
            pairs.append((name.encode("utf-8", "surrogateescape"),
                          os.getxattr(path, name, follow_symlinks=follow)))
        except OSError as e:
            if e.errno not in (errno.ENODATA, errno.ENOTSUP):
                raise
    return encode_xattrs(pairs)


# Only root may give files away; checked once, not once per restored entry.
_IS_ROOT = os.geteuid() == 0


def apply_meta(path: bytes, meta: Meta, fd: int | None = None) -> list[str]:
    """Set owner, mode, xattrs and times of a restored entry; returns warnings. With `fd`
    (the entry open for writing) the calls go through it: no path lookup per call, which
    on a restore of many small files is most of the kernel's time."""
    warnings = []
    is_link = meta.type == SYMLINK
    target: bytes | int = path if fd is None else fd
    follow = fd is not None  # an fd: "following" is meaningless but required
    if _IS_ROOT:
        try:
            os.chown(target, meta.uid, meta.gid, follow_symlinks=follow)
        except OSError as e:
            warnings.append(f"cannot set owner of {display_path(path)}: {e.strerror}")
    for name, value in decode_xattrs(meta.xattrs):
        try:
            os.setxattr(target, name.decode("utf-8", "surrogateescape"), value,
                        follow_symlinks=follow)
        except OSError as e:
            warnings.append(f"cannot set xattr {display_path(name)} on {display_path(path)}: "
                            f"{e.strerror}")
    if not is_link:
        # After chown, which may clear setuid bits.
        os.chmod(target, stat.S_IMODE(meta.mode))
    os.utime(target, ns=(meta.atime_ns, meta.mtime_ns), follow_symlinks=follow)
    return warnings
