"""A fault-injecting HTTP/1.1 relay for the S3 tests: it sits between btfs (boto3) and an S3
server on 127.0.0.1 (moto) and, when a test asks, breaks exchanges the way a flaky network
or an overloaded store does.

    with FaultRelay("http://127.0.0.1:PORT") as relay:  # the server behind it
        endpoint = relay.endpoint              # give this to boto3 / btfs
        relay.slowdown(3, method="PUT")        # the next 3 PUTs get 503 SlowDown
        relay.reset(when="after", path="/packs/")  # forwarded, then the client sees an RST
        relay.stall(30, method="GET")          # the response is held back for 30 s
        relay.truncate(method="GET")           # headers and half the body, then close
        relay.outage(); ...; relay.restore()   # every connection reset until restored
        relay.outage(after=3, method="PUT")    # 3 PUTs pass, the 4th starts an outage
        relay.injected()["slowdown"], relay.count(method="PUT", status=200)

A fault rule applies to the next `times` requests that match its method (exact, case
insensitive) and its path (a regex searched in the request target, query included), after
letting `after` matching requests pass it (on to the rules added after it); the first
pending rule that matches a request is used, in the order they were added. Rules, outages
and counters may be changed from any thread at any time.

How it works: one accept thread, one thread per client connection, and per client
connection one upstream connection reused while both sides keep it alive. It understands
just enough HTTP/1.1 to find where a message ends (request line, headers, Content-Length or
chunked bodies, bodies that end at close) and streams bodies through in pieces, never whole.
`Expect: 100-continue` is answered by the relay itself and not passed on, so a fault that
answers in the relay's name sees the body in the ordinary way.

Every blocking socket call polls (POLL seconds) so that stop() and outage() reach a thread
that waits for a client, for the upstream or in a stall: the relay never holds a test up at
teardown. It must never change a byte it forwards: a fault breaks an exchange, it does not
corrupt one (a test of corruption would be a different tool).
"""

from __future__ import annotations

import itertools
import re
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlparse

POLL = 0.05  # seconds between checks of stop/outage in every blocking call
MAX_HEAD = 64 * 1024  # a request or response head longer than this is a protocol error
PIECE = 64 * 1024  # bodies are relayed in pieces of at most this many bytes

SLOWDOWN = (503, "SlowDown", "Please reduce your request rate.")


class _Abort(Exception):
    """The relay is stopping or in an outage: reset the client connection."""


class _Closed(Exception):
    """A peer closed its side (or reset it) where a message was expected."""


@dataclass
class _Rule:
    kind: str  # "error", "reset", "stall", "truncate", "outage"
    times: int  # requests it still applies to
    method: str | None
    path: re.Pattern | None
    after: int = 0  # matching requests still to let through before it applies
    status: int = 0  # error
    code: str = ""  # error
    message: str = ""  # error
    when: str = "before"  # reset: "before" forwarding or "after" the upstream answered
    seconds: float = 0.0  # stall
    keep: float = 0.5  # truncate: a fraction (< 1) or a number of body bytes to send
    side: str = "response"  # truncate: the response's body or the request's
    mode: str = "reset"  # outage: "reset" or "refuse"

    def matches(self, method: str, target: str) -> bool:
        return (self.times > 0
                and (self.method is None or self.method == method)
                and (self.path is None or self.path.search(target) is not None))


@dataclass(frozen=True)
class Exchange:
    """One request the relay saw: what happened to it."""

    method: str
    target: str
    status: int | None  # the status the client was sent (None: it got no answer)
    fault: str | None  # the fault injected, if any ("slowdown", "reset_after", ...)
    upstream: bool  # whether the request reached the upstream server
    headers: tuple[tuple[str, str], ...] = ()  # the request's, as the client sent them

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), None)


