"""DataJoint schemas of scopeline. Each table's make calls :mod:`scopeline.core`; no algorithm lives here.

Schemas are declared deferred and activated by :func:`activate` under a name prefix (default
``scopeline_``, or ``SCOPELINE_SCHEMA_PREFIX``), so one database can hold several pipelines (a test
run, a lab's production pipeline) side by side.
"""

from __future__ import annotations

import os

from scopeline._dj import dj
from scopeline.errors import ScopelineError
from scopeline.pipeline import acquisition, cnmf, initialization, motion, session, stages, subject

__all__ = ["activate", "deactivate", "drop", "schema_prefix", "outdated", "migrate", "check_current",
           "OutdatedSchemaError", "stages", "subject", "session", "acquisition", "motion", "initialization", "cnmf"]

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
    for module, name in stages.schemas():
        module.schema.activate(prefix + name, connection=connection)
    _active.update(prefix=prefix, connection=connection)
    return dict(_active)


def deactivate() -> None:
    """Detach the schema objects so that :func:`activate` can bind them to another database."""
    for module, _ in stages.schemas():
        module.schema.database = None
        module.schema.connection = None
    _active.clear()


def drop(force: bool = False) -> None:
    """Drop every scopeline schema of the active prefix (all their data), most dependent first."""
    if not _active:
        raise RuntimeError("no scopeline pipeline is active")
    for module, _ in reversed(stages.schemas()):
        module.schema.drop(prompt=not force)
    deactivate()


class OutdatedSchemaError(ScopelineError, RuntimeError):
    """Tables of the database were made by an earlier scopeline and lack attributes this one stores."""

    exit_code = 3


def _declared(table) -> list[str]:
    """Attribute names a table's definition declares (foreign keys and indexes left out)."""
    names = []
    for line in table.definition.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith(("---", "->", "unique", "index")) or ":" not in line:
            continue
        names.append(line.split(":", 1)[0].split("=", 1)[0].strip())
    return names


def _tables():
    """Every table class of the pipeline, part tables included."""
    import inspect

    for module, _ in stages.schemas():
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ != module.__name__ or not hasattr(cls, "definition") or not isinstance(cls.definition, str):
                continue
            yield cls
            for _, part in inspect.getmembers(cls, inspect.isclass):
                if isinstance(getattr(part, "definition", None), str) and part is not cls and issubclass(part, dj.Part):
                    yield part


def outdated() -> dict[str, list[str]]:
    """Tables of the active pipeline whose database table lacks attributes this version declares.

    Returns
    -------
    dict
        Full table name -> missing attribute names (empty when the database is current).
    """
    activate()
    out = {}
    for cls in _tables():
        missing = [name for name in _declared(cls) if name not in cls().heading.names]
        if missing:
            out[cls.full_table_name] = missing
    return out


def check_current() -> None:
    """Raise :class:`OutdatedSchemaError` when the database's tables are older than this scopeline.

    Raises
    ------
    OutdatedSchemaError
        Naming each table and its missing attributes, and the command that adds them.
    """
    old = outdated()
    if old:
        listed = "; ".join(f"{t}: {', '.join(a)}" for t, a in old.items())
        raise OutdatedSchemaError(f"the database's tables were made by an earlier scopeline and lack {listed}. "
                                  f"Add them (existing rows keep their values, the new attributes are null there) "
                                  f"with: scopeline db migrate")


def migrate() -> dict[str, list[str]]:
    """Add the attributes this version declares to tables an earlier scopeline made (DataJoint's
    ``alter``; new attributes are nullable, so existing rows stay as they are, null there).

    Returns
    -------
    dict
        Full table name -> attributes added.
    """
    old = outdated()
    for cls in _tables():
        if cls.full_table_name in old:
            cls().alter(prompt=False)
    left = outdated()
    if left:
        raise OutdatedSchemaError(f"could not add every attribute: {left}")
    return old


stages.load_plugins()
