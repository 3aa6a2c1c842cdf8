"""A vault in an S3 bucket (AWS, or any S3-compatible service: MinIO, Backblaze B2, R2, Ceph).

Layout under `s3://bucket/prefix/`: `btfs-vault.json`, `packs/<64 hex>`. A pack is built in
a spool file under the XDG cache dir (never whole in memory) and uploaded with one PUT
carrying its Content-MD5, so the server refuses a body damaged on the way. Writes are
create-only: `If-None-Match: *`, and a 412 means the same content-addressed object is there
already; a server that does not support the header (501) gets a HEAD before each PUT for the
rest of the process. Reads are ranged GETs whose length is checked, kept in a local
`RangeCache` keyed by vault id, pack and range.

Every request goes through `retry.RetryPolicy`: temporary failures (5xx, SlowDown, reset or
closed connections, timeouts, truncated bodies) are retried with backoff inside the
`retry_seconds` budget; permanent ones (403, NoSuchBucket, bad credentials) become one
`VaultError` line at once. botocore's own retries are off so that the budget is btfs's.
Credentials come only from boto3's chain; btfs never stores them.

Thread-safe: boto3 clients are, and the limits (`throttle`) are shared by all threads.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import io
import logging
import os
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlparse

import boto3
import botocore.exceptions as bex
from botocore.config import Config as BotoConfig

from ..config import S3Settings
from ..errors import ConfigError, VaultError
from .base import IDENTITY_KEY, ObjectWriter, Vault, VaultIdentity
from .cache import RangeCache
from .retry import RetryPolicy
from .throttle import AdaptiveLimit, TokenBucket
from .tmpfiles import clean_dir, tmp_name

log = logging.getLogger(__name__)

T = TypeVar("T")

PROBE_PREFIX = "btfs-probe-"  # init's access probe; never part of a vault
IDENTITY_RETRY_SECONDS = 20.0
# A sequential reader's read-ahead asks for this much per ranged GET (several chunks that
# lie one after another in a pack): per-request overhead, not bandwidth, is what bounds
# reading an S3-compatible store one 1 MiB chunk at a time.
READ_RUN_BYTES = 4 << 20


def parse_url(url: str) -> tuple[str, str]:
    """(bucket, prefix) of `s3://bucket/prefix`; the prefix has no slash at either end."""
    parsed = urlparse(url)
    bucket = parsed.netloc
    if parsed.scheme != "s3" or not bucket or parsed.query or parsed.fragment:
        raise ConfigError(f"vault {url}: expected s3://BUCKET or s3://BUCKET/PREFIX")
    return bucket, parsed.path.strip("/")


def normalize_url(url: str) -> str:
    bucket, prefix = parse_url(url)
    return f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"


class _Truncated(Exception):
    """A response body shorter than the server said (a connection cut mid-body)."""


class _Throttled(io.RawIOBase):
    """A file read through the process's upload rate limit."""

    def __init__(self, f, bucket: TokenBucket):
        self._f = f
        self._bucket = bucket

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n if n is not None and n >= 0 else 1 << 20)
        self._bucket.take(len(data))
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()


class _SpoolWriter(ObjectWriter):
    """A pack spooled to `<cache>/spool/` (named as tmpfiles says), its MD5 computed as it is
    written; commit uploads the file with one PUT and removes it."""

    def __init__(self, vault: S3Vault):
        self._vault = vault
        vault.spool_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._path = vault.spool_dir / tmp_name(".pack")
        try:
            self._file: io.BufferedWriter | None = open(  # noqa: SIM115 (held until commit)
                self._path, "xb", buffering=1 << 20)
        except OSError as e:
            raise VaultError(f"cannot write in {vault.spool_dir}: {e.strerror}") from None
        self._md5 = hashlib.md5()
        self._size = 0

    def write(self, data: bytes) -> None:
        try:
            self._file.write(data)
        except OSError as e:
            self.abort()
            raise VaultError(f"cannot write {self._path}: {e.strerror}") from None
        self._md5.update(data)
        self._size += len(data)

    def commit(self, key: str) -> None:
        try:
            self._file.close()
            self._file = None
            self._vault._put_file(key, self._path, self._size,
                                  base64.b64encode(self._md5.digest()).decode())
        except OSError as e:
            raise VaultError(f"cannot read {self._path}: {e.strerror}") from None
        finally:
            self.abort()

    def abort(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        try:
            os.unlink(self._path)
        except FileNotFoundError:
            pass


def _code(e: BaseException) -> tuple[str, int]:
    """(error code, HTTP status) of a botocore ClientError."""
    if not isinstance(e, bex.ClientError):
        return "", 0
    return (str(e.response.get("Error", {}).get("Code", "")),
            int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0))


