"""Shared by the benchmark modules: paths, units, running and timing commands, the page
cache, and notes collected for the report."""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
DATA = BENCH / "data"
WORK = BENCH / "work"
LOGS = WORK / "logs"
RESULTS = BENCH / "results"

MB = 1_000_000
MiB = 1 << 20

NOTES: list[str] = []  # remarks for the report (partial backups, count mismatches)


def log(msg: str) -> None:
    print(msg, flush=True)


class StepFailed(Exception):
    """A step did not complete; its message goes into the table as "failed: <message>"."""


_cmd_counter = 0


@dataclass
class Ran:
    returncode: int
    out: Path
    err: Path


def last_line(*paths: Path) -> str:
    for p in paths:
        try:
            lines = [ln.strip() for ln in p.read_text(errors="replace").splitlines() if ln.strip()]
        except OSError:
            continue
        if lines:
            return lines[-1][:200]
    return "(no output)"


def run(cmd: list[str], *, name: str, env: dict | None = None, cwd: Path | None = None,
        timeout: float | None = None, ok: tuple[int, ...] = (0,)) -> Ran:
    """Run a command with its output in bench/work/logs/; raise StepFailed unless it ends
    with an accepted exit code. Output goes to files, never pipes, so a command that leaves
    a daemon behind (``btfs mount``) cannot keep us waiting for EOF."""
    global _cmd_counter
    _cmd_counter += 1
    LOGS.mkdir(parents=True, exist_ok=True)
    base = LOGS / f"{_cmd_counter:04d}-{name}"
    out, err = base.with_suffix(".out"), base.with_suffix(".err")
    with open(out, "wb") as fo, open(err, "wb") as fe:
        fe.write(("$ " + " ".join(cmd) + "\n").encode())
        fe.flush()
        try:
            p = subprocess.run(cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=fo,
                               stderr=fe, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise StepFailed(f"timed out after {timeout:.0f}s: {' '.join(cmd[:3])}") from None
        except FileNotFoundError:
            raise StepFailed(f"command not found: {cmd[0]}") from None
    if p.returncode not in ok:
        raise StepFailed(f"{Path(cmd[0]).name} exit {p.returncode}: {last_line(err, out)}")
    return Ran(p.returncode, out, err)


def timed(cmd: list[str], **kw) -> tuple[float, Ran]:
    t0 = time.perf_counter()
    r = run(cmd, **kw)
    return time.perf_counter() - t0, r


def timed_rss(cmd: list[str], **kw) -> tuple[float, float, Ran]:
    """Seconds, peak RSS in MB (from /usr/bin/time -f %M, in KiB), result."""
    rss_file = LOGS / f"rss-{_cmd_counter + 1:04d}"
    secs, r = timed(["/usr/bin/time", "-f", "%M", "-o", str(rss_file), *cmd], **kw)
    try:
        kib = int(rss_file.read_text().split()[-1])
    except (OSError, ValueError, IndexError):
        raise StepFailed("no RSS from /usr/bin/time") from None
    return secs, kib * 1024 / MB, r


def shell(script: str, **kw) -> tuple[float, Ran]:
    return timed(["bash", "-o", "pipefail", "-c", script], **kw)


def du_bytes(*paths: Path) -> int:
    total = 0
    for p in paths:
        if p.exists():
            out = subprocess.run(["du", "-s", "--block-size=1", str(p)], capture_output=True,
                                 text=True, check=True).stdout
            total += int(out.split()[0])
    return total


def count_lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(1 for _ in f)


def tool_version(cmd: list[str]) -> str:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        return (p.stdout or p.stderr).strip().splitlines()[0] if p.returncode == 0 \
            else f"unavailable ({_first(p.stderr)})"
    except (OSError, subprocess.TimeoutExpired, IndexError) as e:
        return f"unavailable ({e})"


def _first(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[-1][:120] if lines else "no output"


DROP_CACHES_NOTE: list[str] = []


def drop_caches() -> bool:
    """sync; echo 3 > drop_caches. Tolerates failure (then the 'cold' reads are warm) and
    records that once for the report."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError as e:
        if not DROP_CACHES_NOTE:
            DROP_CACHES_NOTE.append(f"could not drop the page cache ({e.strerror}): "
                                    "the 'cold' cat figures are warm-cache reads")
            log("  warning: " + DROP_CACHES_NOTE[0])
        return False


class StealMeter:
    """The share of CPU time the VM's host took from this machine (steal, /proc/stat)
    from the meter's creation to share(). On the benchmark VM it ran from ~0% to over 40%
    within one run and took whole steps with it (a `find` through restic's mount: 3.5 s,
    then 18.5 s), so each value is logged with the steal during it and each repetition
    with its own."""

    def __init__(self) -> None:
        self._start = self._read()

    @staticmethod
    def _read() -> tuple[int, int] | None:
        try:
            with open("/proc/stat") as f:
                fields = [int(x) for x in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        # user nice system idle iowait irq softirq steal (guest time is inside user)
        return fields[7] if len(fields) > 7 else 0, sum(fields[:8])

    def share(self) -> float | None:
        """Stolen share of all CPU time since this meter started, 0..1 (None: unknown)."""
        end = self._read()
        if self._start is None or end is None or end[1] <= self._start[1]:
            return None
        return (end[0] - self._start[0]) / (end[1] - self._start[1])


def steal_text(share: float | None) -> str:
    return "" if share is None else f" (host steal {share:.0%})"
