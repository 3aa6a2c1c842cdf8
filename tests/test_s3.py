"""The S3 vault against a real HTTP server (moto on 127.0.0.1), and the pieces it is built
from that need no network: the retry policy, the upload limits, the read cache, the [s3]
config table."""

from __future__ import annotations

import base64
import hashlib
import os
import time
import tomllib
from pathlib import Path

import botocore.exceptions as bex
import click
import pytest
from helpers import MiB, backup, rand_bytes
from s3kit import free_port, set_credentials

from btfs import config as config_mod
from btfs.catalog.model import ChunkRef
from btfs.cli.backup import Rate
from btfs.config import Config, S3Settings
from btfs.engine.reader import ChunkSource
from btfs.errors import BtfsError, ConfigError, VaultError
from btfs.repo import Repo, init_repo, track_dirs
from btfs.vault import normalize_url, open_vault
from btfs.vault.cache import RangeCache
from btfs.vault.retry import RetryPolicy
from btfs.vault.s3 import S3Vault, is_transient
from btfs.vault.throttle import AdaptiveLimit, TokenBucket


@pytest.fixture
def vault(s3, tmp_path) -> S3Vault:
    v = open_vault(s3.url("pre"), s3.settings(), tmp_path / "cache")
    v.create_identity()
    yield v
    v.close()


# ---- the vault over HTTP -----------------------------------------------------------------


def test_put_get_range_size_list_delete(vault, s3):
    data = rand_bytes(300_000, seed=1)
    vault.put("packs/aa11", data)
    assert vault.get("packs/aa11") == data
    assert vault.get("packs/aa11", 1000, 5000) == data[1000:6000]
    assert vault.get("packs/aa11", 299_990, 10) == data[-10:]
    assert vault.size("packs/aa11") == len(data) and vault.size("packs/none") is None
    assert dict(vault.list("packs/")) == {"packs/aa11": len(data)}
    # Keys live under the prefix, so several vaults can share a bucket.
    assert set(s3.keys()) == {"pre/btfs-vault.json", "pre/packs/aa11"}
    with pytest.raises(VaultError, match="shorter than expected"):
        vault.get("packs/aa11", 299_990, 20)
    with pytest.raises(VaultError, match="missing: packs/none"):
        vault.get("packs/none", 0, 10)
    vault.delete("packs/aa11")
    vault.delete("packs/aa11")  # already gone: no error
    assert dict(vault.list("packs/")) == {}


def test_list_pages_through_every_page(vault):
    vault.list_page_size = 7  # S3's is 1000: the same continuation, fewer objects
    for i in range(20):
        vault.put(f"packs/{i:04d}", b"x")
    assert len(dict(vault.list("packs/"))) == 20


def test_writes_are_create_only(vault, s3):
    vault.put("packs/k", b"first")
    vault.put("packs/k", b"second")  # a 412 from If-None-Match: the object is kept
    assert vault.get("packs/k") == b"first"
    writer = vault.writer()
    writer.write(b"third")
    writer.commit("packs/k")
    assert vault.get("packs/k") == b"first"


def test_a_server_without_conditional_writes_gets_a_head_first(vault):
    # What the vault falls back to after a 501 for If-None-Match (the fault relay tests
    # the 501 itself): a HEAD before each PUT keeps writes create-only.
    vault._conditional = False
    vault.put("packs/k", b"first")
    vault.put("packs/k", b"second")
    assert vault.get("packs/k") == b"first"


def test_writer_spools_to_disk_and_uploads_one_object(vault, tmp_path):
    # moto does not check Content-MD5, so look at what was sent: one PUT, create-only,
    # with the MD5 of the whole body, which the writer computed as the pack was written.
    sent = []
    vault._client.meta.events.register(
        "before-send.s3.PutObject", lambda request, **kw: sent.append(dict(request.headers)))
    writer = vault.writer()
    spooled = list(vault.spool_dir.iterdir())
    assert len(spooled) == 1
    data = rand_bytes(3 * MiB, seed=2)
    for i in range(0, len(data), 100_000):
        writer.write(data[i:i + 100_000])
    writer.commit("packs/big")
    assert vault.get("packs/big") == data
    assert len(sent) == 1 and sent[0]["If-None-Match"] == b"*"
    assert sent[0]["Content-MD5"] == base64.b64encode(hashlib.md5(data).digest())
    assert list(vault.spool_dir.iterdir()) == []  # committed: the spool file is gone


