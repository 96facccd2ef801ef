"""The object store's garbage: objects no row refers to, collected with DataJoint's garbage collector.

Inserts are atomic, but a heavy stage writes its movie into the store before its row is inserted
(:mod:`scopeline.pipeline._objects`): a worker killed between the two (SIGKILL, power loss) leaves a
folder no row points to, and deleted rows leave their files too (DataJoint deletes no store files).
:func:`collect` finds them in every scopeline schema and removes them. While a job is running its
objects are not referred to yet, so collection refuses to run while any worker holds a job (unless
``force``).
"""

from __future__ import annotations

import logging

from scopeline.errors import ScopelineError
from scopeline.pipeline import jobs, session, stages, subject

__all__ = ["StoreError", "collect"]


class StoreError(ScopelineError):
    """Garbage collection that cannot run now (a job is running) or cannot read the store."""


def _schemas() -> list:
    found = {}
    for module in [subject, session, *(s.module for s in stages.STAGES)]:
        schema = module.schema
        if schema.is_activated():
            found.setdefault(schema.database, schema)
    return list(found.values())


def _stores(config) -> list:
    """The stores to collect: None for the default one (DataJoint records objects there with store null,
    and a collector for None counts every reference), then each other configured store by name."""
    default = config.stores.get("default")
    return [None] + [k for k, v in config.stores.items()
                     if k not in ("default", default) and isinstance(v, dict) and "protocol" in v]


class _Warnings(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def _scan(collector, dry_run: bool) -> dict:
    """One collection, refused (StoreError) when DataJoint could not read every table's references (it only
    logs those: the tables' objects would be taken for garbage)."""
    handler = _Warnings()
    log = logging.getLogger("datajoint")
    log.addHandler(handler)
    try:
        report = collector.collect(dry_run=True)
    finally:
        log.removeHandler(handler)
    if handler.messages:
        raise StoreError("cannot read every reference to the store, so nothing is removed: "
                         + "; ".join(handler.messages[:3]))
    return report if dry_run else collector.collect(dry_run=False)


def collect(dry_run: bool = False, force: bool = False) -> dict:
    """Remove (or with ``dry_run`` only list) store objects that no scopeline row refers to.

    Parameters
    ----------
    dry_run : bool
        Report what would be removed, remove nothing.
    force : bool
        Run even while jobs are held (their objects would be taken for garbage): only when the workers
        holding them are known to be gone.

    Returns
    -------
    dict
        ``stores`` (names), ``orphaned`` (paths, store-relative), ``bytes`` (their size), ``deleted``
        (objects removed, 0 for a dry run), ``errors``.

    Raises
    ------
    StoreError
        If a job is held by a worker that may still run (reserved and not known gone), or the store
        cannot be listed completely (nothing is deleted then).
    """
    from scopeline._dj import dj

    if not force:
        held = jobs.jobs(status="reserved")
        running = held[held["alive"].ne(False)]
        if len(running):
            who = ", ".join(f"{r.stage} {'/'.join(map(str, r.key.values()))} ({r.host} pid {r.pid})"
                            for r in running.itertuples(index=False))
            raise StoreError(f"{len(running)} job(s) are running ({who}): what they are writing is not referred to "
                             "yet; collect when no worker runs (or reset orphans first: scopeline jobs "
                             "--reset-orphans)")
    schemas = _schemas()
    if not schemas:
        raise StoreError("no scopeline schema is active")
    config = schemas[0].connection._config
    out = {"stores": [], "orphaned": [], "bytes": 0, "deleted": 0, "errors": 0}
    for store in _stores(config):
        try:
            report = _scan(dj.gc.GarbageCollector(*schemas, store=store), dry_run)
        except dj.DataJointError as err:
            raise StoreError(f"store {store or 'default'}: {err}") from None
        out["stores"].append(store or "default")
        out["orphaned"] += report["orphaned_hash_paths"] + report["orphaned_schema_paths"]
        out["bytes"] += report["hash_paths_orphaned_bytes"] + report["schema_paths_orphaned_bytes"]
        out["deleted"] += report["deleted"]
        out["errors"] += report["errors"]
    return out
