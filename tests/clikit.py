"""The `btfs` command as a user runs it, for CLI tests: a real subprocess in the test's
own environment (see the `env` fixture in conftest.py), and the one-line error rule."""

from __future__ import annotations

import subprocess
import sys


def btfs(env, *args, check=None, stdin=subprocess.DEVNULL, cwd=None
         ) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "btfs", *args], env=env, capture_output=True,
                          text=True, stdin=stdin, timeout=120, cwd=cwd)
    if check is not None:
        assert proc.returncode == check, (proc.returncode, proc.stdout, proc.stderr)
    return proc


def one_error_line(proc) -> str:
    """The single line a failing command printed on stderr (and never a traceback)."""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]
