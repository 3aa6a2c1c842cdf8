"""The README's Quick start, run as written in a scratch HOME (issue 22's "done when").

The first ```sh block after `## Quick start` in README.md runs in bash, line by line as a
user would type it, with the venv's `btfs` first on PATH and no XDG variables, so the
catalog and cache land in ~/.local/share and ~/.cache as on a real machine. `~` is
tracked and the vault and the mount lie inside it. Installation lines (`make`, and
`systemctl`, which needs a user session) are covered elsewhere and dropped.

Then: later backups with nothing changed add no packs and no entries from the vault,
catalog, cache or mount; the mount works; the file `cp` restored is byte-identical.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fusekit import force_unmount
from helpers import rand_bytes, recorded

from btfs.catalog import DIR, Catalog
from btfs.config import xdg_paths

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="needs /dev/fuse")

README = Path(__file__).resolve().parents[2] / "README.md"
DROPPED = ("make ", "systemctl ")  # installation: tested on their own


def quick_start_lines() -> list[str]:
    """The first ```sh block after the line `## Quick start`, without DROPPED lines."""
    lines = README.read_text().splitlines()
    start = lines.index("## Quick start")
    opening = next(i for i in range(start + 1, len(lines)) if lines[i].strip() == "```sh")
    closing = next(i for i in range(opening + 1, len(lines)) if lines[i].strip() == "```")
    return [line for line in lines[opening + 1:closing] if not line.startswith(DROPPED)]


def pack_count(vault: Path) -> int:
    return sum(1 for p in (vault / "packs").rglob("*") if p.is_file())


def test_the_readme_quick_start_works_as_written(isolated_env, tmp_path, monkeypatch):
    home = isolated_env
    for var in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME", "BTFS_CONFIG"):
        monkeypatch.delenv(var)
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    (home / ".bashrc").write_text("alias ll='ls -l'\nexport EDITOR=vi\n")
    (home / "notes").mkdir()
    (home / "notes" / "plan.md").write_text("the plan\n")
    (home / "photos").mkdir()
    (home / "photos" / "cat.jpg").write_bytes(rand_bytes(3_000_000, 5))

    lines = quick_start_lines()
    assert any(line.startswith("btfs mount ~/backups") for line in lines), lines
    restored = tmp_path / "bashrc-then"
    script = "\n".join(line.replace("/tmp/bashrc-then", str(restored)) for line in lines)
    mnt = home / "backups"
    try:
        proc = subprocess.run(["bash", "-e", "-c", script], capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, cwd=home, timeout=300)
        assert proc.returncode == 0, (script, proc.stdout, proc.stderr)
        assert "Traceback" not in proc.stderr and "WARNING" not in proc.stderr, proc.stderr

        paths = xdg_paths()
        vault = home / "btfs-vault"
        for own in (paths.data_dir, paths.cache_dir, vault, mnt):
            assert str(own).startswith(str(home) + "/"), own  # all inside what is tracked
        # The mount works and `cp` restored the very bytes.
        assert restored.read_bytes() == (home / ".bashrc").read_bytes()
        latest = mnt / "by-time" / "latest" / str(home).lstrip("/")
        assert "notes" in proc.stdout.split() and "photos" in proc.stdout.split()
        assert (latest / "photos" / "cat.jpg").read_bytes() == (
            home / "photos" / "cat.jpg").read_bytes()

        packs = pack_count(vault)
        assert packs > 0
        runs = [json.loads(subprocess.run(["btfs", "backup", "--json"], check=True,
                                          capture_output=True, text=True).stdout)
                for _ in range(2)]
        for run in runs:
            assert run["state"] == "complete" and not run["warnings"], run
            assert (run["files_new"], run["bytes_added"]) == (0, 0), run
            assert pack_count(vault) == packs
        # The mountpoint's creation changed ~ itself (a directory version, no data) once;
        # nothing below it changed.
        assert runs[1]["files_changed"] == 0, runs[1]
        with Catalog(paths.catalog, readonly=True) as catalog:
            assert recorded(catalog, runs[0]["snapshot_id"], home) in (
                {}, {os.fsencode(home): DIR})
            assert recorded(catalog, runs[1]["snapshot_id"], home) == {}
            everything = {}
            for snap in catalog.history.snapshots():
                everything.update(recorded(catalog, snap.id, home))
        assert os.fsencode(home / ".bashrc") in everything
        for own in (vault, paths.data_dir, paths.cache_dir, mnt):
            prefix = os.fsencode(own)
            inside = [p for p in everything if p == prefix or p.startswith(prefix + b"/")]
            assert not inside, (own, inside[:5])
    finally:
        force_unmount(str(mnt))
