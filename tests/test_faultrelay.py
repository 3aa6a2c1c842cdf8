"""The fault relay's own tests: a boto3 client (its retries off) talks to moto's server
through tests/faultrelay.py, and each fault is seen by the client as it would see the real
thing, while what reached the server is checked behind the relay's back."""

from __future__ import annotations

import http.client
import http.server
import threading
import time
import uuid

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    EndpointConnectionError,
    HTTPClientError,
    ReadTimeoutError,
    ResponseStreamingError,
)
from faultrelay import FaultRelay
from urllib3.exceptions import ProtocolError

MiB = 1 << 20
# What a client sees when its connection is reset: during a request, or (a new connection
# reset as soon as it is accepted) while urllib3 still counts it as being set up.
NETWORK_ERRORS = (HTTPClientError, EndpointConnectionError)


def client(endpoint: str, read_timeout: float = 10):
    return boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1",
        aws_access_key_id="testing", aws_secret_access_key="testing",
        config=Config(retries={"total_max_attempts": 1}, connect_timeout=2,
                      read_timeout=read_timeout, s3={"addressing_style": "path"}))


@pytest.fixture
def relay(moto_server):
    with FaultRelay(moto_server.endpoint) as r:
        yield r


@pytest.fixture
def direct(moto_server):
    """A client straight to moto, and a fresh bucket (the relay's client uses it too)."""
    c = client(moto_server.endpoint)
    bucket = f"relay-{uuid.uuid4().hex[:12]}"
    c.create_bucket(Bucket=bucket)
    return c, bucket


def exists(c, bucket: str, key: str) -> bool:
    try:
        c.head_object(Bucket=bucket, Key=key)
        return True
    except ClientError as e:
        assert e.response["Error"]["Code"] in ("404", "NoSuchKey")
        return False


def relay_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("faultrelay")]