def test_clean_tmp_removes_spool_files_of_dead_processes_only(vault):
    vault.spool_dir.mkdir(parents=True, exist_ok=True)
    from btfs.vault.tmpfiles import machine_token

    dead = vault.spool_dir / f"{machine_token()}-999999999-1-1.pack"  # this machine's
    dead.write_bytes(b"x")
    writer = vault.writer()
    vault.clean_tmp()
    assert not dead.exists()
    assert len(list(vault.spool_dir.iterdir())) == 1  # ours, still being written
    writer.abort()


def test_identity_round_trips_and_a_second_vault_in_the_bucket_is_separate(vault, s3, tmp_path):
    ident = vault.identity()
    other = open_vault(s3.url("other"), s3.settings(), tmp_path / "cache")
    assert other.identity() is None and other.is_empty()
    assert other.create_identity().vault_id != ident.vault_id
    assert vault.identity() == ident


def test_normalize_url():
    assert normalize_url("s3://bucket/a/b/") == "s3://bucket/a/b"
    assert normalize_url("s3://bucket") == "s3://bucket"
    with pytest.raises(ConfigError, match="expected s3://BUCKET"):
        normalize_url("s3:///nobucket")
    with pytest.raises(ConfigError, match="unknown scheme 'gs'"):
        normalize_url("gs://bucket/x")


# ---- init: access check, one line per problem -----------------------------------------


def test_init_on_s3_writes_the_settings_and_checks_access(s3, paths):
    cfg, created = init_repo(paths, s3.url("laptop/"), s3.settings(region="us-east-1"))
    assert created and cfg.vault == f"s3://{s3.bucket}/laptop"
    doc = tomllib.loads(paths.config_file.read_text())
    assert doc["vault"] == f"s3://{s3.bucket}/laptop"
    assert doc["s3"] == {"endpoint": s3.endpoint, "region": "us-east-1"}
    assert set(s3.keys()) == {"laptop/btfs-vault.json"}  # the probe object was deleted
    # Again: nothing changes.
    assert init_repo(paths, s3.url("laptop"), s3.settings(region="us-east-1"))[1] is False


def test_init_refuses_a_prefix_holding_something_else(s3, paths):
    s3.client().put_object(Bucket=s3.bucket, Key="taken/file.txt", Body=b"x")
    with pytest.raises(BtfsError, match="is not empty and is not a btfs vault"):
        init_repo(paths, s3.url("taken"), s3.settings())
    assert not paths.config_file.exists()


def test_init_says_no_such_bucket(s3, paths):
    with pytest.raises(VaultError, match=r"^s3://no-such-bucket-here/x: no such bucket: "
                                         r"no-such-bucket-here$"):
        init_repo(paths, "s3://no-such-bucket-here/x", s3.settings())
    assert not paths.config_file.exists()


def test_init_says_bad_endpoint(s3, paths):
    endpoint = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(VaultError, match=rf"bad endpoint: cannot connect to {endpoint} "
                                         r"\(\[Errno 111\] Connection refused\)$"):
        init_repo(paths, s3.url(), S3Settings(endpoint=endpoint))
    with pytest.raises(VaultError, match=r"bad endpoint: .*\(\[Errno -[0-9]+\] "):
        init_repo(paths, s3.url(), S3Settings(endpoint="http://no-such-host.invalid:9000"))


