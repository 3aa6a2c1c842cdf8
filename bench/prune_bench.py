"""Forget half of 20 backups, then give the space back: btfs against restic and borg.

    python -m bench.prune_bench [--rounds N] [--rebuild] [WORKDIR]
                                              (default WORKDIR /tmp/btfs-prune-bench)
    python -m bench.prune_bench --scale       planning at 1M files x 100 backups (see
                                              bench/prune_scale.py)
    BENCH_PRUNE_BASE=DIR python -m bench.prune_bench --tools btfs,btfs-base,restic,borg
                                              also btfs as checked out in DIR (before/after)

A synthetic tree of 20,000 text-like files (seeded, ~10 KB each) is backed up 20 times by
each tool, 1% of the files rewritten before each backup (the same files for every tool).
The three repositories after the 20 backups are kept in WORKDIR/template (built once; again
with --rebuild). Then, for each of N rounds (default 5), each tool's repository is laid
anew from the template and timed, the tools in a rotating order so none always runs first
on a machine others share: btfs `forget --keep-last 10` and `prune`; restic (repository
format 2, as bench.py) `forget --keep-last 10 --prune`; borg (`init -e none`, default lz4)
`prune --keep-last 10` and `compact`. Reported: min and median seconds per tool, the
ratios of the medians, peak RSS (GNU time), repository size before and after, and btfs
prune's planning time (from its --json). Never part of the tests; figures go into the
report, not into asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

FILES = int(os.environ.get("BENCH_PRUNE_FILES", "20000"))
BACKUPS = 20
CHURN = 0.01
WORDS = [f"w{i:x}" for i in range(4000)]
BTFS = [sys.executable, "-m", "btfs"]
CPU = [0.0]  # CPU seconds of the commands run with rss=True since it was last zeroed


def text(seed: int) -> bytes:
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(500, 3000))).encode()


def make_tree(src: Path) -> None:
    for i in range(FILES):
        d = src / f"d{i // 200:03}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:05}.txt").write_bytes(text(i))


def churn(src: Path, step: int) -> None:
    rng = random.Random(1000 + step)
    for i in rng.sample(range(FILES), int(FILES * CHURN)):
        (src / f"d{i // 200:03}" / f"f{i:05}.txt").write_bytes(text(i * 1000 + step))


def run(cmd: list[str], env: dict, rss: bool = False, cwd: str | None = None
        ) -> tuple[float, float, str]:
    """(seconds, peak RSS in MB or 0, stdout); with `rss`, the CPU seconds (user + system)
    are added to CPU[0]: on a machine others share, a steadier figure than the wall's."""
    out_file = Path(env["BENCH_TMP"]) / "rss"
    full = ["/usr/bin/time", "-f", "%U %S %M", "-o", str(out_file), *cmd] if rss else cmd
    t0 = time.perf_counter()
    p = subprocess.run(full, env=env, capture_output=True, text=True, cwd=cwd)
    secs = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)}: exit {p.returncode}\n{p.stderr[-2000:]}")
    peak = 0.0
    if rss:
        user, system, kb = out_file.read_text().split()[-3:]
        CPU[0] += float(user) + float(system)
        peak = int(kb) / 1024
    return secs, peak, p.stdout


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def environment(work: Path) -> dict:
    state = work / "state"
    return {**os.environ, "BENCH_TMP": str(work), "RESTIC_PASSWORD": "bench",
            "BORG_PASSPHRASE": "", "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "yes",
            "BORG_BASE_DIR": str(state / "borg-base"),
            "BTFS_CONFIG": str(state / "btfs-config.toml"),
            "XDG_DATA_HOME": str(state / "btfs-data"), "XDG_CACHE_HOME": str(state / "cache")}


# Each tool's repository and whatever of its state lives beside it, under WORKDIR/state.
PARTS = {"btfs": ("btfs-vault", "btfs-data", "btfs-config.toml"),
         "restic": ("restic", "cache"), "borg": ("borg", "borg-base")}
# --tools btfs-base: btfs as the checkout at BENCH_PRUNE_BASE has it (`python -m btfs` run
# there imports that btfs), for before/after figures in the same rounds.
PARTS["btfs-base"] = PARTS["btfs"]


def build(work: Path, env: dict) -> None:
    """The 20 backups of every tool, kept in WORKDIR/template."""
    shutil.rmtree(work, ignore_errors=True)
    src, state = work / "src", work / "state"
    make_tree(src)
    state.mkdir(parents=True)
    run([*BTFS, "init", "--vault", str(state / "btfs-vault"), "--no-input"], env)
    run([*BTFS, "track", str(src)], env)
    run(["restic", "init", "-r", str(state / "restic"), "--repository-version", "2"], env)
    run(["borg", "init", "-e", "none", str(state / "borg")], env)
    for step in range(BACKUPS):
        if step:
            churn(src, step)
        run([*BTFS, "-q", "backup"], env)
        run(["restic", "-r", str(state / "restic"), "backup", "-q", str(src)], env)
        run(["borg", "create", f"{state / 'borg'}::b{step:02}", str(src)], env)
        print(f"backup {step + 1}/{BACKUPS} done", flush=True)
    shutil.copytree(state, work / "template", symlinks=True)


