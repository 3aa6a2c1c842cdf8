"""Steps and goals, medians, the markdown tables, machine info and the result files."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import statistics
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .common import BENCH, RESULTS, MiB, tool_version
from .data import Mode
from .tools import Tool


@dataclass(frozen=True)
class Goal:
    ref: str | None  # "restic"/"borg", or None for an absolute limit
    op: str  # "<=" or ">="
    value: float
    unit: str = ""

    def text(self) -> str:
        sym = "≤" if self.op == "<=" else "≥"
        return (f"{sym}{self.value:g}× {self.ref}" if self.ref
                else f"{sym}{self.value:g} {self.unit}")

    def met(self, btfs: float, ref: float | None) -> bool | None:
        if self.ref:
            if ref is None or ref == 0:
                return None
            x = btfs / ref
        else:
            x = btfs
        return x <= self.value if self.op == "<=" else x >= self.value


@dataclass(frozen=True)
class Step:
    key: str
    label: str
    unit: str
    goal: Goal | None = None
    ref_step: str | None = None  # compare btfs with restic/borg on another step


def main_steps(mode: Mode) -> list[Step]:
    large = f"{len(mode.large)} x {mode.large_size // MiB} MiB"
    return [
        Step("backup_initial_src", "initial backup, source tree", "s", Goal("restic", "<=", 0.5)),
        Step("backup_nochange_src", "no-change backup, source tree", "s",
             Goal("restic", "<=", 0.25)),
        Step("backup_change_src", "after-change backup, source tree", "s",
             Goal("restic", "<=", 0.3)),
        Step("backup_initial_large", f"initial backup, large files ({large})", "s",
             Goal("restic", "<=", 0.5)),
        Step("backup_nochange_large", "no-change backup, large files", "s"),
        Step("backup_change_large", "after-change backup, large files", "s"),
        Step("repo_src", "repository size, source tree", "MB", Goal("restic", "<=", 1.0)),
        Step("repo_large", "repository size, large files", "MB", Goal("restic", "<=", 1.0)),
        Step("rss_backup_src", "peak RSS of a backup, source tree (max of 3)", "MB",
             Goal(None, "<=", 100, "MB")),
        Step("rss_backup_large", "peak RSS of a backup, large files (max of 3)", "MB",
             Goal(None, "<=", 100, "MB")),
        Step("mount_ready", "mount ready (launch to ls of snapshot root)", "s",
             Goal(None, "<=", 0.5, "s")),
        Step("find_mount", "find over mounted snapshot", "s", Goal("restic", "<=", 0.4)),
        Step("find_mount_us", "find over mounted snapshot, per entry", "µs"),
        Step("find_byfile", "find over by-file/ of the source tree, same mount", "s"),
        Step("find_byfile_us", "find over by-file/, per entry", "µs"),
        Step("find_byfile_ratio", "by-file/ find per entry / by-time/ find per entry", "×",
             Goal(None, "<=", 1.5, "×")),
        Step("btfs_find_one", "btfs find, selective pattern (whole command)", "s",
             Goal(None, "<=", 0.1, "s")),
        Step("btfs_find_one_query", "btfs find, selective: the search once open", "s",
             Goal(None, "<=", 0.1, "s")),
        Step("btfs_find_one_paths", "btfs find, selective: paths found", "paths"),
        Step("btfs_find_many", "btfs find '*.c' (whole command)", "s", Goal(None, "<=", 0.1, "s")),
        Step("btfs_find_many_query", "btfs find '*.c': the search once open", "s",
             Goal(None, "<=", 0.1, "s")),
        Step("btfs_find_many_paths", "btfs find '*.c': paths found", "paths"),
        Step("btfs_diff", "btfs diff first..last backup (whole command)", "s",
             Goal(None, "<=", 0.5, "s")),
        Step("btfs_diff_query", "btfs diff: the diff once open", "s", Goal(None, "<=", 0.5, "s")),
        Step("btfs_diff_paths", "btfs diff: paths changed", "paths"),
        Step("tar_mount", "tar of mounted snapshot", "s", Goal("borg", "<=", 0.33)),
        Step("cat_mount", f"cold cat of a {mode.large_size // MiB} MiB file through mount",
             "MB/s", Goal("borg", ">=", 1.4)),
        Step("rss_mount", "peak RSS of the mount (after find, tar)", "MB"),
        Step("restore", "restore source tree (btfs: cp -a from mount)", "s",
             Goal("restic", "<=", 1.0)),
        Step("restore_cli", "restore source tree with btfs restore (vs restore above)", "s",
             ref_step="restore"),
    ]


def s3_steps(mode: Mode) -> list[Step]:
    """The S3 rows (bench/s3.py): btfs and restic against one moto server on 127.0.0.1."""
    return [
        Step("s3_backup_initial_src", "S3: initial backup, source tree", "s",
             Goal("restic", "<=", 0.6)),
        Step("s3_backup_nochange_src", "S3: no-change backup, source tree", "s",
             Goal("restic", "<=", 0.25)),
        Step("s3_backup_change_src", "S3: after-change backup, source tree", "s",
             Goal("restic", "<=", 0.3)),
        Step("s3_rss_backup_src", "S3: peak RSS of a backup, source tree (max of 3)", "MB",
             Goal(None, "<=", 100, "MB")),
        Step("s3_repo_src", "S3: bytes in the bucket (btfs: + catalog), source tree", "MB"),
        Step("s3_backup_initial_large", f"S3: initial backup of the {mode.large_size // MiB} "
             "MiB file", "s"),
        Step("s3_restore", "S3: restore source tree (btfs: cp -a from mount)", "s",
             Goal("restic", "<=", 1.0)),
        Step("s3_restore_cli", "S3: restore source tree with btfs restore", "s",
             Goal("restic", "<=", 1.0), ref_step="s3_restore"),
        Step("s3_cat_mount", f"S3: cold cat of the {mode.large_size // MiB} MiB file through "
             "the mount (read cache empty)", "MB/s", Goal(None, ">=", 200, "MB/s")),
    ]


def watch_steps(settle: float) -> list[Step]:
    """The `btfs watch` rows (bench/watch.py); "full backup" is a `btfs backup` after the
    same kind of change, the anchor of the last row's goal."""
    return [
        Step("watch_visible", f"watch: a file's save to its snapshot in a running mount, "
             f"median of 5 (settle {settle:g} s)", "s", Goal(None, "<=", settle + 3, "s")),
        Step("watch_idle_cpu", "watch: the daemon's CPU with nothing changing", "%",
             Goal(None, "<=", 0.5, "%")),
        Step("watch_rss", "watch: the daemon's RSS watching every directory", "MB",
             Goal(None, "<=", 80, "MB")),
        Step("watch_hwm", "watch: the daemon's peak RSS (VmHWM, at the end)", "MB",
             Goal(None, "<=", 80, "MB")),
        Step("watch_change", "watch: 1% of the files changed, first write to snapshot "
             "minus settle (vs a full btfs backup)", "s", Goal("full backup", "<=", 0.3)),
    ]