class _Stream:
    """A socket read through a buffer; every wait polls the relay's abort check."""

    def __init__(self, sock: socket.socket, check: Callable[[], None]):
        self.sock = sock
        self.check = check
        self.buf = bytearray()
        sock.settimeout(POLL)

    def _fill(self) -> None:
        while True:
            self.check()
            try:
                data = self.sock.recv(PIECE)
            except TimeoutError:
                continue
            except OSError as e:
                raise _Closed(str(e)) from None
            if not data:
                raise _Closed("end of stream")
            self.buf += data
            return

    def read_head(self, idle_ok: bool = False) -> bytes | None:
        """Bytes up to and including the blank line ending a head. None if the peer
        closed cleanly before sending anything and `idle_ok`."""
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end >= 0:
                head = bytes(self.buf[:end + 4])
                del self.buf[:end + 4]
                return head
            if len(self.buf) > MAX_HEAD:
                raise _Closed("head too long")
            try:
                self._fill()
            except _Closed:
                if idle_ok and not self.buf:
                    return None
                raise

    def read_line(self) -> bytes:
        while True:
            end = self.buf.find(b"\r\n")
            if end >= 0:
                line = bytes(self.buf[:end + 2])
                del self.buf[:end + 2]
                return line
            if len(self.buf) > MAX_HEAD:
                raise _Closed("line too long")
            self._fill()

    def read_some(self, limit: int) -> bytes:
        """Up to `limit` bytes (at least one); _Closed at the end of the stream."""
        if not self.buf:
            self._fill()
        data = bytes(self.buf[:limit])
        del self.buf[:limit]
        return data


def _send(sock: socket.socket, data: bytes, check: Callable[[], None]) -> None:
    """sendall that polls `check` (sendall's timeout hides how much was sent)."""
    with memoryview(data) as view:
        done = 0
        while done < len(view):
            check()
            try:
                done += sock.send(view[done:])
            except TimeoutError:
                continue
            except OSError as e:
                raise _Closed(str(e)) from None


def _reset(sock: socket.socket) -> None:
    """Close with an RST, as a crashed peer or a middlebox dropping the flow would."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


@dataclass
class _Head:
    first: str  # the request or status line
    headers: list[tuple[str, str]]

    @classmethod
    def parse(cls, raw: bytes) -> _Head:
        lines = raw.decode("latin-1").split("\r\n")
        headers = []
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers.append((name.strip(), value.strip()))
        return cls(lines[0], headers)

    def get(self, name: str) -> str | None:
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), None)

    def without(self, name: str) -> _Head:
        name = name.lower()
        return _Head(self.first, [(k, v) for k, v in self.headers if k.lower() != name])

    def encode(self) -> bytes:
        return ("\r\n".join([self.first, *(f"{k}: {v}" for k, v in self.headers)])
                + "\r\n\r\n").encode("latin-1")

    def chunked(self) -> bool:
        return "chunked" in (self.get("Transfer-Encoding") or "").lower()

    def length(self) -> int | None:
        value = self.get("Content-Length")
        return int(value) if value is not None else None

    def closes(self) -> bool:
        conn = (self.get("Connection") or "").lower()
        return "close" in conn or (self.first.startswith("HTTP/1.0")
                                   and "keep-alive" not in conn)


def _relay_body(src: _Stream, head: _Head, out: Callable[[bytes], None], *,
                until_close: bool = False, budget: int | None = None) -> bool:
    """Pass the body that follows `head` from `src` to `out`, framing included (chunk
    lines travel as they came). With a `budget`, stop once that many bytes went out.
    Returns False if the budget cut the body short."""
    sent = 0

    def emit(data: bytes) -> bool:
        nonlocal sent
        if budget is not None and sent + len(data) > budget:
            out(data[:budget - sent])
            sent = budget
            return False
        out(data)
        sent += len(data)
        return True

    if head.chunked():
        while True:
            line = src.read_line()
            if not emit(line):
                return False
            size = int(line.split(b";")[0].strip(), 16)
            if size == 0:  # trailers, then the blank line
                while True:
                    line = src.read_line()
                    if not emit(line):
                        return False
                    if line == b"\r\n":
                        return True
            left = size + 2  # the chunk and its CRLF
            while left:
                data = src.read_some(min(left, PIECE))
                left -= len(data)
                if not emit(data):
                    return False
    length = head.length()
    if length is None and until_close:
        while True:
            try:
                data = src.read_some(PIECE)
            except _Closed:
                return True
            if not emit(data):
                return False
    left = length or 0
    while left:
        data = src.read_some(min(left, PIECE))
        left -= len(data)
        if not emit(data):
            return False
    return True


def _body_size(head: _Head) -> int | None:
    return None if head.chunked() else head.length()


def error_body(code: str, message: str, request_id: str) -> bytes:
    """An S3 error document, as boto3 parses it into ClientError's Code and Message."""
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{code}</Code><Message>{message}</Message>"
            f"<RequestId>{request_id}</RequestId></Error>").encode()


