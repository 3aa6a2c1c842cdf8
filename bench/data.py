"""The benchmark data: built once under bench/data/, reproducibly, and the change step."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .common import DATA, MiB, log

LINUX_TARBALL = Path("/usr/src/linux-source-6.1.tar.xz")
LINUX_TREE = DATA / "linux-source-6.1"
CHANGE_SEED = 61
RANDOM_SEEDS = {"random-0": 1000, "random-1": 1001}


@dataclass(frozen=True)
class Mode:
    name: str
    reps: int
    src_files: int | None  # None: the whole tree
    large: tuple[str, ...]  # names; random-N are seeded random, tar-N tar slices
    large_size: int
    timeout: float  # per command


MODES = {
    "full": Mode("full", 3, None, ("random-0", "random-1", "tar-0", "tar-1"), 512 * MiB,
                 3 * 3600),
    "quick": Mode("quick", 1, 5000, ("random-0",), 128 * MiB, 900),
}


def ensure_linux_tree() -> Path:
    """Unpack the Debian kernel source once (xz, ~1 min)."""
    done = DATA / ".linux-source-6.1.done"
    if done.exists():
        return LINUX_TREE
    if not LINUX_TARBALL.exists():
        sys.exit(f"{LINUX_TARBALL} missing: apt-get install -y linux-source-6.1")
    log(f"unpacking {LINUX_TARBALL} into {DATA} (once)")
    tmp = DATA / ".unpack"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    subprocess.run(["tar", "-xf", str(LINUX_TARBALL), "-C", str(tmp)], check=True)
    shutil.rmtree(LINUX_TREE, ignore_errors=True)
    (tmp / "linux-source-6.1").rename(LINUX_TREE)
    tmp.rmdir()
    done.touch()
    return LINUX_TREE


def sorted_files(top: Path) -> list[Path]:
    """Regular files under `top`, in a stable order (sorted relative paths)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames.sort()
        for f in sorted(filenames):
            p = Path(dirpath) / f
            if p.is_file() and not p.is_symlink():
                out.append(p)
    return out


def ensure_src(mode: Mode) -> Path:
    tree = ensure_linux_tree()
    if mode.src_files is None:
        return tree
    dest = DATA / f"linux-slice-{mode.src_files}"
    done = DATA / f".linux-slice-{mode.src_files}.done"
    if done.exists():
        return dest
    log(f"building {dest.name}: {mode.src_files} files picked evenly from the tree")
    shutil.rmtree(dest, ignore_errors=True)
    files = sorted_files(tree)
    n = min(mode.src_files, len(files))
    for i in range(n):
        f = files[i * len(files) // n]
        target = dest / f.relative_to(tree)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, target)
    done.touch()
    return dest


def write_random(path: Path, size: int, seed: int) -> None:
    rng = random.Random(seed)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 16 * MiB)
            f.write(rng.randbytes(n))
            left -= n


def write_tar_slices(paths: list[Path], size: int) -> None:
    """Consecutive `size`-byte slices of a reproducible tar of the source tree."""
    cmd = ["tar", "--sort=name", "--mtime=@0", "--owner=0", "--group=0", "--numeric-owner",
           "--format=gnu", "-cf", "-", "-C", str(DATA), LINUX_TREE.name]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE)
    try:
        for p in paths:
            with open(p, "wb") as f:
                left = size
                while left:
                    chunk = proc.stdout.read(min(left, 4 * MiB))
                    if not chunk:
                        raise RuntimeError("the source tree's tar is too short")
                    f.write(chunk)
                    left -= len(chunk)
    finally:
        proc.stdout.close()
        proc.kill()
        proc.wait()


def ensure_large(mode: Mode) -> Path:
    dest = DATA / f"large-{mode.large_size // MiB}M-{len(mode.large)}"
    done = DATA / f".{dest.name}.done"  # outside: everything in dest gets backed up
    if done.exists():
        return dest
    ensure_linux_tree()
    log(f"building large files in {dest.name}")
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    for name in mode.large:
        if name.startswith("random"):
            write_random(dest / name, mode.large_size, RANDOM_SEEDS[name])
    tars = sorted(n for n in mode.large if n.startswith("tar"))
    if tars:
        write_tar_slices([dest / n for n in tars], mode.large_size)
    done.touch()
    return dest


def describe_tree(top: Path) -> dict:
    files = 0
    size = 0
    dirs = 0
    for dirpath, dirnames, filenames in os.walk(top):
        dirs += len(dirnames)
        for f in filenames:
            st = os.lstat(os.path.join(dirpath, f))
            files += 1
            size += st.st_size
    return {"files": files, "dirs": dirs, "bytes": size}


def apply_change(src: Path, large: Path, large_names: tuple[str, ...]) -> dict:
    """The seeded change step: append to 1% of the source files, delete 100 others, add 100
    new ones, overwrite 1 MiB in the middle of the first large file."""
    rng = random.Random(CHANGE_SEED)
    files = sorted_files(src)
    n_append = max(1, len(files) // 100)
    picked = rng.sample(files, n_append + 100)
    appended, deleted = picked[:n_append], picked[n_append:]
    for i, f in enumerate(appended):
        with open(f, "ab") as fh:
            fh.write(f"\n/* btfs bench change {i} */\n".encode())
    for f in deleted:
        f.unlink()
    gone = set(deleted)
    dirs = sorted({f.parent for f in files if f not in gone})
    for i in range(100):
        d = rng.choice(dirs)
        body = rng.randbytes(rng.randint(1024, 16384)).hex().encode()
        (d / f"bench-added-{i:03d}.txt").write_bytes(body)
    big = large / large_names[0]
    size = big.stat().st_size
    with open(big, "r+b") as fh:
        fh.seek(size // 2)
        fh.write(rng.randbytes(MiB))
    return {"appended": n_append, "deleted": 100, "added": 100,
            "overwritten": f"1 MiB at offset {size // 2} of {big.name}"}


# Versions per file in the by-file shape: a second one for every CHANGED_EVERY-th file,
# as the change step appends to 1% of the files.
CHANGED_EVERY = 100


def by_file_shape(src: Path, dest: Path) -> dict:
    """Build under `dest` a tree shaped like by-file/ of `src`: its directories mirrored,
    and for every other entry (file, symlink) a directory of that name holding one small
    file per version (two for every CHANGED_EVERY-th), named as btfs names versions. Only
    the shape matters: the floor server is timed listing it."""
    shutil.rmtree(dest, ignore_errors=True)
    counts = {"dirs": 0, "files": 0, "versions": 0}
    for dirpath, dirnames, filenames in os.walk(src):
        out = dest / os.path.relpath(dirpath, src)
        out.mkdir(parents=True, exist_ok=True)
        counts["dirs"] += 1
        links = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
        for name in sorted(filenames + links):
            versions = out / name
            versions.mkdir()
            n = 2 if counts["files"] % CHANGED_EVERY == 0 else 1
            for v in range(n):
                stem, dot, ext = name.partition(".")
                (versions / f"{stem}.2026-12-0{v + 1}_120000{dot}{ext}").write_bytes(b"v\n")
            counts["files"] += 1
            counts["versions"] += n
    return counts
