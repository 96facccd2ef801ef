"""Connecting scopeline to a database server and an object store.

Two cases, decided once per process by :func:`configure`:

- The user configured a server (``DJ_HOST`` in the environment, or a ``datajoint.json`` with a
  ``database.host`` found by DataJoint's upward search): scopeline uses it as configured
  (a lab's MySQL 8, or PostgreSQL with ``DJ_BACKEND=postgresql``) and never starts its own.
- Nothing is configured: scopeline starts (if needed) and uses its private server
  (:mod:`scopeline.server`).

Large arrays go to DataJoint's default object store (``DJ_STORES`` or ``stores`` in ``datajoint.json``).
With the private server and no store, scopeline adds a local file store under ``<home>/store``; with a
lab server a store must be configured (every machine must read what any machine wrote), else
:class:`StoreNotConfiguredError` says how (``SCOPELINE_LOCAL_STORE=1`` allows a local folder for a
one-machine setup).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from scopeline import server, settings
from scopeline._dj import dj
from scopeline.errors import ConfigurationError

__all__ = ["user_configured", "configure", "connect", "describe", "check_store", "StoreNotConfiguredError",
           "StoreUnavailableError"]

STORE_NAME = "scopeline"


def _config_file_host() -> str | None:
    from datajoint.settings import find_config_file

    if os.environ.get("DJ_IGNORE_CONFIG_FILE", "").lower() in ("1", "true", "yes"):
        return None
    path = find_config_file()
    if path is None:
        return None
    try:
        cfg = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return (cfg.get("database") or {}).get("host") or cfg.get("database.host")


def user_configured() -> bool:
    """Return True when the user configured a database server for DataJoint.

    That is ``DJ_HOST`` in the environment or a ``datajoint.json`` naming a host.
    """
    return bool(os.environ.get("DJ_HOST") or _config_file_host())


class StoreNotConfiguredError(ConfigurationError):
    """A lab database server is configured but no object store: other machines could not read the arrays."""


class StoreUnavailableError(ConfigurationError):
    """The configured object store's folder is missing (an unmounted share) or this machine cannot write it."""


def check_store() -> None:
    """Refuse to run jobs when the default object store cannot take their results (before any job is reserved).

    A local folder store (``"protocol": "file"``) must exist (scopeline never creates a lab store's root: a
    missing one is usually a network share not mounted, and results written beside it would be lost to
    the other machines) and be writable by this process. Other protocols (S3) are left to the first write.

    Raises
    ------
    StoreUnavailableError
        Naming the store, its location and the problem.
    """
    name = (dj.config.stores or {}).get("default")
    spec = dj.config.get_store_spec(None) if name else {}
    if spec.get("protocol", "file") != "file" or not spec.get("location"):
        return
    location = Path(spec["location"])
    where = f"object store {name!r} at {location}"
    if not location.is_dir():
        raise StoreUnavailableError(
            f"{where}: no such folder (a network share not mounted?). Mount it, or point DJ_STORES / \"stores\" "
            "in datajoint.json at the lab's store; scopeline does not create it")
    try:
        with tempfile.NamedTemporaryFile(dir=location, prefix=".scopeline-write-check-"):
            pass
    except OSError as err:
        raise StoreUnavailableError(
            f"{where}: this machine cannot write there ({err.strerror}). Give this user write access (or mount it "
            "read-write), then run again") from err


def _ensure_store(user_server: bool) -> None:
    """Keep the configured default object store; with none, refuse for a lab server (unless
    ``SCOPELINE_LOCAL_STORE`` is set) and add ``<home>/store`` for the private server.

    Raises
    ------
    StoreNotConfiguredError
        With a lab server and no store: naming the settings that configure one.
    """
    stores = dict(dj.config.stores or {})
    if stores.get("default"):
        return
    if user_server and os.environ.get("SCOPELINE_LOCAL_STORE", "").lower() not in ("1", "true", "yes"):
        raise StoreNotConfiguredError(
            f"a database server is configured (DJ_HOST={dj.config['database.host']}) but no object store: the "
            "corrected movies and traces would go to a folder on this machine that the other machines of the "
            "lab cannot read. Configure a store that every machine reaches, either DJ_STORES, e.g. "
            "DJ_STORES='{\"default\": \"lab\", \"lab\": {\"protocol\": \"file\", \"location\": "
            "\"/mnt/lab/scopeline-store\"}}' (or an S3 bucket: \"protocol\": \"s3\"), or \"stores\" in "
            "datajoint.json; for one machine only, SCOPELINE_LOCAL_STORE=1 keeps them under "
            f"{settings.store_location()}")
    stores[STORE_NAME] = {"protocol": "file", "location": str(settings.store_location())}
    stores["default"] = STORE_NAME
    dj.config.stores = stores


def configure(start_local: bool = True) -> dict:
    """Point DataJoint at the configured server, or at scopeline's private one.

    Parameters
    ----------
    start_local : bool
        When no server is configured, start the private server if it is not running.

    Returns
    -------
    dict
        ``{"source": "user" | "local", "backend", "host", "port", "user"}``.

    Raises
    ------
    scopeline.server.ServerError
        If the private server is needed but cannot be started.
    """
    if user_configured():
        source = "user"
    else:
        info = server.up() if start_local else server.status()
        if info is None:
            raise server.ServerError("no database configured and no private server set up: run `scopeline db up`")
        dj.config["database.backend"] = "mysql"
        dj.config["database.host"] = info.host
        dj.config["database.port"] = info.port
        dj.config["database.user"] = info.user
        dj.config["database.password"] = info.password
        dj.config["database.use_tls"] = False
        source = "local"
    _ensure_store(source == "user")
    return {
        "source": source,
        "backend": dj.config["database.backend"],
        "host": dj.config["database.host"],
        "port": dj.config["database.port"],
        "user": dj.config["database.user"],
    }


def connect(reset: bool = False) -> dj.Connection:
    """Configure (see :func:`configure`) and return DataJoint's shared connection."""
    configure()
    return dj.conn(reset=reset)


def describe() -> dict:
    """Return where scopeline's database and store are, without starting anything."""
    out = {"configured_by_user": user_configured(), "home": str(settings.home())}
    info = server.status()
    out["private_server"] = info.public() if info is not None else None
    stores = dj.config.stores or {}
    default = stores.get("default")
    out["store"] = stores.get(default) if default else {"protocol": "file", "location": str(settings.store_location())}
    return out
