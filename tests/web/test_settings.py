"""Where the status page may listen, and the CLI's one-line refusals: an address other
machines reach needs --allow-remote, a bad [web] table or ADDR:PORT is named, and
`btfs web-url` with no daemon says so; nothing is started."""

from __future__ import annotations

import subprocess
import sys

import pytest

from btfs.errors import BtfsError
from btfs.web.access import allowed_hosts, host_ok
from btfs.web.settings import WebSettings, from_config, web_settings

BTFS = [sys.executable, "-m", "btfs"]


def test_the_default_is_loopback_8080():
    assert web_settings({}) == WebSettings("127.0.0.1", 8080, False)
    assert web_settings({"listen": "[::1]:9000"}).url() == "http://[::1]:9000/"
    assert web_settings({"listen": "127.0.0.1:1"}, "127.0.0.2:9") == WebSettings(
        "127.0.0.2", 9, False)  # --web over [web]


@pytest.mark.parametrize("table, listen, message", [
    ({}, "0.0.0.0:8080", "--allow-remote"),
    ({"listen": "192.168.1.2:80"}, None, "--allow-remote"),
    ({}, "localhost:8080", "not ADDR:PORT"),
    ({}, "127.0.0.1", "not ADDR:PORT"),
    ({}, "127.0.0.1:99999", "not ADDR:PORT"),
    ({"port": 1}, None, "unknown key 'port' in [web]"),
    ({"allow_remote": "yes"}, None, "allow_remote"),
])
def test_bad_settings_are_named(table, listen, message):
    with pytest.raises(BtfsError, match=message.replace("[", r"\[").replace("]", r"\]")):
        web_settings(table, listen)


def test_the_page_is_served_with_web_or_a_web_table():
    from btfs.config import Config

    plain = Config(host_id="h", vault="v")
    assert from_config(plain, "config", None, False) is None
    assert from_config(plain, "config", "", False) == WebSettings("127.0.0.1", 8080)
    table = Config(host_id="h", vault="v", web={"listen": "127.0.0.1:9090"})
    assert from_config(table, "config", None, False) == WebSettings("127.0.0.1", 9090)
    with pytest.raises(BtfsError, match="give --web too"):
        from_config(plain, "config", None, True)


def test_remote_only_when_allowed():
    s = web_settings({"allow_remote": True}, "0.0.0.0:8080")
    assert s.wildcard and s.url() == "http://127.0.0.1:8080/"


def test_host_check():
    local = WebSettings("127.0.0.1", 8080)
    allowed = allowed_hosts(local)
    assert host_ok("127.0.0.1:8080", local, allowed) and host_ok("LOCALHOST:8080", local, allowed)
    for bad in ("127.0.0.1:8081", "evil.example:8080", "127.0.0.1", "", "127.0.0.1.nip.io:8080"):
        assert not host_ok(bad, local, allowed), bad
    anywhere = WebSettings("0.0.0.0", 8080, True)
    assert host_ok("192.168.1.5:8080", anywhere, None)
    assert host_ok("[fe80::1]:8080", anywhere, None)
    assert not host_ok("evil.example:8080", anywhere, None)
    assert not host_ok("192.168.1.5:9", anywhere, None)


def test_cli_refuses_a_reachable_address_without_allow_remote(repo_factory, tmp_path):
    repo_factory(tmp_path).close()
    r = subprocess.run([*BTFS, "watch", "--web", "0.0.0.0:8080"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "--allow-remote" in r.stderr
    r = subprocess.run([*BTFS, "watch", "--allow-remote"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode != 0 and "give --web too" in r.stderr


def test_web_url_without_a_daemon(initialized, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    r = subprocess.run([*BTFS, "web-url"], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "no btfs watch is running" in r.stderr
    assert "Traceback" not in r.stderr
