"""A real S3 server for tests: moto's server mode on 127.0.0.1, spoken to over HTTP.

`moto_endpoint` (session) starts one server on a free port and stops it at the end;
`s3` (per test) creates a fresh bucket on it and puts fake credentials in the test's
environment, so both btfs in this process and `btfs` subprocesses reach it through boto3's
ordinary credential chain. tests/conftest.py loads this module as a plugin, so every test
can ask for the fixtures; the server starts only for a session that uses them.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass

import boto3
import pytest
from moto.server import ThreadedMotoServer

from btfs.config import S3Settings

ACCESS_KEY = "btfs-test-key"
SECRET_KEY = "btfs-test-secret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MotoServer:
    """A moto server that can be stopped and started again on the same port (its state,
    the buckets and objects, lives in this process and survives a restart)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._server: ThreadedMotoServer | None = None

    def start(self) -> None:
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port,
                                          verbose=False)
        self._server.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None


@dataclass
class AuthServer:
    """A moto server that checks credentials, with one bucket and one IAM user who has
    keys but no permission at all."""

    endpoint: str
    bucket: str
    key_id: str
    secret: str


@pytest.fixture(scope="session")
def moto_auth_server():
    """moto with authentication on, in a process of its own: the setting is read once per
    process, and the session's server must stay open to any key. Its first three requests
    (bucket, user, key) are let through unchecked, as moto's INITIAL_NO_AUTH_ACTION_COUNT
    provides."""
    port = free_port()
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "3"}
    proc = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "moto_server"),
                             "-H", "127.0.0.1", "-p", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.1)
        endpoint = f"http://127.0.0.1:{port}"
        admin = {"endpoint_url": endpoint, "region_name": "us-east-1",
                 "aws_access_key_id": "AKIAADMIN", "aws_secret_access_key": "admin"}
        boto3.client("s3", **admin).create_bucket(Bucket="locked")
        iam = boto3.client("iam", **admin)
        iam.create_user(UserName="nobody")
        key = iam.create_access_key(UserName="nobody")["AccessKey"]
        yield AuthServer(endpoint, "locked", key["AccessKeyId"], key["SecretAccessKey"])
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="session")
def moto_server():
    server = MotoServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def moto_endpoint(moto_server) -> str:
    return moto_server.endpoint


@dataclass
class S3Kit:
    endpoint: str
    bucket: str

    def url(self, prefix: str = "vault") -> str:
        return f"s3://{self.bucket}/{prefix}" if prefix else f"s3://{self.bucket}"

    def settings(self, **changes) -> S3Settings:
        return S3Settings(endpoint=self.endpoint, **changes)

    def client(self):
        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY)

    def keys(self, prefix: str = "") -> dict[str, int]:
        """key -> size of every object in the bucket under `prefix`."""
        found = {}
        for page in self.client().get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix):
            for obj in page.get("Contents", ()):
                found[obj["Key"]] = obj["Size"]
        return found


def set_credentials(monkeypatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    # Never ask an EC2 metadata service for credentials (a slow timeout off EC2).
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE",
                "AWS_SHARED_CREDENTIALS_FILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def s3(moto_endpoint, monkeypatch) -> S3Kit:
    """A new, empty bucket on the session's moto server, and credentials for it."""
    set_credentials(monkeypatch)
    kit = S3Kit(moto_endpoint, f"btfs-{uuid.uuid4().hex[:16]}")
    kit.client().create_bucket(Bucket=kit.bucket)
    return kit
