"""Configuration: XDG paths and ``config.toml`` as a frozen dataclass.

Reading never writes; `save` writes atomically with mode 0600. The file is the user's:
`save` writes only keys that differ from the defaults plus the ones init must record
(host id, vault), so a later change of a default reaches users who never set it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from .engine.retention import Policy, parse_duration, policy_from_dict
from .errors import ConfigError, NotInitialized, UsageError

DEFAULT_PRUNE_GRACE = 24 * 3600

DEFAULT_EXCLUDES = ("__pycache__/", "*.pyc", "*.tmp", "*.swp", ".cache/")
MiB = 1 << 20


@dataclass(frozen=True)
class TrackedDir:
    """A directory the user asked to back up, with its own exclude/include patterns."""

    path: str
    excludes: tuple[str, ...] = ()
    includes: tuple[str, ...] = ()  # when set, only files matching one of these are stored


@dataclass(frozen=True)
class Paths:
    """Where btfs keeps its files for one configuration."""

    config_file: Path
    data_dir: Path  # the catalog and the writer lock
    cache_dir: Path  # mount logs, anything that can be rebuilt

    @property
    def catalog(self) -> Path:
        return self.data_dir / "catalog.db"

    @property
    def lock(self) -> Path:
        return self.data_dir / "writer.lock"

    def ensure(self) -> None:
        for d in (self.config_file.parent, self.data_dir, self.cache_dir):
            d.mkdir(mode=0o700, parents=True, exist_ok=True)


@dataclass(frozen=True)
class S3Settings:
    """The `[s3]` table: how to reach an S3 vault. Never credentials: those come from
    boto3's own chain (environment, ~/.aws/credentials, a profile, an instance role)."""

    endpoint: str = ""  # URL of an S3-compatible service (MinIO, B2, R2...); "" for AWS
    region: str = ""  # "" lets boto3 decide (profile, AWS_REGION, us-east-1)
    profile: str = ""  # a profile in ~/.aws/config and ~/.aws/credentials; "" for default
    uploads: int = 8  # packs uploaded at once
    retry_seconds: int = 900  # how long one request keeps retrying temporary failures
    read_cache: int = 1 << 30  # bytes of vault reads kept on local disk
    limit_upload: int = 0  # bytes per second for the whole process; 0 means no limit
    timeout: int = 60  # seconds a request waits for the server (to connect, or for more of
    # its answer) before it counts as failed and is retried


@dataclass(frozen=True)
class Mirror:
    """A `[[mirror]]` table: a second (third...) vault that `btfs sync` copies every pack
    and every catalog copy into (btfs.engine.sync). Its endpoint, region and profile are
    its own, never taken from `[s3]`, which describes the main vault (a mirror is often
    another service than the main vault); `[s3]`'s other keys (uploads, retry_seconds,
    timeout, read_cache, limit_upload) apply to mirrors too."""

    name: str  # what `btfs sync NAME` and `btfs check --mirror NAME` call it
    url: str  # a local path or s3://bucket/prefix, never the main vault's
    endpoint: str = ""
    region: str = ""
    profile: str = ""
    sync_after_backup: bool = True  # `btfs sync NAME` after each backup (a failure warns)

    def s3_settings(self, base: S3Settings) -> S3Settings:
        """How this mirror is reached: `base` ([s3]) with its own endpoint, region and
        profile."""
        return dataclasses.replace(base, endpoint=self.endpoint, region=self.region,
                                   profile=self.profile)


