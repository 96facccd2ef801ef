"""A private MySQL-family database server under scopeline's home directory.

When a lab has not configured a database server (no ``DJ_HOST``, no ``datajoint.json``), scopeline
runs its own: a MariaDB (or Oracle MySQL) server found on the system, with its data directory under
``<home>/mysql``, bound to 127.0.0.1 on a free port, with a generated password kept in
``<home>/mysql/credentials.json`` (mode 0600). No systemd, no root, no manual setup.

The server is started and stopped by :func:`up` and :func:`down` (``scopeline db up | down``);
:func:`status` describes it. ``up`` is idempotent: on a running server it returns at once.
"""

from __future__ import annotations

import getpass
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from scopeline import settings
from scopeline.errors import ConfigurationError

__all__ = ["ServerError", "ServerInfo", "up", "down", "status", "server_dir"]

_SBIN = ("/usr/sbin", "/usr/local/sbin", "/usr/local/mysql/bin", "/usr/bin")
_READY_TIMEOUT_S = 60.0


class ServerError(ConfigurationError, RuntimeError):
    """The private database server could not be found, initialized, started or stopped."""


@dataclass
class ServerInfo:
    """State of the private server.

    Attributes
    ----------
    running : bool
        Whether the server process is alive and answering.
    host, port : str, int
        Where it listens (always loopback).
    user, password : str
        The scopeline account (password read from the 0600 credentials file).
    datadir : str
        The server's data directory.
    pid : int or None
        Server process id when running.
    flavor : str
        ``"mariadb"`` or ``"mysql"``.
    log : str
        Path of the server's log file.
    """

    running: bool
    host: str
    port: int
    user: str
    password: str
    datadir: str
    pid: int | None
    flavor: str
    log: str

    def public(self) -> dict:
        """Return the fields without the password (for printing)."""
        out = asdict(self)
        out["password"] = "********"
        return out


def server_dir() -> Path:
    """Return ``<home>/mysql``, the folder of the private server."""
    return settings.home() / "mysql"


def _find(*names: str) -> str | None:
    for name in names:
        found = shutil.which(name) or next(
            (str(Path(d) / name) for d in _SBIN if (Path(d) / name).is_file()), None
        )
        if found:
            return found
    return None


def _binaries() -> dict:
    """Locate the server, its installer and a client; raise ServerError naming what is missing."""
    server = _find("mariadbd", "mysqld")
    if server is None:
        raise ServerError(
            "no MySQL-family server found (looked for mariadbd and mysqld on PATH and in "
            f"{', '.join(_SBIN)}). Install one (Debian: apt-get install mariadb-server) or point "
            "scopeline at a lab server with DJ_HOST/DJ_USER/DJ_PASS or datajoint.json."
        )
    out = subprocess.run([server, "--version"], capture_output=True, text=True, check=False)
    flavor = "mariadb" if "mariadb" in (out.stdout + out.stderr).lower() else "mysql"
    client = _find("mariadb", "mysql")
    if client is None:
        raise ServerError("no MySQL-family client (mariadb or mysql) found to set up the server")
    installer = _find("mariadb-install-db", "mysql_install_db") if flavor == "mariadb" else None
    if flavor == "mariadb" and installer is None:
        raise ServerError("mariadbd found but not mariadb-install-db to initialize its data directory")
    return {"server": server, "client": client, "installer": installer, "flavor": flavor}


def _paths() -> dict:
    d = server_dir()
    return {
        "dir": d,
        "datadir": d / "data",
        "socket": d / "mysqld.sock",
        "pidfile": d / "mysqld.pid",
        "log": d / "server.log",
        "credentials": d / "credentials.json",
    }


