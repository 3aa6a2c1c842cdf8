"""Talking to a running daemon: a unix socket in $XDG_RUNTIME_DIR and systemd's notify socket.

Protocol: one JSON object per line each way. The client sends {"command": NAME}; the
daemon answers {"ok": true, ...} or {"ok": false, "error": "..."} and closes. The socket
is created mode 0600 in a 0700 directory: only its user may pause or stop the daemon.

sd_notify is a datagram of "KEY=value" lines to $NOTIFY_SOCKET, written here by hand (it
is that small); nothing is sent when systemd did not ask for it.

The server side runs in trio; the client side is plain blocking code for the CLI.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path

import trio

from ..errors import BtfsError

log = logging.getLogger(__name__)

COMMANDS = ("status", "pause", "resume", "backup-now", "stop")
MAX_LINE = 64 * 1024


def socket_path() -> Path:
    """$XDG_RUNTIME_DIR/btfs/watch.sock (or a per-user directory in /tmp without one)."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    base = Path(runtime) if runtime and os.path.isabs(runtime) else \
        Path(f"/tmp/btfs-{os.getuid()}")
    return base / "btfs" / "watch.sock"


class NotRunning(BtfsError):
    def __init__(self, path: Path):
        super().__init__(f"no btfs watch is running (no answer on {path}); start it with "
                         "'btfs watch' or 'systemctl --user start btfs-watch'")


def request(command: str, *, timeout: float = 10.0) -> dict:
    """Send `command` to the running daemon; its answer. NotRunning when none listens."""
    path = socket_path()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(os.fspath(path))
        except (FileNotFoundError, ConnectionRefusedError):
            raise NotRunning(path) from None
        sock.sendall(json.dumps({"command": command}).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            part = sock.recv(65536)
            if not part:
                break
            data += part
    try:
        return json.loads(data)
    except ValueError:
        raise BtfsError(f"btfs watch gave no answer to {command!r}") from None


def running() -> bool:
    try:
        request("status", timeout=2.0)
        return True
    except (NotRunning, OSError, BtfsError):
        return False


Handler = Callable[[str], Awaitable[dict]]


async def serve(handler: Handler, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Listen on socket_path() until cancelled; each request answered by `handler`."""
    path = socket_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if running():
        raise BtfsError(f"a btfs watch is already running (socket {path})")
    try:
        path.unlink()  # a dead daemon's
    except FileNotFoundError:
        pass
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # Created without group/other bits from the start: no window where another user could
    # connect before a chmod.
    old = os.umask(0o177)
    try:
        await sock.bind(os.fspath(path))
    finally:
        os.umask(old)
    sock.listen(16)
    listener = trio.SocketListener(sock)
    try:
        async with trio.open_nursery() as nursery:
            task_status.started(path)
            while True:
                stream = await listener.accept()
                nursery.start_soon(_answer, stream, handler)
    finally:
        try:
            path.unlink()  # first: closing the listener is a checkpoint when cancelled
        except FileNotFoundError:
            pass
        await listener.aclose()


async def _answer(stream: trio.SocketStream, handler: Handler) -> None:
    async with stream:
        data = b""
        with trio.move_on_after(10):
            while b"\n" not in data and len(data) < MAX_LINE:
                part = await stream.receive_some(4096)
                if not part:
                    break
                data += part
        try:
            command = json.loads(data)["command"]
            if command not in COMMANDS:
                raise ValueError
        except (ValueError, KeyError, TypeError):
            answer = {"ok": False, "error": f"unknown request {data[:100]!r}"}
        else:
            answer = await handler(command)
        # Shielded: the answer to "stop" is sent while the daemon is being cancelled.
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            try:
                await stream.send_all(json.dumps(answer, default=str).encode() + b"\n")
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # the client went away


def sd_notify(*lines: str) -> None:
    """Tell systemd (Type=notify) e.g. "READY=1" or "STATUS=..."; a no-op outside it."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]  # an abstract socket
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto("\n".join(lines).encode(), address)
    except OSError as e:
        log.debug("sd_notify to %s failed: %s", address, e)
