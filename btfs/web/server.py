"""Running the status page: hypercorn's trio worker serving app.make_app behind
access.Guard, as a task in the daemon's nursery (started with `nursery.start`, it reports
the address it listens on, which tells a test its port).

Never: listen anywhere access.Guard and settings.web_settings did not agree to, or outlive
the daemon's nursery (its cancellation ends the server and closes the history's Repo).
"""

from __future__ import annotations

import logging
import os

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

from ..config import Paths
from .access import Guard, load_token
from .app import Controlled, make_app
from .history import WebHistory
from .settings import WebSettings

log = logging.getLogger(__name__)


async def serve(daemon: Controlled, paths: Paths, settings: WebSettings,
                log_path: os.PathLike | None = None, extra_status=dict, *,
                task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Serve until cancelled; started() with the page's URL (without the token)."""
    token = load_token(paths, create=True)
    history = WebHistory(paths)
    guard = Guard(make_app(daemon, history, log_path, extra_status), settings, token)
    config = HypercornConfig()
    config.bind = [settings.bind]
    config.accesslog = None
    config.errorlog = logging.getLogger("btfs.web.http")
    config.graceful_timeout = 1.0
    try:
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(hypercorn_serve, guard, config)
            port = int(binds[0].rsplit(":", 1)[1])
            if port != settings.port:  # port 0: the one the kernel gave
                guard.settle(WebSettings(settings.host, port, settings.allow_remote))
            url = guard.settings.url()
            log.info("status page on %s (open it with 'btfs web-url')", url)
            task_status.started(url)
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(history.close)