def test_relays_every_kind_of_exchange_unchanged(relay, direct):
    d, bucket = direct
    c = client(relay.endpoint)
    body = bytes(range(256)) * (5 * MiB // 256)
    c.put_object(Bucket=bucket, Key="a/big", Body=body)
    c.put_object(Bucket=bucket, Key="a/empty", Body=b"")
    assert d.get_object(Bucket=bucket, Key="a/big")["Body"].read() == body
    assert c.get_object(Bucket=bucket, Key="a/big")["Body"].read() == body
    got = c.get_object(Bucket=bucket, Key="a/big", Range="bytes=1000-1999")["Body"].read()
    assert got == body[1000:2000]
    assert c.head_object(Bucket=bucket, Key="a/big")["ContentLength"] == len(body)
    assert not exists(c, bucket, "a/none")
    keys = [o["Key"] for o in c.list_objects_v2(Bucket=bucket, Prefix="a/")["Contents"]]
    assert keys == ["a/big", "a/empty"]
    c.delete_object(Bucket=bucket, Key="a/empty")
    assert not exists(d, bucket, "a/empty")
    assert relay.injected() == {}
    assert relay.count(method="PUT", status=200) == 2
    assert relay.count(method="GET", path=r"/a/big") == 2


class _EchoHandler(http.server.BaseHTTPRequestHandler):
    """Answers a request with its own body, chunked both ways (moto neither reads chunked
    request bodies nor sends chunked answers, so it cannot show the relay handles them)."""

    protocol_version = "HTTP/1.1"

    def do_PUT(self) -> None:
        body = b""
        while True:
            size = int(self.rfile.readline().split(b";")[0], 16)
            if size == 0:
                self.rfile.readline()
                break
            body += self.rfile.read(size)
            self.rfile.readline()
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for piece in (body[:10], body[10:]):
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        self.wfile.write(b"0\r\n\r\n")

    def log_message(self, *args) -> None:
        pass


def test_chunked_bodies_and_keep_alive():
    """Chunked bodies are relayed with their framing both ways, and requests share one
    connection to the relay and one from it."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _EchoHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with FaultRelay(server.server_address[:2]) as relay:
            conn = http.client.HTTPConnection("127.0.0.1", relay.port, timeout=10)
            try:
                socks = set()
                for i in range(3):
                    conn.request("PUT", f"/echo/{i}", body=iter([b"abc" * 1000, b"%d" % i]),
                                 encode_chunked=True)
                    resp = conn.getresponse()
                    assert resp.getheader("Transfer-Encoding") == "chunked"
                    assert resp.read() == b"abc" * 1000 + b"%d" % i
                    socks.add(conn.sock)
                assert len(socks) == 1
            finally:
                conn.close()
            assert relay.count(method="PUT", status=200) == 3
    finally:
        server.shutdown()
        server.server_close()


def test_slowdown_for_the_next_n_matching_requests(relay, direct):
    d, bucket = direct
    c = client(relay.endpoint)
    d.put_object(Bucket=bucket, Key="k", Body=b"x")
    relay.slowdown(2, method="PUT", path=r"/packs/")
    c.put_object(Bucket=bucket, Key="other", Body=b"y")  # not under packs/: unaffected
    assert c.get_object(Bucket=bucket, Key="k")["Body"].read() == b"x"  # not a PUT
    for _ in range(2):
        with pytest.raises(ClientError) as err:
            c.put_object(Bucket=bucket, Key="packs/p", Body=b"z" * 100_000)
        assert err.value.response["Error"]["Code"] == "SlowDown"
        assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    assert not exists(d, bucket, "packs/p")
    c.put_object(Bucket=bucket, Key="packs/p", Body=b"z")  # the burst is over
    assert exists(d, bucket, "packs/p")
    assert relay.injected()["slowdown"] == 2
    assert relay.pending() == 0
    assert relay.count(method="PUT", path=r"/packs/", upstream=False) == 2


def test_permanent_error(relay, direct):
    d, bucket = direct
    c = client(relay.endpoint)
    relay.error(403, "AccessDenied", "Access Denied", method="GET")
    with pytest.raises(ClientError) as err:
        c.get_object(Bucket=bucket, Key="k")
    assert err.value.response["Error"]["Code"] == "AccessDenied"
    relay.error(403, "AccessDenied", "Access Denied", method="HEAD")
    with pytest.raises(ClientError) as err:
        c.head_object(Bucket=bucket, Key="k")
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert relay.injected()["error_403"] == 2


def test_reset_before_forwarding(relay, direct):
    d, bucket = direct
    c = client(relay.endpoint)
    relay.reset(method="PUT")
    with pytest.raises(HTTPClientError):
        c.put_object(Bucket=bucket, Key="r", Body=b"r" * 1000)
    assert not exists(d, bucket, "r")
    c.put_object(Bucket=bucket, Key="r", Body=b"r" * 1000)  # a new connection works
    assert exists(d, bucket, "r")
    assert relay.injected()["reset_before"] == 1


def test_reset_after_the_server_answered(relay, direct):
    """The PUT lands, yet the client never hears so: the case a retry must survive."""
    d, bucket = direct
    c = client(relay.endpoint)
    relay.reset(when="after", method="PUT")
    with pytest.raises(HTTPClientError):
        c.put_object(Bucket=bucket, Key="landed", Body=b"l" * 1000)
    assert d.get_object(Bucket=bucket, Key="landed")["Body"].read() == b"l" * 1000
    relay.reset(when="after", method="GET")
    with pytest.raises(HTTPClientError):
        c.get_object(Bucket=bucket, Key="landed")
    assert relay.injected()["reset_after"] == 2
    assert relay.count(method="PUT", status=None) == 1


def test_truncated_response_body(relay, direct):
    d, bucket = direct
    c = client(relay.endpoint)
    body = b"t" * (2 * MiB)
    d.put_object(Bucket=bucket, Key="t", Body=body)
    relay.truncate(method="GET", keep=0.25)
    resp = c.get_object(Bucket=bucket, Key="t")
    assert resp["ContentLength"] == len(body)  # the head arrived whole
    with pytest.raises((ResponseStreamingError, ProtocolError)):
        resp["Body"].read()
    assert c.get_object(Bucket=bucket, Key="t")["Body"].read() == body
    relay.truncate(method="GET", keep=100)
    resp = c.get_object(Bucket=bucket, Key="t", Range="bytes=0-999")
    with pytest.raises((ResponseStreamingError, ProtocolError)):
        resp["Body"].read()
    assert relay.injected()["truncate_response"] == 2


def test_truncated_request_body_never_lands(relay, direct):
    d, bucket = direct
    c = client(relay.endpoint)
    relay.truncate(method="PUT", side="request")
    with pytest.raises(HTTPClientError):
        c.put_object(Bucket=bucket, Key="half", Body=b"h" * (4 * MiB))
    assert not exists(d, bucket, "half")
    assert relay.injected()["truncate_request"] == 1


def test_stall_makes_the_read_timeout_fire_and_does_not_hold_up_stop(moto_server, direct):
    d, bucket = direct
    d.put_object(Bucket=bucket, Key="s", Body=b"s")
    relay = FaultRelay(moto_server.endpoint).start()
    try:
        c = client(relay.endpoint, read_timeout=1)
        relay.stall(30, method="GET")
        t0 = time.monotonic()
        with pytest.raises(ReadTimeoutError):
            c.get_object(Bucket=bucket, Key="s")
        assert time.monotonic() - t0 < 5
        assert relay.injected()["stall"] == 1
        # A second stall, and the relay is stopped while it holds the answer.
        relay.stall(30, method="GET")
        waiter = threading.Thread(target=lambda: pytest.raises(
            HTTPClientError, client(relay.endpoint, read_timeout=60).get_object,
            Bucket=bucket, Key="s"))
        waiter.start()
        deadline = time.monotonic() + 5
        while relay.injected()["stall"] < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert relay.injected()["stall"] == 2
    finally:
        t0 = time.monotonic()
        relay.stop()
        stopped = time.monotonic() - t0
    waiter.join(5)
    assert not waiter.is_alive()
    assert stopped < 2
    assert relay_threads() == []


def test_outage_resets_everything_until_restored(relay, direct):
    d, bucket = direct
    c = client(relay.endpoint)
    c.put_object(Bucket=bucket, Key="before", Body=b"b")  # leaves a kept-alive connection
    relay.outage()
    for _ in range(3):
        with pytest.raises(NETWORK_ERRORS):
            c.put_object(Bucket=bucket, Key="during", Body=b"d")
    assert not exists(d, bucket, "during")
    relay.restore()
    c.put_object(Bucket=bucket, Key="after", Body=b"a")
    assert exists(d, bucket, "after")
    assert relay.injected()["outage"] == 1
    assert relay.injected()["outage_reset"] >= 3


def test_outage_starts_after_n_matching_requests(relay, direct):
    d, bucket = direct
    c = client(relay.endpoint)
    relay.outage(after=2, method="PUT", path=r"/p/")
    c.put_object(Bucket=bucket, Key="other", Body=b"o")  # does not match: not counted
    c.put_object(Bucket=bucket, Key="p/1", Body=b"1")
    c.put_object(Bucket=bucket, Key="p/2", Body=b"2")
    assert not relay.outage_active()
    with pytest.raises(NETWORK_ERRORS):
        c.put_object(Bucket=bucket, Key="p/3", Body=b"3")
    assert relay.outage_active()
    with pytest.raises(NETWORK_ERRORS):
        c.get_object(Bucket=bucket, Key="p/1")
    relay.restore()
    assert c.get_object(Bucket=bucket, Key="p/1")["Body"].read() == b"1"
    assert [o["Key"] for o in d.list_objects_v2(Bucket=bucket)["Contents"]] == [
        "other", "p/1", "p/2"]


def test_outage_refusing_connections(relay, direct):
    d, bucket = direct
    c = client(relay.endpoint)
    relay.outage("refuse")
    with pytest.raises(EndpointConnectionError):
        c.put_object(Bucket=bucket, Key="refused", Body=b"r")
    relay.restore()
    c.put_object(Bucket=bucket, Key="refused", Body=b"r")
    assert exists(d, bucket, "refused")


def test_rules_apply_in_order_across_threads(relay, direct):
    """Faults added from another thread while requests run in parallel: each rule is
    used exactly as often as it says, whatever the interleaving."""
    d, bucket = direct
    relay.slowdown(5, method="PUT")
    relay.reset(3, when="after", method="PUT")
    outcomes: list[str] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        c = client(relay.endpoint)
        for i in range(4):
            try:
                c.put_object(Bucket=bucket, Key=f"w{n}-{i}", Body=b"w")
                kind = "ok"
            except ClientError:
                kind = "slowdown"
            except HTTPClientError:
                kind = "reset"
            with lock:
                outcomes.append(kind)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes).count("slowdown") == 5
    assert outcomes.count("reset") == 3
    assert outcomes.count("ok") == 8
    assert relay.injected() == {"slowdown": 5, "reset_after": 3}
    landed = d.list_objects_v2(Bucket=bucket)["KeyCount"]
    assert landed == 8 + 3  # a reset after forwarding still landed


def test_stop_joins_every_thread(moto_server, direct):
    d, bucket = direct
    with FaultRelay(moto_server.endpoint) as relay:
        c = client(relay.endpoint)
        for i in range(3):
            c.put_object(Bucket=bucket, Key=f"j{i}", Body=b"j")
        assert relay_threads()
    assert relay_threads() == []