def lay(work: Path, tool: str) -> None:
    """The tool's repository as the template holds it."""
    for part in PARTS[tool]:
        target, source = work / "state" / part, work / "template" / part
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        if source.is_dir():
            shutil.copytree(source, target, symlinks=True)
        elif source.exists():
            shutil.copy2(source, target)


def size(work: Path, tool: str) -> int:
    return sum(du(work / "state" / p) if (work / "state" / p).is_dir() else 0
               for p in PARTS[tool])


def timed(work: Path, tool: str, env: dict) -> tuple[float, float, dict]:
    """One round of a tool: (seconds, peak RSS MB, btfs figures)."""
    state = work / "state"
    if tool.startswith("btfs"):
        cwd = os.environ["BENCH_PRUNE_BASE"] if tool == "btfs-base" else None
        s_f, r_f, _ = run([*BTFS, "forget", "--keep-last", "10"], env, rss=True, cwd=cwd)
        s_p, r_p, out = run([*BTFS, "prune", "--json"], env, rss=True, cwd=cwd)
        return s_f + s_p, max(r_f, r_p), {"forget": s_f, "prune": s_p, **json.loads(out)}
    if tool == "restic":
        s, r, _ = run(["restic", "-r", str(state / "restic"), "forget", "--keep-last", "10",
                       "--prune"], env, rss=True)
        return s, r, {}
    s_b, r_b, _ = run(["borg", "prune", "--keep-last", "10", str(state / "borg")], env,
                      rss=True)
    s_c, r_c, _ = run(["borg", "compact", str(state / "borg")], env, rss=True)
    return s_b + s_c, max(r_b, r_c), {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work", nargs="?", default="/tmp/btfs-prune-bench")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument("--tools", default="btfs,restic,borg")
    parser.add_argument("--scale", action="store_true")
    args = parser.parse_args()
    if args.scale:
        from bench import prune_scale
        return prune_scale.main()
    work = Path(args.work)
    env = environment(work)
    if args.rebuild or not (work / "template").is_dir():
        build(work, env)
    tools = args.tools.split(",")
    secs: dict[str, list[float]] = {t: [] for t in tools}
    cpu: dict[str, list[float]] = {t: [] for t in tools}
    rss: dict[str, float] = {t: 0.0 for t in tools}
    figures: list[dict] = []
    sizes: dict[str, tuple[int, int]] = {}
    for n in range(args.rounds):
        order = tools[n % len(tools):] + tools[:n % len(tools)]
        for tool in order:
            lay(work, tool)
            before = size(work, tool)
            CPU[0] = 0.0
            s, r, f = timed(work, tool, env)
            secs[tool].append(s)
            cpu[tool].append(CPU[0])
            rss[tool] = max(rss[tool], r)
            sizes[tool] = (before, size(work, tool))
            if f and tool == "btfs":
                figures.append(f)
        print(f"round {n + 1}: " + ", ".join(f"{t} {secs[t][-1]:.2f} s" for t in tools),
              flush=True)
    print(f"\n{FILES} files, {BACKUPS} backups, {CHURN:.0%} churn; forget 10, keep 10; "
          f"{args.rounds} rounds\n")
    print("| tool | min s | median s | median CPU s | peak RSS MB | repo MB before | after |")
    print("|---|---|---|---|---|---|---|")
    for t in tools:
        print(f"| {t} | {min(secs[t]):.2f} | {statistics.median(secs[t]):.2f} "
              f"| {statistics.median(cpu[t]):.2f} | {rss[t]:.0f} "
              f"| {sizes[t][0] / 1e6:.1f} | {sizes[t][1] / 1e6:.1f} |")
    if "btfs" in tools:
        med = statistics.median(secs["btfs"])
        for other in [t for t in tools if t != "btfs"]:
            print(f"\nbtfs / {other}: {med / statistics.median(secs[other]):.2f} (medians), "
                  f"{min(secs['btfs']) / min(secs[other]):.2f} (minimums), "
                  f"{statistics.median(cpu['btfs']) / statistics.median(cpu[other]):.2f} "
                  "(median CPU seconds)")
        f = figures[-1]
        print(f"\nbtfs forget median {statistics.median(x['forget'] for x in figures):.2f} s, "
              f"prune median {statistics.median(x['prune'] for x in figures):.2f} s, "
              f"planning {f['planning_seconds']:.3f} s; {f['dead_packs']} packs deleted, "
              f"{f['repacked']} repacked, {f['freed_bytes'] / 1e6:.1f} MB freed, catalog "
              f"vacuumed: {f['vacuumed']}")


if __name__ == "__main__":
    main()