_TRANSIENT_CODES = {"SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable",
                    "ConditionalRequestConflict", "OperationAborted", "Throttling",
                    "ThrottlingException", "RequestLimitExceeded", "TooManyRequests"}


def is_transient(e: BaseException) -> bool:
    """True for failures worth retrying: the server or the network may do better later."""
    if isinstance(e, bex.SSLError):
        return False  # a certificate that does not verify will not start to
    if isinstance(e, bex.ClientError):
        code, status = _code(e)
        return code in _TRANSIENT_CODES or status == 429 or (status >= 500 and status != 501)
    # bex.ConnectionError is botocore's (refused, DNS, timeouts), not the builtin one.
    return isinstance(e, (bex.HTTPClientError, bex.ConnectionError, bex.IncompleteReadError,
                          bex.ResponseStreamingError, _Truncated, ConnectionError,
                          TimeoutError))


def _is_slow_down(e: BaseException) -> bool:
    code, status = _code(e)
    return code in ("SlowDown", "Throttling", "TooManyRequests") or status in (429, 503)


def _errno_text(e: BaseException) -> str:
    """'[Errno 111] Connection refused' out of a connection error's long message."""
    cause = getattr(e, "kwargs", {}).get("error") or e
    m = re.search(r"\[Errno -?\d+\] [^'\"\)]*", str(cause))
    if m:
        return m.group(0).strip()
    text = str(cause).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__


