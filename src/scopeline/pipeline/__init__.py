"""DataJoint schemas of scopeline. Each table's make calls :mod:`scopeline.core`; no algorithm lives here.

Schemas are declared deferred and activated by :func:`activate` under a name prefix (default
``scopeline_``, or ``SCOPELINE_SCHEMA_PREFIX``), so one database can hold several pipelines (a test
run, a lab's production pipeline) side by side.
"""

from __future__ import annotations

import os

from scopeline._dj import dj
from scopeline.pipeline import acquisition, cnmf, initialization, motion, session, subject

__all__ = ["activate", "deactivate", "drop", "schema_prefix", "SCHEMAS", "subject", "session", "acquisition",
           "motion", "initialization", "cnmf"]

#: (module, schema suffix) in dependency order
SCHEMAS = [(subject, "subject"), (session, "session"), (acquisition, "acquisition"), (motion, "motion"),
           (initialization, "initialization"), (cnmf, "cnmf")]

_active: dict = {}


def schema_prefix() -> str:
    """Return the schema name prefix: ``SCOPELINE_SCHEMA_PREFIX`` or ``"scopeline_"``."""
    return os.environ.get("SCOPELINE_SCHEMA_PREFIX", "scopeline_")


def activate(prefix: str | None = None, connection: dj.Connection | None = None) -> dict:
    """Activate every scopeline schema on the database (creating schemas and tables if needed).

    Parameters
    ----------
    prefix : str, optional
        Schema name prefix; default :func:`schema_prefix`.
    connection : datajoint.Connection, optional
        Default: :func:`scopeline.database.connect` (the configured server, or the private one).
        Called with neither argument while a pipeline is active, returns the active one.

    Returns
    -------
    dict
        ``{"prefix": ..., "connection": ...}`` of the active pipeline.
    """
    if prefix is None and connection is None and _active:
        return dict(_active)
    prefix = schema_prefix() if prefix is None else prefix
    if connection is None:
        from scopeline import database

        connection = database.connect()
    if _active and (_active["prefix"], _active["connection"]) == (prefix, connection):
        return dict(_active)
    if _active:
        deactivate()
    for module, name in SCHEMAS:
        module.schema.activate(prefix + name, connection=connection)
    _active.update(prefix=prefix, connection=connection)
    return dict(_active)


def deactivate() -> None:
    """Detach the schema objects so that :func:`activate` can bind them to another database."""
    for module, _ in SCHEMAS:
        module.schema.database = None
        module.schema.connection = None
    _active.clear()


def drop(force: bool = False) -> None:
    """Drop every scopeline schema of the active prefix (all their data), most dependent first."""
    if not _active:
        raise RuntimeError("no scopeline pipeline is active")
    for module, _ in reversed(SCHEMAS):
        module.schema.drop(prompt=not force)
    deactivate()