def test_init_says_no_credentials(s3, paths, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(VaultError, match="no S3 credentials found"):
        init_repo(paths, s3.url(), s3.settings())


@pytest.mark.parametrize("case, message", [
    ("unknown key", "bad credentials: the access key id is not known to http://"),
    ("wrong secret", "bad credentials: the secret key does not match the access key id$"),
    ("no permission", "access denied to s3://locked/x "),
])
def test_init_says_what_is_wrong_with_the_credentials(moto_auth_server, paths, monkeypatch,
                                                      case, message):
    set_credentials(monkeypatch)
    server = moto_auth_server
    key, secret = {"unknown key": ("AKIANOBODYKNOWS", "x"),
                   "wrong secret": (server.key_id, "wrong"),
                   "no permission": (server.key_id, server.secret)}[case]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    with pytest.raises(VaultError, match=r"^s3://locked/x: " + message):
        init_repo(paths, "s3://locked/x", S3Settings(endpoint=server.endpoint))
    assert not paths.config_file.exists()


def test_init_says_unknown_profile(s3, paths):
    with pytest.raises(ConfigError, match="AWS profile 'nobody' not found"):
        init_repo(paths, s3.url(), s3.settings(profile="nobody"))


def test_init_credentials_come_from_a_profile(s3, paths, monkeypatch, isolated_env):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    aws = isolated_env / ".aws"
    aws.mkdir()
    (aws / "credentials").write_text("[backup]\naws_access_key_id = k\n"
                                     "aws_secret_access_key = s\n")
    cfg, created = init_repo(paths, s3.url(), s3.settings(profile="backup"))
    assert created and cfg.s3.profile == "backup"
    assert "aws_secret" not in paths.config_file.read_text()


def test_endpoint_options_are_for_s3_only(paths, vault_dir):
    with pytest.raises(BtfsError, match="for s3:// vaults only"):
        init_repo(paths, str(vault_dir), S3Settings(endpoint="http://127.0.0.1:9"))


# ---- the [s3] config table -----------------------------------------------------------------


def test_s3_config_table_is_validated():
    base = {"host_id": "h", "vault": "s3://b/p"}
    cfg = config_mod.from_dict({**base, "s3": {"uploads": 4, "limit_upload": 1000}})
    assert cfg.s3 == S3Settings(uploads=4, limit_upload=1000)
    assert config_mod.from_dict(base).s3 == S3Settings(uploads=8, retry_seconds=900,
                                                       read_cache=1 << 30, limit_upload=0)
    for bad, message in [({"upload": 4}, "unknown key 's3.upload'"),
                         ({"uploads": "4"}, "'s3.uploads' must be int"),
                         ({"uploads": 0}, "s3.uploads must be 1..64"),
                         ({"read_cache": -1}, "must not be negative"),
                         ({"endpoint": "minio:9000"}, "must be an http"),
                         ({"region": 1}, "'s3.region' must be str")]:
        with pytest.raises(ConfigError, match=message):
            config_mod.from_dict({**base, "s3": bad})


def test_s3_config_saves_only_what_differs(paths):
    cfg = Config(host_id="h", vault="s3://b/p", s3=S3Settings(endpoint="http://x:9"))
    config_mod.save(paths, cfg)
    assert config_mod.load(paths) == cfg
    assert "uploads" not in paths.config_file.read_text()
    config_mod.save(paths, Config(host_id="h", vault="/v"))
    assert "[s3]" not in paths.config_file.read_text()


# ---- retry policy, limits, read cache: no network --------------------------------------


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_retry_backs_off_with_full_jitter_until_success():
    t = FakeTime()
    policy = RetryPolicy(budget=100, base=1, cap=8, sleep=t.sleep, clock=t.clock,
                         random=lambda: 1.0)
    failures = iter([OSError("a")] * 5)

    def flaky():
        e = next(failures, None)
        if e:
            raise e
        return "done"

    assert policy.call("x", flaky, lambda e: True) == "done"
    assert t.sleeps == [1, 2, 4, 8, 8]  # doubling, capped
    jittered = RetryPolicy(base=1, cap=8, random=lambda: 0.25)
    assert [jittered.delay(n) for n in range(5)] == [0.25, 0.5, 1, 2, 2]


def test_retry_gives_up_at_the_budget_and_never_retries_permanent_errors():
    t = FakeTime()
    policy = RetryPolicy(budget=10, base=1, cap=4, sleep=t.sleep, clock=t.clock,
                         random=lambda: 1.0)
    calls = []

    def always():
        calls.append(t.now)
        raise TimeoutError("down")

    with pytest.raises(TimeoutError):
        policy.call("x", always, lambda e: True)
    assert t.now == 7 and len(calls) == 4  # waits 1, 2, 4; the next 4 would pass 10
    calls.clear()
    with pytest.raises(TimeoutError):
        policy.call("x", always, lambda e: False)
    assert len(calls) == 1


def test_adaptive_limit_halves_on_slow_down_and_grows_back_by_one():
    limit = AdaptiveLimit(8)
    limit.slow_down()
    assert limit.limit == 4
    limit.slow_down()
    limit.slow_down()
    limit.slow_down()
    assert limit.limit == 1
    for expected in (2, 3, 4):
        limit.success()
        assert limit.limit == expected
    for _ in range(10):
        limit.success()
    assert limit.limit == 8


def test_token_bucket_holds_the_rate_across_takers():
    t = FakeTime()
    bucket = TokenBucket(1000, clock=t.clock, sleep=t.sleep)
    for _ in range(10):
        bucket.take(500)  # 5000 bytes at 1000/s, with a 1 s burst: 4 s
    assert 3.9 <= t.now <= 4.1
    TokenBucket(0).take(10**9)  # 0: no limit, no wait


def test_range_cache_is_bounded_lru_and_atomic(tmp_path):
    cache = RangeCache(tmp_path / "c", capacity=10_000)
    for i in range(8):
        cache.put("ab" * 32, i * 1000, 1000, bytes([i]) * 1000)
    assert cache.get("ab" * 32, 0, 1000) == bytes([0]) * 1000
    os.utime(cache._path("ab" * 32, 0, 1000), (2e9, 2e9))  # most recently used
    for i in range(8, 14):
        cache.put("ab" * 32, i * 1000, 1000, bytes([i]) * 1000)
    kept = [i for i in range(14) if cache.get("ab" * 32, i * 1000, 1000) is not None]
    assert sum(1000 for _ in kept) <= 10_000
    assert 0 in kept and 13 in kept and 1 not in kept
    assert list((tmp_path / "c" / "tmp").iterdir()) == []
    cache.drop("ab" * 32, 0, 1000)
    assert cache.get("ab" * 32, 0, 1000) is None


def test_a_damaged_cached_range_is_read_again_from_s3(s3, paths, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    data = rand_bytes(2 * MiB, seed=5)
    (src / "f").write_bytes(data)
    init_s3(paths, s3)
    track_dirs(paths, [str(src)])
    with Repo.open(paths) as repo:
        backup(repo)
        ref = _first_ref(repo, src / "f")
        assert bytes(ChunkSource(repo.vault, repo.codec).chunk(ref)) == data[:ref.size]
        entry = repo.vault._range_cache()._path(ref.pack, ref.offset, ref.stored_len)
        assert entry.exists()
        # Cached copies are used: with the pack gone from S3, the range still reads.
        s3.client().delete_object(Bucket=s3.bucket, Key=f"vault/packs/{ref.pack}")
        assert bytes(ChunkSource(repo.vault, repo.codec).chunk(ref)) == data[:ref.size]
        s3.client().put_object(Bucket=s3.bucket, Key=f"vault/packs/{ref.pack}",
                               Body=b"\0" * ref.offset + repo.vault.get(
                                   f"packs/{ref.pack}", ref.offset, ref.stored_len))
        damaged = bytearray(entry.read_bytes())
        damaged[len(damaged) // 2] ^= 0xFF
        entry.write_bytes(bytes(damaged))
        assert bytes(ChunkSource(repo.vault, repo.codec).chunk(ref)) == data[:ref.size]
        assert entry.read_bytes() != bytes(damaged)  # replaced by the good copy


def init_s3(paths, s3, **settings):
    cfg, created = init_repo(paths, s3.url(), s3.settings(**settings))
    assert created
    return cfg


def _first_ref(repo, path: Path) -> ChunkRef:
    cat = repo.catalog
    version = cat.history.versions_of(cat.history.node_for_path(os.fsencode(path)))[-1]
    return cat.chunks.content_refs(version.meta.content_id)[0]


def _client_error(code: str, status: int) -> bex.ClientError:
    return bex.ClientError({"Error": {"Code": code, "Message": ""},
                            "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject")


def test_temporary_and_permanent_failures_are_told_apart():
    transient = [_client_error("SlowDown", 503), _client_error("InternalError", 500),
                 _client_error("", 502), _client_error("RequestTimeout", 400),
                 _client_error("", 429), bex.ConnectionClosedError(endpoint_url="u"),
                 bex.ReadTimeoutError(endpoint_url="u"),
                 bex.EndpointConnectionError(endpoint_url="u"),
                 bex.IncompleteReadError(actual_bytes=1, expected_bytes=2),
                 ConnectionResetError()]
    permanent = [_client_error("AccessDenied", 403), _client_error("NoSuchBucket", 404),
                 _client_error("InvalidAccessKeyId", 403),
                 _client_error("SignatureDoesNotMatch", 403),
                 _client_error("NotImplemented", 501), bex.NoCredentialsError(),
                 bex.SSLError(endpoint_url="u", error="certificate verify failed")]
    assert [e for e in transient if not is_transient(e)] == []
    assert [e for e in permanent if is_transient(e)] == []


def test_slow_down_halves_the_uploads_in_flight_and_success_grows_them(vault):
    vault._retry = RetryPolicy(budget=60, sleep=lambda s: None)
    answers = iter([_client_error("SlowDown", 503), _client_error("SlowDown", 503)])

    def put():
        e = next(answers, None)
        if e:
            raise e
        return "ok"

    assert vault._call("upload x", put) == "ok"
    assert vault._slots.limit == 2  # 8 halved twice
    vault.put("packs/a", b"a")
    assert vault._slots.limit == 3


def test_a_permanent_failure_is_one_line_at_once(vault):
    calls = []

    def denied():
        calls.append(1)
        raise _client_error("AccessDenied", 403)

    with pytest.raises(VaultError, match=r"^upload x: access denied to s3://.*/pre \("):
        vault._call("upload x", denied)
    assert calls == [1]


def test_limit_upload_holds_a_backup_to_its_rate(s3, paths, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(rand_bytes(3 * MiB, seed=9))
    init_s3(paths, s3)
    track_dirs(paths, [str(src)])
    with Repo.open(paths) as repo, repo.writer():
        start = time.monotonic()
        stats = repo.backup(limit_upload=MiB)
        elapsed = time.monotonic() - start
    assert stats.bytes_added > 3 * MiB
    # 3 MiB at 1 MiB/s, the first second's worth at once: at least 2 s, for all the
    # upload threads together.
    assert elapsed >= 1.9, elapsed


def test_rate_option_parses_sizes():
    rate = Rate()
    assert [rate.convert(v, None, None) for v in ("0", "1500", "500K", "20M", "1.5G",
                                                  "20MiB", "8MB/s")] == [
        0, 1500, 500 << 10, 20 << 20, 3 << 29, 20 << 20, 8 << 20]
    with pytest.raises(click.BadParameter, match="not a rate"):
        rate.convert("fast", None, None)


def test_opening_an_unreachable_vault_fails_soon_not_after_the_backup_budget(
        s3, paths, monkeypatch):
    monkeypatch.setattr("btfs.vault.s3.IDENTITY_RETRY_SECONDS", 1.0)
    cfg = init_s3(paths, s3)  # retry_seconds is the default 900
    gone = f"http://127.0.0.1:{free_port()}"
    config_mod.save(paths, config_mod.with_changes(
        cfg, s3=config_mod.with_changes(cfg.s3, endpoint=gone)))
    start = time.monotonic()
    with pytest.raises(VaultError, match=rf"btfs-vault.json: bad endpoint: cannot connect "
                                         rf"to {gone} "):
        Repo.open(paths, readonly=True)
    assert time.monotonic() - start < 10


def _hammer_cache(root: str, seed: int) -> int:
    """Put and get ranges of a small shared cache; return how many reads were wrong."""
    import random

    cache = RangeCache(Path(root), capacity=200_000)
    rng = random.Random(seed)
    wrong = 0
    for _ in range(400):
        i = rng.randrange(60)
        want = bytes([i]) * (5000 + i)
        got = cache.get("cd" * 32, i, len(want))
        if got is None:
            cache.put("cd" * 32, i, len(want), want)
        elif got != want:
            wrong += 1
    return wrong


def test_the_read_cache_is_shared_safely_by_processes_and_threads(tmp_path):
    """Two processes with two threads each (a mount and a restore) filling and evicting
    one small cache: every hit is a whole, right entry, and the bound holds."""
    import concurrent.futures
    import multiprocessing

    root = str(tmp_path / "shared")
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=ctx) as procs, \
            concurrent.futures.ThreadPoolExecutor(2) as threads:
        jobs = [procs.submit(_hammer_cache, root, s) for s in (1, 2)]
        jobs += [threads.submit(_hammer_cache, root, s) for s in (3, 4)]
        assert [j.result(timeout=120) for j in jobs] == [0, 0, 0, 0]
    cache = RangeCache(Path(root), capacity=200_000)
    # Each writer may add a sixteenth of the bound (and one entry) before it recounts.
    assert cache._total() <= 200_000 + 4 * (200_000 // 16 + 6000)
    assert list((Path(root) / "tmp").iterdir()) == []
