"""Database servers for the test suite: MariaDB (scopeline's private server) and PostgreSQL.

Used by ``tests/conftest.py`` when no server is given in the environment, and by ``.ci/run``::

    python tests/servers.py start DIR     # prints `export ...` lines for both servers
    python tests/servers.py stop DIR

Environment read by the tests (a backend is skipped, or failed under SCOPELINE_REQUIRE_DB=1, when its
server is neither given nor startable):

- ``SCOPELINE_TEST_MYSQL``: ``host:port:user:password`` of a MySQL/MariaDB server;
- ``SCOPELINE_TEST_POSTGRES``: ``host:port:user:password`` of a PostgreSQL >= 15 server.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
from pathlib import Path

PG_USER = "scopeline"


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    return candidates[0] if candidates else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_postgres(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run its commands as the ``postgres`` user then."""
    if os.geteuid() != 0:
        return cmd
    return ["runuser", "-u", "postgres", "--", *cmd]


def start_postgres(folder: Path) -> str:
    """Initialize and start a PostgreSQL server in ``folder``; return ``host:port:user:password``."""
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not (initdb and pg_ctl):
        raise RuntimeError("PostgreSQL binaries (initdb, pg_ctl) not found; apt-get install postgresql")
    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "pgdata"
    password = secrets.token_urlsafe(16)
    pwfile = folder / "pw"
    pwfile.write_text(password + "\n")
    if os.geteuid() == 0:
        pg = pwd.getpwnam("postgres")
        os.chown(folder, pg.pw_uid, pg.pw_gid)
        os.chown(pwfile, pg.pw_uid, pg.pw_gid)
    os.chmod(pwfile, 0o600)
    out = subprocess.run(_as_postgres([initdb, "-D", str(data), "-U", PG_USER, "-A", "scram-sha-256",
                                       f"--pwfile={pwfile}", "-E", "UTF8"]),
                         capture_output=True, text=True, check=False)
    pwfile.unlink()
    if out.returncode != 0:
        raise RuntimeError(f"initdb failed: {out.stderr}")
    port = _free_port()
    opts = f"-c listen_addresses=127.0.0.1 -p {port} -k {folder} -c fsync=off"
    out = subprocess.run(_as_postgres([pg_ctl, "-D", str(data), "-o", opts, "-l", str(folder / "pg.log"),
                                       "-w", "start"]), capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"pg_ctl start failed: {out.stderr}\n{(folder / 'pg.log').read_text()}")
    return f"127.0.0.1:{port}:{PG_USER}:{password}"


def stop_postgres(folder: Path) -> None:
    """Stop the PostgreSQL server started in ``folder`` (if running)."""
    pg_ctl = _pg_bin("pg_ctl")
    data = Path(folder).resolve() / "pgdata"
    if pg_ctl and data.exists():
        subprocess.run(_as_postgres([pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"]),
                       capture_output=True, check=False)


def start_mariadb(folder: Path) -> str:
    """Start scopeline's private MariaDB/MySQL server with its home in ``folder``."""
    os.environ["SCOPELINE_HOME"] = str(Path(folder).resolve())
    from scopeline import server

    info = server.up()
    return f"{info.host}:{info.port}:{info.user}:{info.password}"


def stop_mariadb(folder: Path) -> None:
    """Stop the private server whose home is ``folder``."""
    os.environ["SCOPELINE_HOME"] = str(Path(folder).resolve())
    from scopeline import server

    server.down()


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[1] not in ("start", "stop"):
        print(__doc__)
        return 2
    folder = Path(argv[2])
    if argv[1] == "start":
        mysql = start_mariadb(folder / "mariadb")
        postgres = start_postgres(folder / "postgres")
        print(f"export SCOPELINE_TEST_MYSQL='{mysql}'")
        print(f"export SCOPELINE_TEST_POSTGRES='{postgres}'")
    else:
        stop_postgres(folder / "postgres")
        stop_mariadb(folder / "mariadb")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
