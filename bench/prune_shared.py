"""The cost of prune in a vault shared by two hosts (btfs.engine.prune_shared, issue 26).

    python -m bench.prune_shared --files 20000 --work /tmp/btfs-prune-shared

Two hosts (separate HOMEs, real `btfs` processes) back up --files small files each into
one local vault, half of them the same on both. alpha then deletes the half only it had,
forgets its first backup and prunes. Timed: that prune on a copy of alpha and the vault
without beta (the immediate path of a vault of one host); the same prune with beta there
(mark: beta's catalog copy fetched, the held check, the condemned record); after a
backup of beta, the sweep that deletes; a prune with nothing to do (beta's copy cached).
Each time includes Python's start and btfs's imports. Never part of the tests.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path


def host_env(root: Path, name: str) -> dict:
    home = root / name
    (home / "home").mkdir(parents=True, exist_ok=True)
    return dict(os.environ, HOME=str(home / "home"), XDG_CONFIG_HOME=str(home / "config"),
                XDG_DATA_HOME=str(home / "data"), XDG_CACHE_HOME=str(home / "cache"),
                BTFS_CONFIG=str(home / "config" / "btfs" / "config.toml"))


def btfs(env: dict, *args: str) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "btfs", *args], env=env,
                          capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(proc.stderr)
    return time.perf_counter() - start, proc.stdout


def make_host(root: Path, name: str, vault: Path, files: int) -> dict:
    env = host_env(root, name)
    src = root / name / "home" / "data"
    for part, seed in (("shared", 1), ("own", hash(name))):
        (src / part).mkdir(parents=True)
        rng = random.Random(seed)
        for i in range(files // 2):
            (src / part / f"f{i}").write_bytes(rng.randbytes(2000))
    btfs(env, "init", "--vault", str(vault), "--no-input")
    btfs(env, "track", str(src))
    config = Path(env["BTFS_CONFIG"])
    config.write_text(config.read_text() + "\n[retention]\nprune_grace = 0\n")
    print(f"{name}: backup of {files} files {btfs(env, 'backup')[0]:.1f} s")
    return env


def alone(root: Path, alpha: dict, vault: Path) -> dict:
    """A copy of alpha and of the vault without beta: a vault of one host."""
    shutil.copytree(root / "alpha", root / "solo")
    shutil.copytree(vault, root / "vault-solo")
    own = Path(alpha["BTFS_CONFIG"]).read_text()
    for host in (root / "vault-solo" / "hosts").iterdir():
        if host.name not in own:
            shutil.rmtree(host)
    env = host_env(root, "solo")
    config = Path(env["BTFS_CONFIG"])
    config.write_text(config.read_text().replace(str(vault), str(root / "vault-solo")))
    return env


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=20000)
    ap.add_argument("--work", type=Path, default=Path("/tmp/btfs-prune-shared"))
    root = ap.parse_args().work
    files = ap.parse_args().files
    shutil.rmtree(root, ignore_errors=True)
    vault = root / "vault"
    alpha = make_host(root, "alpha", vault, files)
    beta = make_host(root, "beta", vault, files)
    shutil.rmtree(root / "alpha" / "home" / "data" / "own")
    btfs(alpha, "backup")
    btfs(alpha, "forget", "--keep-last", "1")
    steps = [("one host, immediate", alone(root, alpha, vault)),
             ("shared, mark (beta's copy fetched)", alpha), ("backup of beta", beta),
             ("shared, sweep (beta's new copy fetched)", alpha),
             ("shared, nothing to do (copy cached)", alpha)]
    for what, env in steps:
        seconds, out = btfs(env, "backup" if env is beta else "prune")
        print(f"{what}: {seconds:.2f} s\n  " + out.strip().replace("\n", "\n  "))


if __name__ == "__main__":
    main()
