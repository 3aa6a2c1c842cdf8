"""A real `btfs watch --web` on 127.0.0.1 over a repo with history, for the status page's
API and browser tests. The daemon is a subprocess on a free port, stopped at teardown
(SIGTERM, then SIGKILL if it hangs)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import backup, wait_for

from btfs.watch import control

BTFS = [sys.executable, "-m", "btfs"]


@dataclass
class WebDaemon:
    proc: subprocess.Popen
    url: str  # with ?token=
    base: str  # http://127.0.0.1:PORT
    token: str
    src: Path
    old: bytes  # notes.txt in the first backup
    new: bytes  # notes.txt in the second

    def status(self) -> dict:
        return control.request("status")


@pytest.fixture
def web_daemon(repo_factory, paths, tmp_path, monkeypatch):
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(run))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    src = tmp_path / "src"
    (src / "docs").mkdir(parents=True)
    old = os.urandom(3 << 20)  # several chunks: the download streams them
    new = b"the second version\n" * 1000
    (src / "docs" / "notes.txt").write_bytes(old)
    (src / "docs" / "plan.odt").write_bytes(b"plan")
    repo = repo_factory(src)
    backup(repo)
    (src / "docs" / "notes.txt").write_bytes(new)
    backup(repo)
    repo.close()
    with open(paths.config_file, "a") as f:
        f.write("\n[watch]\nsettle = 1\nmin_interval = 1\n")
    proc = subprocess.Popen([*BTFS, "watch", "--web", "127.0.0.1:0"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: proc.poll() is not None or
                 (control.running() and control.request("status").get("web")), 30,
                 "the status page")
        assert proc.poll() is None, proc.stderr.read()
        url = subprocess.run([*BTFS, "web-url"], capture_output=True, text=True,
                             check=True, timeout=30).stdout.strip()
        base, _, token = url.partition("/?token=")
        assert base.startswith("http://127.0.0.1:") and len(token) == 64
        wait_for(lambda: control.request("status")["state"] == "watching", 30, "the first scan")
        yield WebDaemon(proc, url, base, token, src, old, new)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