class FaultRelay:
    """The relay; see the module docstring. Start it with `with` (or start()/stop())."""

    def __init__(self, upstream: str | tuple[str, int], host: str = "127.0.0.1"):
        """`upstream`: the server's "http://host:port" or (host, port)."""
        if isinstance(upstream, str):
            parsed = urlparse(upstream)
            upstream = (parsed.hostname, parsed.port or 80)
        self.upstream = upstream
        self.host = host
        self.port = 0
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # the listener opened or closed
        self._rules: list[_Rule] = []
        self._down: str | None = None  # None, "reset" or "refuse"
        self._stopping = False
        self._injected: Counter[str] = Counter()
        self._exchanges: list[Exchange] = []
        self._threads: set[threading.Thread] = set()
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None
        self._ids = itertools.count(1)

    # ---- lifetime ----------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> FaultRelay:
        self._listen()
        self._acceptor = threading.Thread(target=self._accept_loop, name="faultrelay-accept",
                                          daemon=True)
        self._acceptor.start()
        return self

    def stop(self) -> None:
        """Reset every connection and join every thread (within a few POLLs)."""
        with self._lock:
            self._stopping = True
        if self._acceptor is not None:
            self._acceptor.join()
        with self._lock:
            threads = list(self._threads)
        for t in threads:
            t.join()

    def __enter__(self) -> FaultRelay:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- what a test asks for ----------------------------------------------------------

    def _add(self, rule: _Rule) -> None:
        with self._lock:
            self._rules.append(rule)

    @staticmethod
    def _matcher(method: str | None, path: str | None, after: int = 0) -> dict:
        return {"method": method.upper() if method else None,
                "path": re.compile(path) if path else None, "after": after}

    def slowdown(self, times: int = 1, *, method: str | None = None,
                 path: str | None = None, after: int = 0) -> None:
        """Answer the next `times` matching requests with 503 SlowDown, not forwarded."""
        status, code, message = SLOWDOWN
        self.error(status, code, message, times, method=method, path=path, after=after)

    def error(self, status: int, code: str, message: str, times: int = 1, *,
              method: str | None = None, path: str | None = None, after: int = 0) -> None:
        """Answer the next `times` matching requests with this S3 error, not forwarded
        (e.g. 403 AccessDenied, 500 InternalError)."""
        self._add(_Rule("error", times, status=status, code=code, message=message,
                        **self._matcher(method, path, after)))

    def reset(self, times: int = 1, *, when: str = "before", method: str | None = None,
              path: str | None = None, after: int = 0) -> None:
        """Reset the client's connection on the next `times` matching requests: "before"
        forwarding (the server never sees it) or "after" the server answered (a PUT has
        landed, yet the client sees no answer)."""
        if when not in ("before", "after"):
            raise ValueError(f"when={when!r}: 'before' or 'after'")
        self._add(_Rule("reset", times, when=when, **self._matcher(method, path, after)))

    def stall(self, seconds: float, times: int = 1, *, method: str | None = None,
              path: str | None = None, after: int = 0) -> None:
        """Hold the server's answer to the next `times` matching requests for `seconds`
        before relaying it (the request itself is forwarded at once)."""
        self._add(_Rule("stall", times, seconds=seconds, **self._matcher(method, path, after)))

    def truncate(self, times: int = 1, *, keep: float = 0.5, side: str = "response",
                 method: str | None = None, path: str | None = None, after: int = 0) -> None:
        """Cut a body short, then close: side="response" sends the client the head and
        `keep` of the body (a fraction if < 1, else bytes); side="request" forwards the
        head and that part of the request body to the server, closes it, and resets the
        client."""
        if side not in ("response", "request"):
            raise ValueError(f"side={side!r}: 'response' or 'request'")
        self._add(_Rule("truncate", times, keep=keep, side=side,
                        **self._matcher(method, path, after)))

    def outage(self, mode: str = "reset", *, after: int | None = None,
               method: str | None = None, path: str | None = None) -> None:
        """Until restore(): reset every connection, open or new ("reset"), or refuse new
        connections and reset open ones ("refuse"). Now (returning once it is in force),
        or with `after`, once that many requests matching method/path went through: the
        next one starts it (and is reset itself), in the middle of whatever runs."""
        if mode not in ("reset", "refuse"):
            raise ValueError(f"mode={mode!r}: 'reset' or 'refuse'")
        if after is not None:
            self._add(_Rule("outage", 1, mode=mode, **self._matcher(method, path, after)))
            return
        with self._changed:
            self._start_outage(mode)
            # The accept thread closes (and reopens) the listening socket: a socket closed
            # while another thread waits in accept() on it keeps listening until that wait
            # ends, and would let a connection in.
            self._changed.wait_for(lambda: mode == "reset" or self._listener is None, 5)

    def _start_outage(self, mode: str) -> None:
        """Holding the lock."""
        self._down = mode
        self._injected["outage"] += 1

    def outage_active(self) -> bool:
        return self._down is not None

    def restore(self) -> None:
        with self._changed:
            self._down = None
            self._changed.wait_for(lambda: self._listener is not None, 5)

    def clear(self) -> None:
        """Drop every pending fault rule (counters stay)."""
        with self._lock:
            self._rules.clear()

    # ---- what a test reads -------------------------------------------------------------

    def injected(self) -> Counter[str]:
        """How many of each fault were injected: slowdown (or error_<status> for other
        errors), reset_before, reset_after, stall, truncate_response, truncate_request,
        outage (outages started) and outage_reset (connections reset by an outage)."""
        with self._lock:
            return Counter(self._injected)

    def pending(self) -> int:
        """Fault injections still to come."""
        with self._lock:
            return sum(r.times for r in self._rules)

    def exchanges(self) -> list[Exchange]:
        with self._lock:
            return list(self._exchanges)

    def count(self, *, method: str | None = None, path: str | None = None,
              status: int | None = None, upstream: bool = True) -> int:
        """Requests that reached the server (upstream=True) matching method, path (regex,
        searched) and the status the client got (None: any)."""
        rx = re.compile(path) if path else None
        return sum(1 for e in self.exchanges()
                   if e.upstream == upstream
                   and (method is None or e.method == method.upper())
                   and (rx is None or rx.search(e.target))
                   and (status is None or e.status == status))

    # ---- the machinery -----------------------------------------------------------------

    def _check(self) -> None:
        if self._stopping or self._down:
            raise _Abort()

    def _take(self, method: str, target: str) -> _Rule | None:
        with self._lock:
            for rule in self._rules:
                if rule.matches(method, target):
                    if rule.after:
                        rule.after -= 1
                        continue
                    rule.times -= 1
                    return rule
        return None

    def _note(self, kind: str) -> None:
        with self._lock:
            self._injected[kind] += 1

    def _record(self, exchange: Exchange) -> None:
        with self._lock:
            self._exchanges.append(exchange)

    def _listen(self) -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((self.host, self.port))  # port 0 the first time: a free one
        s.listen(64)
        s.settimeout(POLL)
        self.port = s.getsockname()[1]
        with self._changed:
            self._listener = s
            self._changed.notify_all()

    def _close_listener(self) -> None:
        with self._changed:
            s, self._listener = self._listener, None
            self._changed.notify_all()
        if s is not None:
            s.close()

    def _accept_loop(self) -> None:
        """Accept clients; close the listening socket while refusing, reopen it after
        (only this thread touches it once started)."""
        try:
            while not self._stopping:
                if self._down == "refuse":
                    self._close_listener()
                    time.sleep(POLL)
                    continue
                if self._listener is None:
                    self._listen()
                try:
                    client, _ = self._listener.accept()
                except (TimeoutError, OSError):
                    continue
                if self._down:
                    self._note("outage_reset")
                    _reset(client)
                    continue
                t = threading.Thread(target=self._serve, args=(client,), daemon=True,
                                     name=f"faultrelay-conn-{next(self._ids)}")
                with self._lock:
                    self._threads.add(t)
                t.start()
        finally:
            self._close_listener()

    def _serve(self, client: socket.socket) -> None:
        conn = _Connection(self, client)
        try:
            while conn.exchange():
                pass
        except _Abort:
            if self._down:
                self._note("outage_reset")
            _reset(client)
        except _Closed:
            pass
        finally:
            conn.close()
            with self._lock:
                self._threads.discard(threading.current_thread())


