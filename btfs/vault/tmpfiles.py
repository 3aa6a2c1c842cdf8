"""Names for files being written (a local vault's tmp/, an S3 vault's spool) and the rule
for which of them are certainly dead.

Several hosts may write into one vault at once, so a cleaner must never remove a file that
a live writer on another machine (or in another process here) is still writing. A name
says who writes it: `<machine>-<pid>-<start>-<ns>.tmp`, where `machine` stands for this
machine (hostname and machine id: pids mean something only there) and `start` is the
process's start time (so a pid reused by a later process is not mistaken for the writer).
A file is dead when it is this machine's and its process is gone, or when it has not been
touched for STALE_SECONDS whoever wrote it. It never removes anything else.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from functools import cache
from pathlib import Path

from .. import digest

log = logging.getLogger(__name__)

# A writer rewrites its temp file as it goes and commits it within minutes; one untouched
# for a day belongs to a machine that died mid-write (or to an older btfs's name).
STALE_SECONDS = 24 * 3600


@cache
def machine_token() -> str:
    """A short name for this machine: containers may share a machine id, so the hostname
    goes in too."""
    try:
        machine_id = Path("/etc/machine-id").read_text().strip()
    except OSError:
        machine_id = ""
    return digest.hexdigest(f"{socket.gethostname()}\0{machine_id}".encode())[:12]


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot; None if there is no such pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    return stat.rpartition(b")")[2].split()[19].decode()


def tmp_name(suffix: str) -> str:
    """A name for a new file this process writes."""
    pid = os.getpid()
    return f"{machine_token()}-{pid}-{_start_time(pid)}-{time.monotonic_ns()}{suffix}"


def is_dead(name: str, mtime: float, now: float) -> bool:
    if now - mtime > STALE_SECONDS:
        return True
    parts = name.split("-")
    if len(parts) != 4 or parts[0] != machine_token() or not parts[1].isdigit():
        return False  # another machine's, or not a name of ours: only age may remove it
    return _start_time(int(parts[1])) != parts[2]


def clean_dir(directory: Path) -> int:
    """Remove the dead files in `directory`; how many went."""
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return 0
    now = time.time()
    removed = 0
    for entry in entries:
        try:
            if not is_dead(entry.name, entry.stat().st_mtime, now):
                continue
            os.unlink(entry.path)
            removed += 1
        except FileNotFoundError:
            continue  # its writer committed or dropped it meanwhile
    if removed:
        log.info("removed %d temp files of dead writers in %s", removed, directory)
    return removed
