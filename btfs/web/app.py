"""The status page's URLs: the page, its JSON API, and downloads (a Starlette app).

The daemon is controlled through the same methods its control socket calls
(Daemon.handle and Daemon.status); the history is read through WebHistory, on worker
threads. Every answer is JSON except the page and downloads. access.Guard runs before
any of this: a handler here can assume the caller holds the token.

API (all under /api, GET unless said):
  status                   the daemon's state and figures, the vault's, the last failures
  pause, resume, backup-now, stop   POST: what `btfs daemon ...` does
  backups                  the newest backups, newest first
  search?q=NAME|GLOB       paths in the whole history, each with its versions
  versions?path=/ABS/PATH  every version of one path
  tree?backup=ID&path=/DIR a directory as of a backup (path optional: /)
  download?version=ID      a file version's bytes (attachment)
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Protocol
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..errors import BtfsError
from .history import NotFound, WebHistory

log = logging.getLogger(__name__)

STATIC = resources.files("btfs.web") / "static"
FAILURE_LINES = 20  # of the daemon's log, shown under the backups
LOG_TAIL_BYTES = 64 << 10  # read from the log's end: the log grows without bound


class Controlled(Protocol):
    """What the page needs of the daemon (btfs.watch.daemon.Daemon)."""

    async def handle(self, command: str) -> dict: ...

    def status(self) -> dict: ...


def make_app(daemon: Controlled, history: WebHistory, log_path: os.PathLike | None,
             extra_status: Callable[[], dict] = dict) -> Starlette:
    """The app; `extra_status` adds figures only the daemon's owner knows (next backup)."""

    async def page(request: Request) -> Response:
        return FileResponse(os.fspath(STATIC / "index.html"), media_type="text/html")

    async def status(request: Request) -> Response:
        s = daemon.status()
        s.update(extra_status())
        last = s.get("last_backup")
        s["upload_rate"] = (round(last["bytes_added"] / last["seconds"])
                            if last and last.get("seconds") else None)
        s["vault"] = await history.run(history.figures)
        s["failures"] = await history.run(lambda _repo: failure_lines(log_path))
        s["now"] = time.time()
        return JSONResponse(s)

    def action(command: str) -> Callable[[Request], Awaitable[Response]]:
        async def act(request: Request) -> Response:
            if command == "stop":
                # After the answer is sent: stopping cancels this server too.
                return JSONResponse({"ok": True, "state": "stopping"},
                                    background=BackgroundTask(daemon.handle, "stop"))
            return JSONResponse(await daemon.handle(command))
        return act

    async def backups(request: Request) -> Response:
        return JSONResponse(await history.run(history.backups))

    async def search(request: Request) -> Response:
        return JSONResponse(await history.run(history.search, _arg(request, "q")))

    async def versions(request: Request) -> Response:
        return JSONResponse(await history.run(history.versions, _arg(request, "path")))

    async def tree(request: Request) -> Response:
        backup = _int(request, "backup")
        path = request.query_params.get("path") or "/"
        return JSONResponse(await history.run(history.tree, backup, path))

    async def download(request: Request) -> Response:
        name, size, refs = await history.run(history.open_download, _int(request, "version"))
        headers = {"content-length": str(size),
                   "content-disposition": f"attachment; filename*=UTF-8''{quote(name)}"}
        return StreamingResponse(history.stream(refs), media_type="application/octet-stream",
                                 headers=headers)

    routes = [Route("/", page), Route("/api/status", status),
              Route("/api/backups", backups), Route("/api/search", search),
              Route("/api/versions", versions), Route("/api/tree", tree),
              Route("/api/download", download),
              Mount("/static", StaticFiles(directory=os.fspath(STATIC)), name="static")]
    routes += [Route(f"/api/{c}", action(c), methods=["POST"])
               for c in ("pause", "resume", "backup-now", "stop")]
    handlers = {NotFound: _error(404), BtfsError: _error(400), ValueError: _error(400)}
    return Starlette(routes=routes, exception_handlers=handlers)


def failure_lines(log_path: os.PathLike | None) -> list[str]:
    """The last warning and error lines of the daemon's log (from its last 64 KiB)."""
    if log_path is None:
        return []
    try:
        with open(log_path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - LOG_TAIL_BYTES))
            tail = f.read().decode("utf-8", "replace").splitlines()
    except FileNotFoundError:
        return []
    return [line for line in tail if " WARNING " in line or " ERROR " in line][-FAILURE_LINES:]


def _arg(request: Request, name: str) -> str:
    value = request.query_params.get(name)
    if not value:
        raise ValueError(f"'{name}' is missing")
    return value


def _int(request: Request, name: str) -> int:
    text = _arg(request, name)
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"'{name}' must be a number, not {text[:50]!r}") from None


def _error(status: int):
    async def answer(request: Request, exc: Exception) -> Response:
        return JSONResponse({"error": str(exc)}, status_code=status)
    return answer
