"""The private MariaDB/MySQL server: start, idempotence, credentials, stop; never used when configured."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time

import pymysql
import pytest

from scopeline import database, server


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("SCOPELINE_HOME", str(tmp_path / "home"))
    for var in ("DJ_HOST", "DJ_USER", "DJ_PASS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)  # no datajoint.json above
    yield tmp_path / "home"
    server.down()


def test_up_status_down(home):
    try:
        info = server.up()
    except server.ServerError as err:
        if os.environ.get("SCOPELINE_REQUIRE_DB") == "1":
            raise
        pytest.skip(f"no MySQL-family server here: {err}")
    assert info.running and info.host == "127.0.0.1"
    creds = home / "mysql" / "credentials.json"
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    assert str(home) in info.datadir
    t0 = time.monotonic()
    again = server.up()
    assert again.pid == info.pid and time.monotonic() - t0 < 2.0  # idempotent: returns at once
    conn = pymysql.connect(host=info.host, port=info.port, user=info.user, password=info.password)
    with conn.cursor() as cur:
        cur.execute("SELECT @@max_allowed_packet, @@character_set_server, @@bind_address")
        packet, charset, bind = cur.fetchone()
    conn.close()
    assert packet == 2**30 and charset == "utf8mb4" and bind == "127.0.0.1"
    with pytest.raises(pymysql.MySQLError):
        pymysql.connect(host=info.host, port=info.port, user=info.user, password="wrong")
    assert server.down() is True
    assert server.status().running is False
    assert server.down() is False
    restarted = server.up()  # same data directory, same account
    assert restarted.running and restarted.password == info.password


def test_configured_server_is_used_not_started(home, monkeypatch):
    monkeypatch.setenv("DJ_HOST", "db.lab.example:3306")
    assert database.user_configured()
    out = subprocess.run([sys.executable, "-m", "scopeline.cli", "db", "up"], capture_output=True, text=True,
                         env={**os.environ}, check=True)
    assert "scopeline uses it" in out.stdout
    assert server.status() is None
    assert not (home / "mysql").exists()


def test_datajoint_json_counts_as_configured(home, tmp_path):
    assert not database.user_configured()
    (tmp_path / "datajoint.json").write_text('{"database": {"host": "labdb"}}')
    assert database.user_configured()


def test_missing_binaries_error(home, monkeypatch):
    monkeypatch.setattr(server, "_find", lambda *names: None)
    with pytest.raises(server.ServerError, match="no MySQL-family server found"):
        server.up()


def test_stale_pid_file_never_signals_another_process(home):
    """After a crash the pid file may name an unrelated process (here: the test itself)."""
    folder = home / "mysql"
    folder.mkdir(parents=True)
    (folder / "mysqld.pid").write_text(str(os.getpid()))
    (folder / "credentials.json").write_text('{"host": "127.0.0.1", "port": 1, "user": "u", "password": "p"}')
    assert server.status().pid is None and not server.status().running
    assert server.down() is False  # and we are still alive