MIRROR_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class Config:
    host_id: str
    vault: str  # a local path, or s3://bucket/prefix (settings in `s3`)
    tracked: tuple[TrackedDir, ...] = ()
    excludes: tuple[str, ...] = DEFAULT_EXCLUDES  # applied in every tracked directory
    exclude_caches: bool = True  # skip directories holding a valid CACHEDIR.TAG
    one_file_system: bool = False  # do not cross into other mounted filesystems
    max_file_size: int = 0  # bytes; 0 means no limit
    chunk_min: int = 256 * 1024
    chunk_avg: int = 1 * MiB
    chunk_max: int = 4 * MiB
    compression_level: int = 3  # zstd level 1..22; 0 stores chunks uncompressed
    pack_size: int = 16 * MiB  # target size of a pack object in the vault
    threads: int = 0  # hashing/compression threads; 0 means one per core
    s3: S3Settings = S3Settings()
    # The [watch] table, carried as parsed; btfs.watch.settings validates it.
    watch: dict = dataclasses.field(default_factory=dict)
    # The [web] table (the status page), carried as parsed; btfs.web.settings validates it.
    web: dict = dataclasses.field(default_factory=dict)
    read_only: bool = False  # `btfs recover --read-only`: browse a host's copy, never write
    # Before a backup, learn the packs other hosts wrote into the vault (their indexes), so
    # content the vault holds already is not stored again (btfs.engine.packsync).
    dedup_across_hosts: bool = True
    retention: Policy | None = None  # the [retention] table: `btfs forget` with no flags
    # [retention] prune_grace, in seconds: how long a pack condemned by a prune in a vault
    # shared by several hosts stays at least (btfs.engine.prune_shared).
    prune_grace: int = DEFAULT_PRUNE_GRACE
    mirrors: tuple[Mirror, ...] = ()  # the [[mirror]] tables: other vaults `btfs sync` fills

    def mirror(self, name: str) -> Mirror | None:
        for m in self.mirrors:
            if m.name == name:
                return m
        return None

    def tracked_dir(self, path: str) -> TrackedDir | None:
        for t in self.tracked:
            if t.path == path:
                return t
        return None


def xdg_paths(config_override: str | os.PathLike | None = None) -> Paths:
    home = Path.home()

    def xdg(var: str, default: str) -> Path:
        value = os.environ.get(var)
        # The XDG spec says relative values are invalid and must be ignored.
        return Path(value) if value and os.path.isabs(value) else home / default

    config_file = config_override or os.environ.get("BTFS_CONFIG")
    if config_file:
        config_file = Path(config_file).expanduser().absolute()
    else:
        config_file = xdg("XDG_CONFIG_HOME", ".config") / "btfs" / "config.toml"
    return Paths(
        config_file=Path(config_file),
        data_dir=xdg("XDG_DATA_HOME", ".local/share") / "btfs",
        cache_dir=xdg("XDG_CACHE_HOME", ".cache") / "btfs",
    )


_INT_KEYS = ("max_file_size", "chunk_min", "chunk_avg", "chunk_max",
             "compression_level", "pack_size", "threads")
_BOOL_KEYS = ("exclude_caches", "one_file_system", "read_only", "dedup_across_hosts")


def load(paths: Paths) -> Config:
    try:
        raw = paths.config_file.read_bytes()
    except FileNotFoundError:
        raise NotInitialized(paths.config_file) from None
    except OSError as e:
        raise ConfigError(f"cannot read {paths.config_file}: {e.strerror}") from None
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{paths.config_file}: invalid TOML: {e}") from None
    return from_dict(doc, str(paths.config_file))


def from_dict(doc: dict, where: str = "config") -> Config:
    def want(key, kind, value):
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ConfigError(f"{where}: '{key}' must be {kind.__name__}, not {value!r}")
        return value

    known = {f.name for f in dataclasses.fields(Config)} - {"tracked", "mirrors"} | {
        "track", "mirror"}
    unknown = set(doc) - known
    if unknown:
        raise ConfigError(f"{where}: unknown key '{sorted(unknown)[0]}'")
    if "host_id" not in doc or "vault" not in doc:
        raise ConfigError(f"{where}: 'host_id' and 'vault' are required (run 'btfs init')")
    kwargs: dict = {"host_id": want("host_id", str, doc["host_id"]),
                    "vault": want("vault", str, doc["vault"])}
    for key in _INT_KEYS:
        if key in doc:
            kwargs[key] = want(key, int, doc[key])
    for key in _BOOL_KEYS:
        if key in doc:
            kwargs[key] = want(key, bool, doc[key])
    if "watch" in doc:
        kwargs["watch"] = dict(want("watch", dict, doc["watch"]))
    if "web" in doc:
        kwargs["web"] = dict(want("web", dict, doc["web"]))
    if "excludes" in doc:
        patterns = want("excludes", list, doc["excludes"])
        kwargs["excludes"] = tuple(want("excludes", str, p) for p in patterns)
    tracked = []
    track_keys = {f.name for f in dataclasses.fields(TrackedDir)}
    for entry in want("track", list, doc.get("track", [])):
        entry = want("track", dict, entry)
        unknown = set(entry) - track_keys
        if unknown:
            # A misspelt key ("exclude" for "excludes") would silently back up too much.
            raise ConfigError(f"{where}: unknown key '{sorted(unknown)[0]}' in a [[track]] "
                              f"table (known: {', '.join(sorted(track_keys))})")
        path = want("track.path", str, entry.get("path"))
        tracked.append(TrackedDir(
            path=path,
            excludes=tuple(want("track.excludes", str, p) for p in entry.get("excludes", [])),
            includes=tuple(want("track.includes", str, p) for p in entry.get("includes", [])),
        ))
    kwargs["tracked"] = tuple(tracked)
    if "s3" in doc:
        kwargs["s3"] = _s3_from_dict(want("s3", dict, doc["s3"]), want, where)
    if "retention" in doc:
        table = dict(want("retention", dict, doc["retention"]))
        if "prune_grace" in table:
            kwargs["prune_grace"] = prune_grace(table.pop("prune_grace"),
                                                f"{where} [retention]")
        if table:
            kwargs["retention"] = policy_from_dict(table, f"{where} [retention]")
    kwargs["mirrors"] = tuple(_mirror_from_dict(want("mirror", dict, entry), want, where)
                              for entry in want("mirror", list, doc.get("mirror", [])))
    config = Config(**kwargs)
    validate(config, where)
    return config


