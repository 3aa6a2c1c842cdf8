"""The status page's JSON API against the real server on 127.0.0.1 (httpx): the daemon's
state and controls, search, versions, tree, downloads byte for byte, and the refusals:
no or a wrong token -> 401 with nothing done, a foreign Host -> 403."""

from __future__ import annotations

import hashlib
import os
import stat

import httpx
import pytest
from helpers import wait_for

from btfs.web.access import token_file


def get(w, url_path, **params):
    r = httpx.get(w.base + url_path, params=params, headers={"X-Btfs-Token": w.token},
                  timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def post(w, path, **kwargs):
    return httpx.post(w.base + path, headers={"X-Btfs-Token": w.token}, timeout=30, **kwargs)


def test_status_shows_the_daemon_and_the_vault(web_daemon):
    s = get(web_daemon, "/api/status")
    assert s["state"] == "watching" and s["pid"] == web_daemon.proc.pid
    assert s["tracked"] == [str(web_daemon.src)]
    assert s["vault"]["backups"] == 2 and s["vault"]["vault_bytes"] > 3 << 20
    assert s["vault"]["dedup_ratio"] >= 1
    assert s["web"] == web_daemon.base + "/"
    assert s["failures"] == []


def test_pause_resume_and_backup_now_act_on_the_daemon(web_daemon):
    w = web_daemon
    assert post(w, "/api/pause").json()["state"] == "paused"
    assert w.status()["state"] == "paused"  # as `btfs daemon status` sees it
    assert post(w, "/api/resume").json()["state"] != "paused"
    wait_for(lambda: w.status()["state"] == "watching", 10, "resume")
    (w.src / "docs" / "new.txt").write_text("new")
    before = get(w, "/api/backups")
    assert post(w, "/api/backup-now").status_code == 200
    wait_for(lambda: len(get(w, "/api/backups")) == len(before) + 1, 30, "the backup")
    newest = get(w, "/api/backups")[0]
    assert newest["state"] == "complete" and newest["changed_files"] >= 1


def test_search_finds_every_version_and_downloads_each(web_daemon):
    w = web_daemon
    hits = get(w, "/api/search", q="note")["hits"]  # a part of a name
    assert [h["path"] for h in hits] == [str(w.src / "docs" / "notes.txt")]
    versions = hits[0]["versions"]
    assert [v["size"] for v in versions] == [len(w.old), len(w.new)]
    assert not any(v["deleted"] for v in versions)
    for v, content in zip(versions, (w.old, w.new), strict=True):
        assert v["digest"] and v["type"] == "file"
        with httpx.stream("GET", w.base + "/api/download",
                          params={"version": v["version"], "token": w.token}) as r:
            assert r.status_code == 200
            assert "notes.txt" in r.headers["content-disposition"]
            got = hashlib.sha256()
            size = 0
            for part in r.iter_bytes():
                got.update(part)
                size += len(part)
        assert size == len(content) and got.digest() == hashlib.sha256(content).digest()
    assert [h["path"] for h in get(w, "/api/search", q="*.odt")["hits"]] == [
        str(w.src / "docs" / "plan.odt")]
    assert get(w, "/api/search", q="*.ODT")["hits"] == []  # a glob is exact
    assert get(w, "/api/versions", path=str(w.src / "docs" / "notes.txt"))["versions"] == versions


def test_tree_lists_a_backup_as_it_was(web_daemon):
    w = web_daemon
    first = get(w, "/api/backups")[-1]
    tree = get(w, "/api/tree", backup=first["id"], path=str(w.src / "docs"))
    entries = {e["name"]: e for e in tree["entries"]}
    assert set(entries) == {"notes.txt", "plan.odt"}
    assert entries["notes.txt"]["size"] == len(w.old)
    r = httpx.get(w.base + "/api/download", params={"version": entries["notes.txt"]["version"]},
                  headers={"X-Btfs-Token": w.token})
    assert r.content == w.old


def test_bad_requests_get_one_clear_answer(web_daemon):
    w = web_daemon
    for path, params, status in [("/api/tree", {"backup": 999}, 404),
                                 ("/api/tree", {"backup": "x"}, 400),
                                 ("/api/versions", {"path": "/no/such"}, 404),
                                 ("/api/versions", {"path": "rel"}, 400),
                                 ("/api/download", {"version": 10**9}, 404),
                                 ("/api/search", {}, 400)]:
        r = httpx.get(w.base + path, params=params, headers={"X-Btfs-Token": w.token})
        assert r.status_code == status and r.json()["error"], (path, r.text)


@pytest.mark.parametrize("headers", [{}, {"X-Btfs-Token": "0" * 64}, {"X-Btfs-Token": ""}])
def test_no_or_a_wrong_token_is_refused_and_nothing_is_done(web_daemon, headers):
    w = web_daemon
    for action in ("pause", "backup-now", "stop"):
        assert httpx.post(w.base + f"/api/{action}", headers=headers).status_code == 401
    # A POST takes the token only in its header: one in the query does nothing.
    assert httpx.post(w.base + "/api/pause", params={"token": w.token}).status_code == 401
    for path in ("/", "/api/status", "/api/backups", "/api/search?q=notes",
                 "/api/download?version=1"):
        r = httpx.get(w.base + path, headers=headers)
        assert r.status_code == 401 and w.token not in r.text
        assert "notes" not in r.text
    s = w.status()
    assert s["state"] == "watching" and w.proc.poll() is None
    assert s["last_backup"]["result"] == "unchanged"  # no backup-now ran


def test_a_foreign_host_is_refused_even_with_the_token(web_daemon):
    """A DNS-rebound name reaches 127.0.0.1 with its own Host: refused."""
    w = web_daemon
    port = w.base.rsplit(":", 1)[1]
    for host in ("evil.example:" + port, "127.0.0.1:1", "localhost.evil.example:" + port, ""):
        r = httpx.post(w.base + "/api/pause", headers={"X-Btfs-Token": w.token, "Host": host})
        assert r.status_code == 403, host
    assert w.status()["state"] == "watching"
    for host in ("localhost:" + port, "127.0.0.1:" + port):
        r = httpx.get(w.base + "/api/status", headers={"X-Btfs-Token": w.token, "Host": host})
        assert r.status_code == 200


def test_no_cors_and_no_cookies(web_daemon):
    w = web_daemon
    r = httpx.options(w.base + "/api/pause", headers={
        "Origin": "http://evil.example", "Access-Control-Request-Method": "POST",
        "X-Btfs-Token": w.token})
    assert not any(h.lower().startswith("access-control") for h in r.headers)
    r = httpx.get(w.url, headers={"Origin": "http://evil.example"})
    assert r.status_code == 200 and "set-cookie" not in r.headers
    assert not any(h.lower().startswith("access-control") for h in r.headers)
    assert r.headers["referrer-policy"] == "no-referrer"


def test_the_token_file_is_private_and_kept(web_daemon, paths):
    path = token_file(paths)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert path.read_text().strip() == web_daemon.token


def test_stop_answers_then_ends_the_daemon(web_daemon):
    w = web_daemon
    r = post(w, "/api/stop")
    assert r.status_code == 200 and r.json()["state"] == "stopping"
    assert w.proc.wait(20) == 0
    with pytest.raises(httpx.ConnectError):  # the page went with the daemon
        httpx.get(w.base + "/api/status", headers={"X-Btfs-Token": w.token})


def test_a_damaged_chunk_ends_the_download_short_never_with_wrong_bytes(web_daemon, vault_dir):
    w = web_daemon
    biggest = max((p for p in (vault_dir / "packs").rglob("*") if p.is_file()),
                  key=lambda p: p.stat().st_size)
    with open(biggest, "r+b") as f:  # a byte in the middle of the old version's chunks
        f.seek(biggest.stat().st_size // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0xFF]))
    old = get(w, "/api/search", q="notes.txt")["hits"][0]["versions"][0]
    got = b""
    with pytest.raises(httpx.RemoteProtocolError), httpx.stream(
            "GET", w.base + "/api/download",
            params={"version": old["version"], "token": w.token}) as r:
        assert r.status_code == 200
        for part in r.iter_bytes():
            got += part
    assert len(got) < len(w.old) and w.old.startswith(got)