NATIVE_STEPS = [
    Step("native_cp", "cp -a of the source tree", "s"),
    Step("native_find", "find over the source tree", "s"),
    Step("native_tar", "tar of the source tree", "s"),
    Step("native_cat", "cold cat of the large file", "MB/s"),
    Step("floor_find", "find through a pass-through pyfuse3 server (bench/floor.py)", "s"),
    Step("floor_find_us", "the same, per entry", "µs"),
    Step("floor_find_byfile", "find through the pass-through server over a tree shaped like "
         "by-file/ (bench.data.by_file_shape)", "s"),
    Step("floor_find_byfile_us", "the same, per entry", "µs"),
    Step("floor_byfile_ratio", "floor per entry: by-file shape / tree shape", "×"),
    Step("btfs_over_floor_byfile", "btfs by-file/ find per entry / the by-file-shape floor's",
         "×"),
    Step("floor_tar", "tar through the pass-through pyfuse3 server", "s"),
    Step("floor_cp", "cp -a out of the pass-through pyfuse3 server", "s"),
    Step("floor_backup_src", "initial backup of the source tree on btfs's stack, no "
         "catalog (bench/backup_floor.py)", "s"),
    Step("floor_catalog_src", "the same with the catalog rows a browsable backup keeps "
         "(bench/backup_floor.py --catalog)", "s"),
    Step("floor_backup_large", "initial backup of the large files on btfs's stack, no catalog",
         "s"),
    Step("floor_catalog_large", "the same with the catalog rows", "s"),
]


def fmt(v: object) -> str:
    if isinstance(v, dict):
        return "failed: " + str(v.get("failed"))
    if isinstance(v, int):
        return f"{v:,}"
    if not isinstance(v, float):
        return str(v)
    a = abs(v)
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 0.1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def summarize(reps: list[dict], step: str, tool: str) -> dict:
    vals = [rep.get(step, {}).get(tool) for rep in reps]
    nums = [v for v in vals if isinstance(v, (int, float))]
    fails = [v["failed"] for v in vals if isinstance(v, dict)]
    out: dict = {"values": vals}
    if nums:
        out["median"] = statistics.median(nums)
        out["n"] = len(nums)
    elif fails:
        out["failed"] = fails[0]
    return out


def failed(reason: str, width: int = 70) -> str:
    """A table cell for a failure; the full reason is in the .json and bench/work/logs/."""
    return "failed: " + (reason if len(reason) <= width else reason[:width - 3] + "...")


def cell(s: dict, reps: int) -> str:
    if "median" in s:
        extra = f" ({s['n']}/{reps} ok)" if s["n"] < reps else ""
        return fmt(s["median"]) + extra
    if "failed" in s:
        return failed(s["failed"])
    return "-"


def md_table(headers: list[str], rows: list[list[str]]) -> str:
    rows = [[c.replace("|", "\\|") for c in r] for r in rows]
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(headers), sep, *(line(r) for r in rows)])


