"""Forget half of 20 backups, then give the space back: btfs against restic and borg.

    python3 bench/prune_bench.py [WORKDIR]     (default /tmp/btfs-prune-bench)

A synthetic tree of 20,000 text-like files (seeded, ~10 KB each) is backed up 20 times by
each tool, 1% of the files rewritten before each backup (the same files for every tool).
Then, timed: btfs `forget --keep-last 10` and `prune`; restic (repository format 2, as
bench.py) `forget --keep-last 10 --prune`; borg (`init -e none`, default lz4) `prune
--keep-last 10` and `compact`. Reported: seconds, peak RSS (GNU time), repository size
before and after, and btfs prune's planning time (from its --json). Never part of the
tests; figures go into the report, not into asserts.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

FILES = int(os.environ.get("BENCH_PRUNE_FILES", "20000"))
BACKUPS = 20
CHURN = 0.01
WORDS = [f"w{i:x}" for i in range(4000)]
BTFS = [sys.executable, "-m", "btfs"]


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


def run(cmd: list[str], env: dict, rss: bool = False) -> tuple[float, float, str]:
    """(seconds, peak RSS in MB or 0, stdout)."""
    out_file = Path(env["BENCH_TMP"]) / "rss"
    full = ["/usr/bin/time", "-f", "%M", "-o", str(out_file), *cmd] if rss else cmd
    t0 = time.perf_counter()
    p = subprocess.run(full, env=env, capture_output=True, text=True)
    secs = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)}: exit {p.returncode}\n{p.stderr[-2000:]}")
    peak = int(out_file.read_text().split()[-1]) / 1024 if rss else 0.0
    return secs, peak, p.stdout


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main() -> None:
    work = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/btfs-prune-bench")
    shutil.rmtree(work, ignore_errors=True)
    src = work / "src"
    env = {**os.environ, "BENCH_TMP": str(work), "RESTIC_PASSWORD": "bench",
           "BORG_PASSPHRASE": "", "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "yes",
           "BORG_BASE_DIR": str(work / "borg-base"),
           "BTFS_CONFIG": str(work / "btfs-config.toml"),
           "XDG_DATA_HOME": str(work / "btfs-data"), "XDG_CACHE_HOME": str(work / "cache")}
    make_tree(src)
    repos = {"btfs": work / "btfs-vault", "restic": work / "restic", "borg": work / "borg"}
    run([*BTFS, "init", "--vault", str(repos["btfs"]), "--no-input"], env)
    run([*BTFS, "track", str(src)], env)
    run(["restic", "init", "-r", str(repos["restic"]), "--repository-version", "2"], env)
    run(["borg", "init", "-e", "none", str(repos["borg"])], env)
    for step in range(BACKUPS):
        if step:
            churn(src, step)
        run([*BTFS, "-q", "backup"], env)
        run(["restic", "-r", str(repos["restic"]), "backup", "-q", str(src)], env)
        run(["borg", "create", f"{repos['borg']}::b{step:02}", str(src)], env)
        print(f"backup {step + 1}/{BACKUPS} done", flush=True)
    before = {tool: du(path) for tool, path in repos.items()}
    before["btfs catalog"] = du(work / "btfs-data")
    rows = {}
    secs_f, rss_f, _ = run([*BTFS, "forget", "--keep-last", "10"], env, rss=True)
    secs_p, rss_p, out = run([*BTFS, "prune", "--json"], env, rss=True)
    report = json.loads(out)
    rows["btfs forget + prune"] = (secs_f + secs_p, max(rss_f, rss_p))
    secs, rss, _ = run(["restic", "-r", str(repos["restic"]), "forget", "--keep-last", "10",
                        "--prune"], env, rss=True)
    rows["restic forget --prune"] = (secs, rss)
    secs_b, rss_b, _ = run(["borg", "prune", "--keep-last", "10", str(repos["borg"])], env,
                           rss=True)
    secs_c, rss_c, _ = run(["borg", "compact", str(repos["borg"])], env, rss=True)
    rows["borg prune + compact"] = (secs_b + secs_c, max(rss_b, rss_c))
    after = {tool: du(path) for tool, path in repos.items()}
    after["btfs catalog"] = du(work / "btfs-data")
    print(f"\n{FILES} files, {BACKUPS} backups, {CHURN:.0%} churn; forget 10, keep 10\n")
    print("| step | seconds | peak RSS MB |\n|---|---|---|")
    for name, (secs, rss) in rows.items():
        print(f"| {name} | {secs:.2f} | {rss:.0f} |")
    print(f"| btfs forget alone | {secs_f:.2f} | {rss_f:.0f} |")
    print(f"| btfs prune alone | {secs_p:.2f} | {rss_p:.0f} |")
    print(f"\nbtfs prune planning: {report['planning_seconds']:.3f} s; "
          f"{report['dead_packs']} packs deleted, {report['repacked']} repacked, "
          f"{report['freed_bytes'] / 1e6:.1f} MB freed, catalog vacuumed: {report['vacuumed']}")
    print("\n| repository | before MB | after MB |\n|---|---|---|")
    for tool in before:
        print(f"| {tool} | {before[tool] / 1e6:.1f} | {after[tool] / 1e6:.1f} |")


if __name__ == "__main__":
    main()
