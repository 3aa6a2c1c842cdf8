"""The mount table as btfs needs it: where btfs's FUSE mounts are, which are dead;
clearing a dead one, and `btfs umount`.

A btfs mount whose server died (kill -9, OOM) stays in the mount table; every access to
it fails with ENOTCONN ("Transport endpoint is not connected") and `os.path.ismount` says
False. So mounts are found in /proc/self/mountinfo by their type (`fuse.btfs`, from the
`subtype=btfs` mount option), never by stat-ing them. No pyfuse3 here: the backup and
`btfs umount` use this without it. Never unmounts a live mount unless `btfs umount` asks
(`unmount`), and never clears anything not btfs's.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import subprocess

from .errors import BtfsError, UsageError

log = logging.getLogger(__name__)

FSTYPE = "fuse.btfs"
MOUNTINFO = "/proc/self/mountinfo"

_ESCAPE = re.compile(rb"\\([0-7]{3})")  # mountinfo writes space, tab, newline, \ as \ooo


def btfs_mounts() -> list[str]:
    """Mountpoints of every btfs FUSE mount in this mount namespace, dead ones included."""
    points = []
    try:
        with open(MOUNTINFO, "rb") as f:
            lines = f.read().splitlines()
    except OSError as e:  # no /proc: nothing to skip, nothing to clean
        log.debug("cannot read %s: %s", MOUNTINFO, e)
        return points
    for line in lines:
        fields = line.split(b" ")
        try:
            fstype = fields[fields.index(b"-", 6) + 1]
        except (ValueError, IndexError):
            continue
        if fstype == FSTYPE.encode():
            raw = _ESCAPE.sub(lambda m: bytes([int(m.group(1), 8)]), fields[4])
            points.append(os.fsdecode(raw))
    return points


def is_dead(mountpoint: str) -> bool:
    """A btfs mount whose server is gone (ENOTCONN)."""
    if mountpoint not in btfs_mounts():
        return False
    try:
        # statfs, not stat: the kernel answers a stat of the root from its attribute
        # cache for a while after the server died; statfs always asks the server.
        os.statvfs(mountpoint)
    except OSError as e:
        return e.errno == errno.ENOTCONN
    return False


def clear_dead(mountpoint: str) -> bool:
    """Detach `mountpoint` if it is a dead btfs mount; whether it was one. A lazy unmount
    (-z): a dead mount has no server to answer a normal one's last requests."""
    if not is_dead(mountpoint):
        return False
    proc = subprocess.run(["fusermount3", "-u", "-z", mountpoint], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        reason = (proc.stderr.strip().splitlines() or ["fusermount3 failed"])[-1]
        raise BtfsError(f"cannot clear the dead mount at {mountpoint}: {reason}")
    log.info("cleared the dead btfs mount at %s", mountpoint)
    return True


def unmount(mountpoint: str) -> bool:
    """`btfs umount`: unmount a live btfs mount, or clear a dead one; True when it was
    dead. A UsageError when nothing is mounted there."""
    target = os.path.abspath(os.path.expanduser(mountpoint))
    if clear_dead(target):
        return True
    if not os.path.ismount(target):
        raise UsageError(f"{mountpoint} is not mounted")
    proc = subprocess.run(["fusermount3", "-u", target], capture_output=True, text=True)
    if proc.returncode != 0:
        reason = (proc.stderr.strip().splitlines() or ["fusermount3 failed"])[-1]
        raise BtfsError(f"cannot unmount {mountpoint}: {reason}")
    return False
