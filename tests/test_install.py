"""`make install-user`: the launcher and the systemd user units agree, as installed.

The hourly timer never ran when the unit started `%h/.local/bin/btfs` and the documented
install left btfs only in the checkout's venv. These tests run the real target with HOME,
XDG_CONFIG_HOME, XDG_RUNTIME_DIR and PATH in a scratch directory (never the real home), on
the venv running the tests (make's stamp marked as current with `-o`, so nothing is
reinstalled), and check the result with `systemd-analyze verify`, which fails when
ExecStart's program does not exist.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VENV = Path(sys.prefix)
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
UNITS = ("btfs-backup.service", "btfs-backup.timer", "btfs-watch.service")

pytestmark = [
    pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed"),
    pytest.mark.skipif(not (VENV / "bin" / "btfs").exists(),
                       reason=f"tests are not running from a venv with btfs ({VENV})"),
]


@pytest.fixture
def scratch(tmp_path) -> dict[str, str]:
    """An environment whose home, config, runtime dir and PATH are all in tmp_path."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    env = {k: v for k, v in os.environ.items()
           if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "BINDIR", "UNITDIR",
                        "DBUS_SESSION_BUS_ADDRESS", "VIRTUAL_ENV")}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(tmp_path / "xdg-config"),
               XDG_RUNTIME_DIR=str(runtime), PATH=SYSTEM_PATH)
    return env


def install_user(env: dict[str, str]) -> subprocess.CompletedProcess:
    stamp = VENV / ".installed"
    return subprocess.run(
        ["make", "--no-print-directory", "-C", str(ROOT), f"VENV={VENV}", "-o", str(stamp),
         "install-user"], env=env, capture_output=True, text=True, timeout=120)


def verify(env: dict[str, str], unit_dir: Path) -> subprocess.CompletedProcess:
    # --user, as systemd will load them; it needs only an existing XDG_RUNTIME_DIR, not a
    # running user manager, so it works as root in a container.
    return subprocess.run(
        ["systemd-analyze", "--user", "verify", "--man=no",
         *(str(unit_dir / u) for u in UNITS)],
        env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze is missing (Debian package systemd; "
                           "`make install` installs it)")
def test_install_user_units_verify_and_launcher_runs(scratch):
    result = install_user(scratch)
    assert result.returncode == 0, result.stdout + result.stderr
    home = Path(scratch["HOME"])
    launcher = home / ".local" / "bin" / "btfs"
    unit_dir = Path(scratch["XDG_CONFIG_HOME"]) / "systemd" / "user"
    # No user manager is reachable from the scratch runtime dir: the command is printed.
    assert "systemctl --user daemon-reload" in result.stdout

    found = subprocess.run(["btfs", "--version"], capture_output=True, text=True,
                           env={**scratch, "PATH": f"{launcher.parent}:{SYSTEM_PATH}"})
    assert found.returncode == 0, found.stderr
    assert found.stdout.startswith("btfs, version ")

    service = (unit_dir / "btfs-backup.service").read_text()
    assert f"ExecStart={launcher} --quiet backup --wait\n" in service
    assert "SuccessExitStatus=3\n" in service
    assert "%h" not in service and "example.invalid" not in service
    docs = [line for line in service.splitlines() if line.startswith("Documentation=")]
    assert docs == [f"Documentation=file://{ROOT}/README.md"]
    watch = (unit_dir / "btfs-watch.service").read_text()
    assert f"ExecStart={launcher} watch\n" in watch and "Type=notify\n" in watch
    assert "Restart=on-failure\n" in watch and "%h" not in watch
    assert (unit_dir / "btfs-backup.timer").read_text() == \
        (ROOT / "contrib" / "systemd" / "btfs-backup.timer").read_text()

    checked = verify(scratch, unit_dir)
    assert checked.returncode == 0, checked.stdout + checked.stderr

    # The check has teeth: without the launcher (the old install) the same units fail.
    launcher.unlink()
    checked = verify(scratch, unit_dir)
    assert checked.returncode != 0
    assert f"{launcher} is not executable" in checked.stderr


def test_install_user_again_replaces_its_launcher_but_no_other_file(scratch):
    assert install_user(scratch).returncode == 0
    again = install_user(scratch)
    assert again.returncode == 0, again.stdout + again.stderr

    launcher = Path(scratch["HOME"]) / ".local" / "bin" / "btfs"
    launcher.write_text("#!/bin/sh\necho someone else's btfs\n")
    refused = install_user(scratch)
    assert refused.returncode != 0
    assert "is not a btfs launcher" in refused.stderr
    assert launcher.read_text() == "#!/bin/sh\necho someone else's btfs\n"