class _Connection:
    """One client connection and the upstream connection that serves it."""

    def __init__(self, relay: FaultRelay, client: socket.socket):
        self.relay = relay
        self.client = client
        self.cin = _Stream(client, relay._check)
        self.up: socket.socket | None = None
        self.up_in: _Stream | None = None

    def close(self) -> None:
        self.client.close()
        self._drop_upstream()

    def _drop_upstream(self) -> None:
        if self.up is not None:
            self.up.close()
        self.up = self.up_in = None

    def to_client(self, data: bytes) -> None:
        _send(self.client, data, self.relay._check)

    def to_up(self, data: bytes) -> None:
        _send(self.up, data, self.relay._check)

    def _reset(self) -> None:
        _reset(self.client)
        raise _Closed("reset by the relay")

    def exchange(self) -> bool:
        """Relay (or break) one request; whether the client connection stays open."""
        relay = self.relay
        try:
            raw = self.cin.read_head(idle_ok=True)
        except _Closed:
            return False
        if raw is None:
            return False
        req = _Head.parse(raw)
        method, target = (req.first.split(" ") + ["", ""])[:2]
        rule = relay._take(method, target)
        kind = rule.kind if rule else None

        def record(status: int | None, fault: str | None, upstream: bool) -> None:
            relay._record(Exchange(method, target, status, fault, upstream, tuple(req.headers)))

        if kind == "outage":
            with relay._lock:
                relay._start_outage(rule.mode)
            relay._note("outage_reset")
            record(None, "outage", False)
            self._reset()
        if kind == "reset" and rule.when == "before":
            relay._note("reset_before")
            record(None, "reset_before", False)
            self._reset()
        if (req.get("Expect") or "").lower() == "100-continue":
            self.to_client(b"HTTP/1.1 100 Continue\r\n\r\n")
            req = req.without("Expect")

        if kind == "error":
            _relay_body(self.cin, req, lambda _data: None)  # read and dropped
            fault = "slowdown" if rule.code == "SlowDown" else f"error_{rule.status}"
            relay._note(fault)
            rid = f"faultrelay-{next(relay._ids)}"
            body = b"" if method == "HEAD" else error_body(rule.code, rule.message, rid)
            head = (f"HTTP/1.1 {rule.status} {rule.code}\r\n"
                    "Content-Type: application/xml\r\n"
                    f"Content-Length: {len(body)}\r\nx-amz-request-id: {rid}\r\n\r\n")
            self.to_client(head.encode() + body)
            record(rule.status, fault, False)
            return not req.closes()

        if self.up is None:
            try:
                self.up = socket.create_connection(relay.upstream, timeout=5)
            except OSError:
                record(None, None, False)
                self._reset()
            self.up.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.up_in = _Stream(self.up, relay._check)

        if kind == "truncate" and rule.side == "request":
            self.to_up(req.encode())
            _relay_body(self.cin, req, self.to_up, budget=_budget(rule, req))
            relay._note("truncate_request")
            record(None, "truncate_request", True)
            self._drop_upstream()  # the server sees the connection close mid-body
            self._reset()

        self.to_up(req.encode())
        _relay_body(self.cin, req, self.to_up)
        while True:
            resp = _Head.parse(self.up_in.read_head())
            status = int(resp.first.split(" ")[1])
            if status >= 200:  # an interim 1xx answer is not relayed: Expect was removed
                break
        no_body = method == "HEAD" or status in (204, 304)
        up_closes = resp.closes() or (not no_body and resp.length() is None
                                      and not resp.chunked())

        if kind == "stall":
            relay._note("stall")
            deadline = time.monotonic() + rule.seconds
            while time.monotonic() < deadline:
                relay._check()
                time.sleep(POLL)

        if kind == "reset" and rule.when == "after":
            if not no_body:
                _relay_body(self.up_in, resp, lambda _data: None, until_close=up_closes)
            relay._note("reset_after")
            record(None, "reset_after", True)
            if up_closes:
                self._drop_upstream()
            self._reset()

        if kind == "truncate" and rule.side == "response":
            self.to_client(resp.encode())
            if not no_body:
                _relay_body(self.up_in, resp, self.to_client, until_close=up_closes,
                            budget=_budget(rule, resp))
            relay._note("truncate_response")
            record(status, "truncate_response", True)
            self._drop_upstream()  # the rest of its body is still unread
            return False

        self.to_client(resp.encode())
        if not no_body:
            _relay_body(self.up_in, resp, self.to_client, until_close=up_closes)
        record(status, kind, True)
        if up_closes:
            self._drop_upstream()
        return not (req.closes() or up_closes)


def _budget(rule: _Rule, head: _Head) -> int:
    """How many body bytes a truncate rule lets through: a fraction of a sized body, or
    a number of bytes."""
    size = _body_size(head)
    if rule.keep < 1:
        return int(rule.keep * size) if size else 0
    return int(rule.keep)
