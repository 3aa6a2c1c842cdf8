"""Who may use the status page: the token and the Host check, as one ASGI middleware that
every request passes before the app sees it.

The token is 32 random bytes (hex) in a 0600 file beside config.toml, made once and kept:
`btfs web-url` prints the page's address with it. Requests carry it in the X-Btfs-Token
header; a GET may carry it as `?token=` instead (the page's own address, and download
links, which a browser follows without custom headers). Actions are POSTs, which need the
header: a form or link on another site cannot set one, and no cookie is ever set, so
there is nothing for cross-site request forgery to ride on. No CORS headers are sent, so
other origins cannot read answers either.

The Host header must name the address listened on (or `localhost` for loopback): a page
from a DNS-rebound name reaches 127.0.0.1 with its own name in Host, and is refused before
the token is looked at. With a wildcard listener (--allow-remote on 0.0.0.0), Host must be
an IP literal or this machine's name: literals cannot be rebound.

Never: do anything for a request that fails either check (401 for the token, 403 for
Host), or compare tokens in a way whose time depends on the guess.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import secrets
import socket
from pathlib import Path
from urllib.parse import parse_qs

from ..config import Paths
from ..errors import BtfsError
from .settings import WebSettings

log = logging.getLogger(__name__)

HEADER = "x-btfs-token"
STATIC_PREFIX = "/static/"  # the page's JS and CSS: code, no data; open to fetch


def token_file(paths: Paths) -> Path:
    return paths.config_file.parent / "web-token"


def load_token(paths: Paths, *, create: bool = False) -> str:
    """The page's token; made (0600, never readable by others, not even for a moment)
    when `create` and there is none."""
    path = token_file(paths)
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        if not create:
            raise BtfsError(f"no token for the status page yet ({path}): start "
                            "'btfs watch --web' first") from None
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    token = secrets.token_hex(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it meanwhile
        return path.read_text().strip()
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


def allowed_hosts(settings: WebSettings) -> frozenset[str] | None:
    """The Host values accepted (lower case), or None for "an IP literal or this
    machine's name with the port" (a wildcard listener)."""
    if settings.wildcard:
        return None
    port = settings.port
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    hosts = {f"{host}:{port}"}
    if settings.loopback:
        hosts.add(f"localhost:{port}")
    return frozenset(hosts)


def host_ok(host: str, settings: WebSettings, allowed: frozenset[str] | None) -> bool:
    host = host.lower()
    if allowed is not None:
        return host in allowed
    name, sep, port = host.rpartition(":")
    if not sep or port != str(settings.port):
        return False
    try:
        ipaddress.ip_address(name.strip("[]"))
        return True
    except ValueError:
        return name in {socket.gethostname().lower(), socket.getfqdn().lower(), "localhost"}


class Guard:
    """ASGI middleware: the Host check, then the token, then `app`."""

    def __init__(self, app, settings: WebSettings, token: str):
        self.app = app
        self.settle(settings)
        self.token = token.encode()

    def settle(self, settings: WebSettings) -> None:
        """Check Host against `settings` (the port known once bound)."""
        self.settings = settings
        self.allowed = allowed_hosts(settings)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)  # lifespan
            return
        headers = dict(scope["headers"])
        host = headers.get(b"host", b"").decode("latin-1")
        if not host_ok(host, self.settings, self.allowed):
            log.info("status page: refused a request for Host %r", host[:100])
            await _plain(send, 403, "wrong Host header\n")
            return
        if not scope["path"].startswith(STATIC_PREFIX) and not self._token_ok(scope, headers):
            await _plain(send, 401, "missing or wrong token: open the page with the "
                                    "address 'btfs web-url' prints\n")
            return
        await self.app(scope, receive, _hardened(send))

    def _token_ok(self, scope, headers: dict) -> bool:
        given = headers.get(HEADER.encode())
        if given is None and scope["method"] in ("GET", "HEAD"):
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            given = query.get("token", [""])[0].encode("latin-1")
        return given is not None and hmac.compare_digest(given, self.token)


# No referrer (the page's address holds the token), no framing, no sniffing, nothing
# cached, nothing loaded from anywhere but this server.
_HEADERS = [(b"referrer-policy", b"no-referrer"), (b"x-frame-options", b"DENY"),
            (b"x-content-type-options", b"nosniff"), (b"cache-control", b"no-store"),
            (b"content-security-policy",
             b"default-src 'self'; img-src 'self' data:; frame-ancestors 'none'")]


def _hardened(send):
    async def send_hardened(message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), *_HEADERS]}
        await send(message)
    return send_hardened


async def _plain(send, status: int, text: str) -> None:
    body = text.encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