def prune_grace(value, where: str) -> int:
    """[retention] prune_grace in seconds: a whole number of seconds, or a duration such
    as '24h' or '2d' (y m w d h; a year counts 365 days, a month 30)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if not isinstance(value, str):
        raise ConfigError(f"{where}: prune_grace must be a duration such as '24h', "
                          f"not {value!r}")
    try:
        d = parse_duration(value)
    except UsageError as e:
        raise ConfigError(f"{where}: prune_grace: {e}") from None
    days = d.years * 365 + d.months * 30 + d.weeks * 7 + d.days
    return (days * 24 + d.hours) * 3600


def _s3_from_dict(table: dict, want, where: str) -> S3Settings:
    fields = {f.name: f for f in dataclasses.fields(S3Settings)}
    unknown = set(table) - set(fields)
    if unknown:
        raise ConfigError(f"{where}: unknown key 's3.{sorted(unknown)[0]}'")
    kinds = {"endpoint": str, "region": str, "profile": str}
    return S3Settings(**{key: want(f"s3.{key}", kinds.get(key, int), value)
                         for key, value in table.items()})


def _mirror_from_dict(table: dict, want, where: str) -> Mirror:
    fields = {f.name for f in dataclasses.fields(Mirror)}
    unknown = set(table) - fields
    if unknown:
        raise ConfigError(f"{where}: unknown key '{sorted(unknown)[0]}' in a [[mirror]] "
                          f"table (known: {', '.join(sorted(fields))})")
    if "name" not in table or "url" not in table:
        raise ConfigError(f"{where}: a [[mirror]] table needs 'name' and 'url'")
    return Mirror(**{key: want(f"mirror.{key}", bool if key == "sync_after_backup" else str,
                               value) for key, value in table.items()})


def validate(config: Config, where: str = "config") -> None:
    if not (64 * 1024 <= config.chunk_min <= config.chunk_avg <= config.chunk_max <= 16 * MiB):
        raise ConfigError(f"{where}: need 64 KiB <= chunk_min <= chunk_avg <= chunk_max <= 16 MiB")
    if not 0 <= config.compression_level <= 22:
        raise ConfigError(f"{where}: compression_level must be 0..22")
    if not MiB <= config.pack_size <= 1024 * MiB:
        raise ConfigError(f"{where}: pack_size must be between 1 MiB and 1 GiB")
    if config.max_file_size < 0 or config.threads < 0:
        raise ConfigError(f"{where}: max_file_size and threads must not be negative")
    s3 = config.s3
    if not 1 <= s3.uploads <= 64:
        raise ConfigError(f"{where}: s3.uploads must be 1..64")
    if s3.retry_seconds < 0 or s3.read_cache < 0 or s3.limit_upload < 0:
        raise ConfigError(f"{where}: s3.retry_seconds, s3.read_cache and s3.limit_upload "
                          "must not be negative")
    if not 1 <= s3.timeout <= 3600:
        raise ConfigError(f"{where}: s3.timeout must be 1..3600 seconds")
    if s3.endpoint and not s3.endpoint.startswith(("http://", "https://")):
        raise ConfigError(f"{where}: s3.endpoint must be an http:// or https:// URL")
    _validate_mirrors(config, where)


def _validate_mirrors(config: Config, where: str) -> None:
    """Names unique and well formed, URLs distinct and never the main vault's (compared
    as written: `btfs mirror add` stores them normalized, btfs.mirrors)."""
    names: set[str] = set()
    urls = {config.vault.rstrip("/")}
    for m in config.mirrors:
        if not MIRROR_NAME.match(m.name):
            raise ConfigError(f"{where}: mirror name {m.name!r}: use letters, digits, '.', "
                              "'_' and '-' (at most 64)")
        if m.name in names:
            raise ConfigError(f"{where}: two mirrors are named {m.name!r}")
        if m.url.rstrip("/") in urls:
            raise ConfigError(f"{where}: mirror {m.name!r}: {m.url} is the main vault or "
                              "another mirror")
        if m.endpoint and not m.endpoint.startswith(("http://", "https://")):
            raise ConfigError(f"{where}: mirror {m.name!r}: endpoint must be an http:// or "
                              "https:// URL")
        names.add(m.name)
        urls.add(m.url.rstrip("/"))


def to_dict(config: Config, *, full: bool = False) -> dict:
    """The TOML document for `config`; with `full`, every key including defaults."""
    defaults = Config(host_id="", vault="")
    doc: dict = {}
    for f in dataclasses.fields(Config):
        if f.name in ("tracked", "s3", "retention", "prune_grace", "mirrors"):
            continue
        value = getattr(config, f.name)
        if full or f.name in ("host_id", "vault") or value != getattr(defaults, f.name):
            doc[f.name] = list(value) if isinstance(value, tuple) else value
    doc["track"] = []
    for t in config.tracked:
        entry: dict = {"path": t.path}
        if t.excludes or full:
            entry["excludes"] = list(t.excludes)
        if t.includes or full:
            entry["includes"] = list(t.includes)
        doc["track"].append(entry)
    # A local vault's full listing leaves the [s3] table out: none of it applies.
    full_s3 = full and config.vault.startswith("s3:")
    s3 = {f.name: getattr(config.s3, f.name) for f in dataclasses.fields(S3Settings)
          if full_s3 or getattr(config.s3, f.name) != getattr(defaults.s3, f.name)}
    if s3:
        doc["s3"] = s3
    if config.retention is not None:
        doc["retention"] = _retention_to_dict(config.retention)
    if full or config.prune_grace != DEFAULT_PRUNE_GRACE:
        doc.setdefault("retention", {})["prune_grace"] = config.prune_grace
    if config.mirrors:
        doc["mirror"] = [_mirror_to_dict(m, full) for m in config.mirrors]
    return doc


def _mirror_to_dict(mirror: Mirror, full: bool) -> dict:
    default = Mirror("", "")
    return {f.name: getattr(mirror, f.name) for f in dataclasses.fields(Mirror)
            if full or f.name in ("name", "url")
            or getattr(mirror, f.name) != getattr(default, f.name)}


def _retention_to_dict(policy: Policy) -> dict:
    """The [retention] table of a policy: the keys that differ from an empty policy."""
    empty = Policy()
    table: dict = {}
    for f in dataclasses.fields(Policy):
        value = getattr(policy, f.name)
        if value != getattr(empty, f.name):
            table[f.name] = (str(value) if f.name == "keep_within"
                             else list(value) if isinstance(value, tuple) else value)
    return table


def dumps(doc: dict) -> str:
    """A minimal TOML writer for our schema: scalars, string lists, [[track]] and
    [[mirror]] tables and plain tables of scalars ([s3])."""
    lines = []
    tables = {k: v for k, v in doc.items() if isinstance(v, list) and v and isinstance(v[0], dict)}
    for key, value in doc.items():
        if key not in tables and key != "track" and not isinstance(value, dict):
            lines.append(f"{key} = {_toml_value(value)}")
    for key, value in doc.items():
        if isinstance(value, dict) and value:
            lines.append("")
            lines.append(f"[{key}]")
            for k, v in value.items():
                lines.append(f"{k} = {_toml_value(v)}")
    for key, entries in tables.items():
        for entry in entries:
            lines.append("")
            lines.append(f"[[{key}]]")
            for k, v in entry.items():
                lines.append(f"{k} = {_toml_value(v)}")
    return "\n".join(lines) + "\n"


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        # JSON string escaping is valid TOML basic-string escaping.
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def save(paths: Paths, config: Config) -> None:
    # Encode first: a value TOML cannot hold fails here, before anything is written.
    try:
        data = dumps(to_dict(config)).encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError("a path or pattern is not valid UTF-8; the TOML config cannot "
                          "hold it (rename it, or track a parent directory)") from None
    paths.ensure()
    tmp = paths.config_file.with_name(paths.config_file.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, paths.config_file)


def with_changes(config: Config, **changes) -> Config:
    return dataclasses.replace(config, **changes)