def _read_credentials(path: Path) -> dict | None:
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ServerError(f"{path}: unreadable credentials ({err}); remove the file and run again") from err


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` with permissions 0600, atomically."""
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pid(paths: dict) -> int | None:
    """Pid of our server, or None. A stale pid file (after a crash or reboot) whose pid now belongs to
    another process is ignored, so that process is never signalled."""
    try:
        pid = int(paths["pidfile"].read_text().strip())
    except (OSError, ValueError):
        return None
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.parent.parent.is_dir() and Path("/proc/self").exists():
        try:
            args = cmdline.read_bytes().decode(errors="replace")
        except OSError:
            return None
        return pid if str(paths["datadir"]) in args else None
    try:  # no /proc (macOS): fall back to "a process with that pid exists"
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return None
    return pid


def _client(bins: dict, paths: dict, sql: str, user: str) -> subprocess.CompletedProcess:
    cmd = [bins["client"], "--no-defaults", f"--socket={paths['socket']}", f"-u{user}", "-e", sql]
    return subprocess.run(cmd, capture_output=True, text=True, check=False)


def _answering(creds: dict) -> bool:
    import pymysql

    try:
        pymysql.connect(
            host=creds["host"], port=creds["port"], user=creds["user"], password=creds["password"],
            connect_timeout=2,
        ).close()
        return True
    except pymysql.MySQLError:
        return False


def _initialize(bins: dict, paths: dict) -> None:
    datadir = paths["datadir"]
    datadir.mkdir(parents=True, exist_ok=True)
    user = getpass.getuser()
    if bins["flavor"] == "mariadb":
        cmd = [bins["installer"], "--no-defaults", f"--user={user}", f"--datadir={datadir}",
               "--auth-root-authentication-method=socket", "--skip-test-db"]
    else:
        cmd = [bins["server"], "--no-defaults", "--initialize-insecure", f"--user={user}",
               f"--datadir={datadir}"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        shutil.rmtree(datadir, ignore_errors=True)
        raise ServerError(f"initializing {datadir} failed:\n{out.stdout}\n{out.stderr}")


def _start(bins: dict, paths: dict, port: int) -> subprocess.Popen:
    cmd = [
        bins["server"], "--no-defaults", f"--user={getpass.getuser()}",
        f"--datadir={paths['datadir']}", f"--socket={paths['socket']}",
        f"--pid-file={paths['pidfile']}", f"--port={port}", "--bind-address=127.0.0.1",
        "--skip-name-resolve", "--character-set-server=utf8mb4",
        "--max-allowed-packet=1G",
    ]
    cmd.append("--collation-server=utf8mb4_general_ci" if bins["flavor"] == "mariadb"
               else "--collation-server=utf8mb4_0900_ai_ci")
    log = open(paths["log"], "ab")  # noqa: SIM115 - handed to the detached server
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)


def _wait_socket(bins: dict, paths: dict, proc: subprocess.Popen) -> None:
    admin_user = "root" if bins["flavor"] == "mysql" else getpass.getuser()
    deadline = time.monotonic() + _READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = paths["log"].read_text(errors="replace")[-2000:]
            raise ServerError(f"the server exited during start-up (see {paths['log']}):\n{tail}")
        if paths["socket"].exists() and _client(bins, paths, "SELECT 1", admin_user).returncode == 0:
            return
        time.sleep(0.2)
    raise ServerError(f"the server did not answer within {_READY_TIMEOUT_S:.0f} s (see {paths['log']})")


def _create_account(bins: dict, paths: dict, creds: dict) -> None:
    admin_user = "root" if bins["flavor"] == "mysql" else getpass.getuser()
    pw = creds["password"].replace("'", "''")
    sql = "".join(
        f"CREATE USER IF NOT EXISTS '{creds['user']}'@'{h}' IDENTIFIED BY '{pw}';"
        f"ALTER USER '{creds['user']}'@'{h}' IDENTIFIED BY '{pw}';"
        f"GRANT ALL PRIVILEGES ON *.* TO '{creds['user']}'@'{h}' WITH GRANT OPTION;"
        for h in ("127.0.0.1", "localhost")
    )
    out = _client(bins, paths, sql + "FLUSH PRIVILEGES;", admin_user)
    if out.returncode != 0:
        raise ServerError(f"creating the scopeline account failed: {out.stderr.strip()}")


def status() -> ServerInfo | None:
    """Describe the private server.

    Returns
    -------
    ServerInfo or None
        None when no private server was ever set up under this home directory.

    Raises
    ------
    ServerError
        If the credentials file exists but cannot be read.
    """
    paths = _paths()
    creds = _read_credentials(paths["credentials"])
    if creds is None:
        return None
    pid = _pid(paths)
    running = pid is not None and _answering(creds)
    return ServerInfo(running=running, host=creds["host"], port=creds["port"], user=creds["user"],
                      password=creds["password"], datadir=str(paths["datadir"]), pid=pid,
                      flavor=creds.get("flavor", "mariadb"), log=str(paths["log"]))


def up() -> ServerInfo:
    """Start the private server, initializing it on first use; return at once if it runs.

    Returns
    -------
    ServerInfo
        The running server.

    Raises
    ------
    ServerError
        If no server binary is found, initialization fails, or the server does not come up.
    """
    info = status()
    if info is not None and info.running:
        return info
    bins = _binaries()
    paths = _paths()
    paths["dir"].mkdir(parents=True, exist_ok=True)
    os.chmod(paths["dir"], 0o700)
    creds = _read_credentials(paths["credentials"])
    if not (paths["datadir"] / "mysql").is_dir():
        _initialize(bins, paths)
        creds = None  # a new data directory has no account yet
    if info is not None and info.pid is not None:  # alive but not answering: stop it first
        down()
    if creds is None:
        creds = {"host": "127.0.0.1", "port": _free_port(), "user": "scopeline",
                 "password": secrets.token_urlsafe(24), "flavor": bins["flavor"]}
    elif not _port_free(creds["port"]):
        creds["port"] = _free_port()
    paths["socket"].unlink(missing_ok=True)
    proc = _start(bins, paths, creds["port"])
    _wait_socket(bins, paths, proc)
    _create_account(bins, paths, creds)
    _write_private(paths["credentials"], json.dumps(creds, indent=2))
    info = status()
    if info is None or not info.running:
        raise ServerError(f"the server started but refuses the scopeline account (see {paths['log']})")
    return info


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def down(timeout: float = 60.0) -> bool:
    """Stop the private server (SIGTERM, then wait for it to exit).

    Parameters
    ----------
    timeout : float
        Seconds to wait for a clean shutdown.

    Returns
    -------
    bool
        True if a running server was stopped, False if none was running.

    Raises
    ------
    ServerError
        If the server does not exit within ``timeout`` seconds.
    """
    paths = _paths()
    pid = _pid(paths)
    if pid is None:
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except OSError as err:
        raise ServerError(f"cannot stop the server (pid {pid}): {err}") from err
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        try:  # reap it if it is our own child
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.1)
    raise ServerError(f"the server (pid {pid}) did not stop within {timeout:.0f} s")
