"""Fixtures shared by every test: an isolated environment, XDG paths, an initialized repo.

No test may touch the real user's configuration, data or cache: the autouse `isolated_env`
points HOME, the XDG variables and BTFS_CONFIG into the test's tmp_path. A test also fails
when btfs logs a WARNING it did not declare (as s3ql's pytest_checklogs does): a warning is
meant for a person, so an unexpected one is a bug. Declare expected ones with
`@pytest.mark.expect_warnings("regex", ...)` (no argument: any warning is allowed).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import pytest

from btfs import config as config_mod
from btfs.config import Paths, xdg_paths
from btfs.repo import Repo, init_repo, track_dirs

pytest_plugins = ["pytester"]
# s3kit: the moto S3 server fixtures, for every test module. A test that copies this file
# into a pytester directory (test_unexpected_btfs_warnings_fail_a_test) has no s3kit.
if (Path(__file__).parent / "s3kit.py").exists():
    pytest_plugins.append("s3kit")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "expect_warnings(*patterns): btfs may log WARNING records matching any "
        "of the regex patterns (any warning when none are given)")


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    # Around the test call only, so that a failure is the test's failure, not a fixture
    # error; the handler sits on the 'btfs' logger, so it sees every thread's records.
    handler = _Collect()
    logger = logging.getLogger("btfs")
    logger.addHandler(handler)
    try:
        result = yield
    finally:
        logger.removeHandler(handler)
    marker = item.get_closest_marker("expect_warnings")
    unexpected = []
    for record in handler.records:
        message = record.getMessage()
        if marker is not None and (not marker.args
                                   or any(re.search(p, message) for p in marker.args)):
            continue
        unexpected.append(f"{record.name}: {record.levelname}: {message}")
    if unexpected:
        pytest.fail("unexpected log records from btfs:\n  " + "\n  ".join(unexpected),
                    pytrace=False)
    return result


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch) -> Path:
    """HOME and every config/data/cache location inside tmp_path."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.setenv("BTFS_CONFIG", str(tmp_path / "xdg-config" / "btfs" / "config.toml"))
    return home


@pytest.fixture
def env(tmp_path) -> dict:
    """An environment for `btfs` subprocesses (tests/clikit.py) with its config, data and
    cache in tmp_path."""
    e = dict(os.environ)
    e.update(BTFS_CONFIG=str(tmp_path / "cfg" / "config.toml"),
             XDG_DATA_HOME=str(tmp_path / "data"), XDG_CACHE_HOME=str(tmp_path / "cache"),
             HOME=str(tmp_path / "home"))
    return e


@pytest.fixture
def paths(isolated_env) -> Paths:
    p = xdg_paths()
    assert str(p.config_file).startswith(str(isolated_env.parent))
    assert str(p.data_dir).startswith(str(isolated_env.parent))
    return p


@pytest.fixture
def vault_dir(tmp_path) -> Path:
    return tmp_path / "vault"


@pytest.fixture
def initialized(paths, vault_dir) -> config_mod.Config:
    """init_repo with a local vault in tmp_path; the config it wrote."""
    cfg, created = init_repo(paths, str(vault_dir))
    assert created
    return cfg


@pytest.fixture
def repo_factory(initialized, paths):
    """make(*dirs, excludes=(), includes=(), **config changes) -> an open Repo tracking
    `dirs`; every repo it made is closed at teardown."""
    opened: list[Repo] = []

    def make(*dirs, excludes=(), includes=(), **changes) -> Repo:
        if dirs:
            track_dirs(paths, [str(d) for d in dirs], excludes=excludes, includes=includes)
        if changes:
            cfg = config_mod.with_changes(config_mod.load(paths), **changes)
            config_mod.validate(cfg)
            config_mod.save(paths, cfg)
        repo = Repo.open(paths)
        opened.append(repo)
        return repo

    yield make
    for repo in opened:
        repo.close()