def main_table(steps: list[Step], reps: list[dict],
               others: tuple[str, ...] = ("restic", "borg")) -> tuple[str, dict]:
    """The table of `steps`: btfs, then each of `others`, ratios and goals."""
    n = len(reps)
    rows, medians = [], {}
    for st in steps:
        s = {t: summarize(reps, st.key, t) for t in ("btfs", *others)}
        medians[st.key] = {t: v.get("median", {"failed": v.get("failed")}) for t, v in s.items()}
        b = s["btfs"].get("median")
        refs = {t: summarize(reps, st.ref_step or st.key, t).get("median") for t in others}
        ratio = {t: f"{b / o:.2f}×" if b is not None and o else "-" for t, o in refs.items()}
        goal = ""
        if st.goal:
            ref = refs[st.goal.ref] if st.goal.ref else None
            ok = st.goal.met(b, ref) if b is not None else None
            goal = st.goal.text() + {True: " ✓", False: " ✗", None: ""}[ok]
        rows.append([f"{st.label} ({st.unit})", cell(s["btfs"], n),
                     *(cell(s[t], n) for t in others), *(ratio[t] for t in others), goal])
    table = md_table(["step", "btfs", *others, *(f"btfs/{t}" for t in others), "goal"], rows)
    return table, medians


def native_table(reps: list[dict]) -> tuple[str, dict]:
    rows, medians = [], {}
    for st in NATIVE_STEPS:
        s = summarize(reps, st.key, "native")
        medians[st.key] = s.get("median")
        rows.append([f"{st.label} ({st.unit})", cell(s, len(reps))])
    return md_table(["native limit", "value"], rows), medians


# Goal rows and the floors measured for them in the same run (NATIVE_STEPS): what a tool
# built on btfs's stack pays at least, so a goal whose limit lies under its floor cannot
# be met on this stack whatever btfs does.
GOAL_FLOORS = {
    "backup_initial_src": ("floor_backup_src", "floor_catalog_src"),
    "backup_initial_large": ("floor_backup_large", "floor_catalog_large"),
    "find_mount": ("floor_find",),
    "tar_mount": ("floor_tar",),
    "restore": ("floor_cp",),
}


def _relative(value, anchor: float, unit: str) -> str:
    if not isinstance(value, (int, float)):
        return "-"
    return f"{fmt(value)} {unit} ({value / anchor:.2f}×)"


def floors_table(steps: list[Step], medians: dict, nmedians: dict) -> str:
    """Each goal with a floor: its limit in the step's unit, then the floors and btfs as
    multiples of the goal's anchor."""
    rows = []
    for st in steps:
        if st.key not in GOAL_FLOORS or st.goal is None or st.goal.ref is None:
            continue
        anchor = medians.get(st.key, {}).get(st.goal.ref)
        if not isinstance(anchor, (int, float)) or not anchor:
            continue
        floors = [nmedians.get(k) for k in GOAL_FLOORS[st.key]]
        rows.append([st.label, f"{st.goal.text()} = {fmt(anchor * st.goal.value)} {st.unit}",
                     _relative(floors[0], anchor, st.unit),
                     _relative(floors[1], anchor, st.unit) if len(floors) > 1 else "",
                     _relative(medians[st.key].get("btfs"), anchor, st.unit)])
    return md_table(["goal", "limit", "floor", "floor with catalog", "btfs"], rows)


def machine_info() -> dict:
    mem = next((ln.split()[1] for ln in Path("/proc/meminfo").read_text().splitlines()
                if ln.startswith("MemTotal:")), "0")
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text()
                .splitlines() if ln.startswith("model name")), platform.processor())
    fs = subprocess.run(["df", "-T", str(BENCH)], capture_output=True, text=True).stdout
    fstype = fs.splitlines()[-1].split()[1] if fs.strip() else "?"
    return {"nproc": os.cpu_count(), "memory_gib": round(int(mem) / 1024 / 1024, 1),
            "kernel": platform.release(), "cpu": cpu, "filesystem": fstype,
            "python": platform.python_version()}


def versions(tools: list[Tool]) -> dict:
    v = {t.name: t.version() for t in tools}
    v["tar"] = tool_version(["tar", "--version"])
    git = subprocess.run(["git", "-C", str(BENCH), "describe", "--always", "--dirty"],
                         capture_output=True, text=True)
    v["working tree"] = git.stdout.strip() or "?"
    return v


def header_lines(title: str, info: dict, vers: dict) -> list[str]:
    return [
        f"# {title}", "",
        f"- machine: {info['nproc']} CPUs ({info['cpu']}), {info['memory_gib']} GiB RAM, "
        f"kernel {info['kernel']}, {info['filesystem']} under bench/, Python {info['python']}",
        "- versions: " + "; ".join(f"{k}: {v}" for k, v in vers.items()),
    ]


def write_results(mode_name: str, md: str, doc: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / f"{dt.date.today().isoformat()}-{mode_name}"
    stem.with_suffix(".md").write_text(md)
    stem.with_suffix(".json").write_text(json.dumps(doc, indent=2, default=str) + "\n")
    return stem.with_suffix(".md")