class S3Vault(Vault):
    def __init__(self, url: str, settings: S3Settings, cache_dir: Path, *,
                 retry: RetryPolicy | None = None):
        self.bucket, prefix = parse_url(url)
        self.url = normalize_url(url)
        self.prefix = prefix + "/" if prefix else ""
        self.settings = settings
        self.max_uploads = settings.uploads
        self.read_run_bytes = READ_RUN_BYTES
        self.endpoint = settings.endpoint or "the AWS S3 endpoint"
        self.spool_dir = cache_dir / "spool"
        self._cache_dir = cache_dir / "read-cache"
        self._cache: RangeCache | None = None
        self._vault_id: str | None = None
        self._abandoning = threading.Event()  # set: requests waiting to retry give up
        self._retry = retry or RetryPolicy(budget=float(settings.retry_seconds),
                                           sleep=self._wait_to_retry)
        self._slots = AdaptiveLimit(settings.uploads)
        self._upload_limit = TokenBucket(settings.limit_upload)
        self._conditional = True  # If-None-Match until the server says it cannot
        self.list_page_size = 1000  # objects per LIST request (S3's maximum)
        try:
            session = boto3.session.Session(profile_name=settings.profile or None)
        except bex.ProfileNotFound:
            raise ConfigError(f"AWS profile '{settings.profile}' not found in ~/.aws/config "
                              "or ~/.aws/credentials") from None
        self._client = session.client(
            "s3", endpoint_url=settings.endpoint or None, region_name=settings.region or None,
            config=BotoConfig(
                # One attempt: btfs retries itself (retry.py), within its own budget.
                retries={"total_max_attempts": 1, "mode": "standard"},
                # Newer botocore adds CRC32 trailers to every upload and demands them on
                # downloads; MinIO, B2 and R2 reject or lack those. Content-MD5 is ours.
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
                # The uploads, plus the mount's and a restore's readers.
                max_pool_connections=settings.uploads + 16,
                # A stalled connection fails after `timeout` and is retried on a new one.
                connect_timeout=min(10, settings.timeout), read_timeout=settings.timeout,
                tcp_keepalive=True,
                # Custom endpoints rarely have per-bucket DNS names.
                s3={"addressing_style": "path"} if settings.endpoint else None))

    # ---- requests --------------------------------------------------------------------

    def _key(self, key: str) -> str:
        return self.prefix + key

    def _call(self, what: str, fn: Callable[[], T], retry: RetryPolicy | None = None) -> T:
        """fn() with retries; any failure left becomes one VaultError line."""
        try:
            return (retry or self._retry).call(what, fn, is_transient, self._on_retry)
        except VaultError:
            raise
        except Exception as e:
            if not isinstance(e, (bex.BotoCoreError, bex.ClientError, _Truncated,
                                  ConnectionError, TimeoutError)):
                raise
            raise VaultError(f"{what}: {self.describe(e)}") from None

    def _wait_to_retry(self, seconds: float) -> None:
        if self._abandoning.wait(seconds):
            raise VaultError("given up: the run was abandoned")

    def abandon_retries(self, abandon: bool = True) -> None:
        if abandon:
            self._abandoning.set()
        else:
            self._abandoning.clear()

    def _on_retry(self, e: BaseException) -> None:
        if _is_slow_down(e):
            self._slots.slow_down()

    def describe(self, e: BaseException) -> str:
        """What went wrong, in words a user can act on."""
        where = self.url
        if isinstance(e, (bex.NoCredentialsError, bex.PartialCredentialsError)):
            return ("no S3 credentials found: set AWS_ACCESS_KEY_ID and "
                    "AWS_SECRET_ACCESS_KEY, write ~/.aws/credentials, or name a profile")
        if isinstance(e, bex.SSLError):
            return f"TLS error with {self.endpoint}: {_errno_text(e)}"
        if isinstance(e, (bex.EndpointConnectionError, bex.ConnectTimeoutError,
                          bex.ProxyConnectionError)):
            return f"bad endpoint: cannot connect to {self.endpoint} ({_errno_text(e)})"
        if isinstance(e, bex.ReadTimeoutError):
            return f"{self.endpoint} did not answer in time"
        if isinstance(e, (bex.ConnectionClosedError, ConnectionError)):
            return f"{self.endpoint} closed the connection"
        if isinstance(e, (bex.IncompleteReadError, bex.ResponseStreamingError, _Truncated)):
            return f"{self.endpoint} sent an incomplete response"
        code, status = _code(e)
        if code == "NoSuchBucket":
            return f"no such bucket: {self.bucket}"
        if code == "InvalidAccessKeyId":
            return f"bad credentials: the access key id is not known to {self.endpoint}"
        if code == "SignatureDoesNotMatch":
            return "bad credentials: the secret key does not match the access key id"
        if code == "RequestTimeTooSkewed":
            return ("clock skew: this machine's clock is too far from the server's "
                    "(set the time, e.g. enable NTP)")
        if code in ("AuthorizationHeaderMalformed", "PermanentRedirect",
                    "IllegalLocationConstraintException"):
            return f"wrong region for bucket {self.bucket} (set --region)"
        if code == "AccessDenied" or status == 403:
            return f"access denied to {where} (check the key's permissions and bucket policy)"
        if isinstance(e, bex.ClientError):
            message = e.response.get("Error", {}).get("Message", "")
            return f"S3 error {code or status}" + (f": {message}" if message else "")
        return str(e)

    # ---- the interface -----------------------------------------------------------------

    def put(self, key: str, data: bytes) -> None:
        md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
        self._call(f"upload {key}",
                   lambda: self._put_once(key, lambda: io.BytesIO(data), len(data), md5))

    def writer(self) -> _SpoolWriter:
        return _SpoolWriter(self)

    def _put_file(self, key: str, path: Path, size: int, md5: str) -> None:
        def upload() -> None:
            with open(path, "rb") as f:
                def rewound():
                    f.seek(0)
                    return f

                self._put_once(key, rewound, size, md5)

        self._call(f"upload {key}", upload)

    def _put_once(self, key: str, body: Callable[[], object], size: int, md5: str) -> None:
        """One create-only PUT (`body()` gives the stream, read from its start)."""
        with self._slots:
            if self._conditional:
                try:
                    self._send(key, body(), size, md5, conditional=True)
                    self._slots.success()
                    return
                except bex.ClientError as e:
                    code, status = _code(e)
                    if code == "PreconditionFailed" or status == 412:
                        return  # the same content-addressed object is there already
                    if not (code == "NotImplemented" or status == 501):
                        raise
                    log.info("%s does not support conditional writes; checking for each "
                             "object before writing it", self.endpoint)
                    self._conditional = False
            if self._head(key) is None:
                self._send(key, body(), size, md5, conditional=False)
            self._slots.success()

    def _send(self, key: str, stream, size: int, md5: str, *, conditional: bool) -> None:
        if self._upload_limit.rate > 0:
            stream = _Throttled(stream, self._upload_limit)
        extra = {"IfNoneMatch": "*"} if conditional else {}
        self._client.put_object(Bucket=self.bucket, Key=self._key(key), Body=stream,
                                ContentLength=size, ContentMD5=md5, **extra)

    def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        cache = self._range_cache() if length is not None and key.startswith("packs/") else None
        if cache is not None:
            data = cache.get(key[6:], offset, length)
            if data is not None:
                return data
        data = self._call(f"read {key}", lambda: self._get_once(key, offset, length))
        if cache is not None:
            cache.put(key[6:], offset, length, data)
        return data

    def _get_once(self, key: str, offset: int, length: int | None) -> bytes:
        extra = {}
        if length is not None:
            if length == 0:
                return b""
            extra["Range"] = f"bytes={offset}-{offset + length - 1}"
        elif offset:
            extra["Range"] = f"bytes={offset}-"
        try:
            response = self._client.get_object(Bucket=self.bucket, Key=self._key(key), **extra)
        except bex.ClientError as e:
            code, _ = _code(e)
            if code in ("NoSuchKey", "404"):
                raise VaultError(f"vault object missing: {key}") from None
            if code == "InvalidRange":
                raise VaultError(f"vault object {key} is shorter than expected") from None
            raise
        body = response["Body"]
        try:
            data = body.read()
        finally:
            body.close()
        if length is not None and len(data) != length:
            total = str(response.get("ContentRange", "")).rpartition("/")[2]
            if total.isdigit() and int(total) < offset + length:
                raise VaultError(f"vault object {key} is shorter than expected")
            raise _Truncated(f"{len(data)} of {length} bytes")
        return data

    def drop_cached(self, key: str, offset: int, length: int) -> bool:
        cache = self._range_cache() if key.startswith("packs/") else None
        if cache is None:
            return False
        cache.drop(key[6:], offset, length)
        return True

    def _range_cache(self) -> RangeCache | None:
        if self._cache is None and self.settings.read_cache > 0:
            if self._vault_id is None:
                self.identity()
            if self._vault_id is not None:
                self._cache = RangeCache(self._cache_dir / self._vault_id,
                                         self.settings.read_cache)
        return self._cache

    def _head(self, key: str) -> int | None:
        try:
            return self._client.head_object(Bucket=self.bucket,
                                            Key=self._key(key))["ContentLength"]
        except bex.ClientError as e:
            if _code(e)[1] == 404:
                return None
            raise

    def size(self, key: str) -> int | None:
        return self._call(f"look up {key}", lambda: self._head(key))

    def list(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        token = None
        while True:
            extra = {"ContinuationToken": token} if token else {}
            page = self._call(f"list {self.url}", lambda extra=extra: self._client.list_objects_v2(
                Bucket=self.bucket, Prefix=self._key(prefix), MaxKeys=self.list_page_size,
                **extra))
            for obj in page.get("Contents", ()):
                yield obj["Key"][len(self.prefix):], obj["Size"]
            if not page.get("IsTruncated"):
                return
            token = page["NextContinuationToken"]

    def delete(self, key: str) -> None:
        self._call(f"delete {key}", lambda: self._client.delete_object(
            Bucket=self.bucket, Key=self._key(key)))

    def close(self) -> None:
        self._client.close()

    def clean_tmp(self) -> None:
        """Remove spool files of writers that are certainly dead (btfs.vault.tmpfiles)."""
        clean_dir(self.spool_dir)

    def limit_upload(self, rate: int) -> None:
        self._upload_limit = TokenBucket(rate)

    # ---- setup -------------------------------------------------------------------------

    def exists(self) -> bool:
        return True  # a bucket is made by its owner, and check_access proved it is there

    def is_empty(self) -> bool:
        return not any(not key.startswith(PROBE_PREFIX) for key, _ in self.list())

    def create(self) -> None:
        """Nothing to make: a prefix in a bucket exists once an object is under it."""

    def check_access(self) -> None:
        """List, put, get and delete a probe object, each once, without retries: init
        says at once, in one line, what is wrong."""
        key = f"{PROBE_PREFIX}{uuid.uuid4()}"
        data = b"btfs access probe\n"
        md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
        steps = [
            ("list", lambda: self._client.list_objects_v2(
                Bucket=self.bucket, Prefix=self.prefix, MaxKeys=1)),
            ("write", lambda: self._put_once(key, lambda: io.BytesIO(data), len(data), md5)),
            ("read", lambda: self._get_once(key, 0, None)),
            ("delete", lambda: self._client.delete_object(Bucket=self.bucket,
                                                           Key=self._key(key))),
        ]
        for what, step in steps:
            try:
                got = step()
            except VaultError as e:
                raise VaultError(f"{self.url}: cannot {what} a test object: {e}") from None
            except (bex.BotoCoreError, bex.ClientError, _Truncated) as e:
                raise VaultError(f"{self.url}: {self.describe(e)}") from None
            if what == "read" and got != data:
                raise VaultError(f"{self.url}: a test object read back differs from what "
                                 "was written")

    # ---- identity ----------------------------------------------------------------------

    def read_identity(self) -> bytes | None:
        """As Vault's, retrying for at most IDENTITY_RETRY_SECONDS: every command opens the
        vault first, and one that only reads the catalog (log, snapshots) must say soon
        that the vault is unreachable rather than wait out a backup's budget."""
        quick = dataclasses.replace(self._retry,
                                    budget=min(self._retry.budget, IDENTITY_RETRY_SECONDS))
        what = f"read {self.url}/{IDENTITY_KEY}"
        if self._call(what, lambda: self._head(IDENTITY_KEY), quick) is None:
            return None
        return self._call(what, lambda: self._get_once(IDENTITY_KEY, 0, None), quick)

    def identity(self) -> VaultIdentity | None:
        ident = super().identity()
        if ident is not None:
            self._vault_id = ident.vault_id
        return ident

    def create_identity(self) -> VaultIdentity:
        ident = super().create_identity()
        self._vault_id = ident.vault_id
        return ident
