"""The `[watch]` table of config.toml as a frozen dataclass; validated here, carried
unparsed by btfs.config (Config.watch) so that module need not know the daemon."""

from __future__ import annotations

from dataclasses import dataclass, fields

from ..errors import ConfigError

# Editors' and browsers' temporary files: a change to one alone starts no backup.
DEFAULT_SKIP = ("*~", ".*.sw?", "*.part", "*.crdownload", ".~lock.*")


@dataclass(frozen=True)
class WatchSettings:
    settle: float = 10.0  # s without change before a changed path is backed up
    settle_max: float = 60.0  # s of continuous change after which it is backed up anyway
    min_interval: float = 60.0  # s between the starts of two backups
    scan_interval: float = 7200.0  # s between full scans
    skip: tuple[str, ...] = DEFAULT_SKIP  # file names whose events are ignored (fnmatch)


def watch_settings_from_dict(doc: dict | None, where: str = "config") -> WatchSettings:
    """Settings from a parsed `[watch]` table; one ConfigError line naming a bad key."""
    doc = doc or {}
    known = {f.name for f in fields(WatchSettings)}
    unknown = set(doc) - known
    if unknown:
        raise ConfigError(f"{where}: unknown key '{sorted(unknown)[0]}' in [watch] "
                          f"(known: {', '.join(sorted(known))})")
    kwargs: dict = {}
    for key in known - {"skip"}:
        if key in doc:
            value = doc[key]
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ConfigError(f"{where}: [watch] '{key}' must be a positive number of "
                                  f"seconds, not {value!r}")
            kwargs[key] = float(value)
    if "skip" in doc:
        skip = doc["skip"]
        if not isinstance(skip, list) or not all(isinstance(p, str) for p in skip):
            raise ConfigError(f"{where}: [watch] 'skip' must be a list of patterns")
        kwargs["skip"] = tuple(skip)
    settings = WatchSettings(**kwargs)
    if settings.settle_max < settings.settle:
        raise ConfigError(f"{where}: [watch] settle_max must not be less than settle")
    return settings
