"""Where the status page listens: `--web [ADDR:PORT]`, `--allow-remote` and the `[web]`
table of config.toml (listen, allow_remote), validated here; btfs.config carries the table
unparsed (Config.web).

Never: accept an address other hosts can reach unless allow_remote says so.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from ..config import Config
from ..errors import ConfigError, UsageError

DEFAULT_LISTEN = "127.0.0.1:8080"


@dataclass(frozen=True)
class WebSettings:
    host: str  # an IP address (v6 without brackets)
    port: int
    allow_remote: bool = False

    @property
    def loopback(self) -> bool:
        return ipaddress.ip_address(self.host).is_loopback

    @property
    def wildcard(self) -> bool:
        return ipaddress.ip_address(self.host).is_unspecified

    @property
    def bind(self) -> str:
        """As hypercorn takes it."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def url(self) -> str:
        """The page's address, without its token; a wildcard listener is reached on
        loopback."""
        host = self.host
        if self.wildcard:
            host = "::1" if ":" in host else "127.0.0.1"
        return f"http://[{host}]:{self.port}/" if ":" in host else f"http://{host}:{self.port}/"


def parse_listen(text: str, where: str) -> tuple[str, int]:
    """("ADDR", PORT) from "ADDR:PORT", "[V6]:PORT" or ":PORT"; UsageError naming `where`."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    try:
        if not sep:
            raise ValueError
        number = int(port)
        if not 0 <= number < 65536:  # 0: any free port (tests)
            raise ValueError
        ipaddress.ip_address(host)
    except ValueError:
        raise UsageError(f"{where}: {text!r} is not ADDR:PORT with an IP address and a port "
                         "(e.g. 127.0.0.1:8080)") from None
    return host, number


def web_settings(table: dict | None, listen: str | None = None, allow_remote: bool = False,
                 where: str = "config") -> WebSettings:
    """The settings from the [web] table, with --web's ADDR:PORT (`listen`) and
    --allow-remote over it."""
    table = dict(table or {})
    unknown = set(table) - {"listen", "allow_remote"}
    if unknown:
        raise ConfigError(f"{where}: unknown key '{sorted(unknown)[0]}' in [web] "
                          "(known: allow_remote, listen)")
    if not isinstance(table.get("listen", ""), str):
        raise ConfigError(f"{where}: [web] 'listen' must be a string like '127.0.0.1:8080'")
    if not isinstance(table.get("allow_remote", False), bool):
        raise ConfigError(f"{where}: [web] 'allow_remote' must be true or false")
    if listen:
        host, port = parse_listen(listen, "--web")
    else:
        host, port = parse_listen(table.get("listen") or DEFAULT_LISTEN, f"{where}: [web] listen")
    settings = WebSettings(host, port, allow_remote or table.get("allow_remote", False))
    if not settings.loopback and not settings.allow_remote:
        raise UsageError(f"the status page would listen on {host}, which other machines can "
                         "reach: give --allow-remote (or [web] allow_remote = true) if you "
                         "mean it")
    return settings


def from_config(config: Config, where: str, listen: str | None,
                allow_remote: bool) -> WebSettings | None:
    """`btfs watch`'s page settings: None when neither --web (`listen`, "" for the
    default) nor a [web] table asks for the page."""
    if listen is None and not config.web:
        if allow_remote:
            raise UsageError("--allow-remote is for the status page: give --web too")
        return None
    return web_settings(config.web, listen, allow_remote, where)
