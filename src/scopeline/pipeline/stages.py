"""The registry of processing stages: the one list that presets, JSON Schemas, ``status``, ``populate``,
``paramset``, ``task``, the CLI's options, the query layer and result keys walk.

Adding a stage is one core module (its algorithm and parameter model), one pipeline module (its
Computed table, ``stage_tables(...)`` for its ParamSet and Task, and ``STAGE = Stage(...)``), and one
line: its ``STAGE`` in :data:`STAGES` below (or, from a lab's own package, ``stages.register(module.STAGE)``
or the module named in ``SCOPELINE_STAGES``, comma-separated, which every scopeline process loads).

>>> from scopeline.pipeline import stages
>>> [s.name for s in stages.STAGES]
['acquisition', 'motion', 'initialization', 'cnmf', 'curation', 'registration']
"""

from __future__ import annotations

import importlib
import os

from scopeline.errors import ScopelineError
from scopeline.pipeline import acquisition, cnmf, curation, initialization, motion, registration, session, subject
from scopeline.pipeline._stage import Stage

__all__ = ["Stage", "StageError", "STAGES", "BASE_SCHEMAS", "register", "unregister", "get", "with_params",
           "per_recording", "chain",
           "schemas", "load_plugins"]

#: schemas the stages hang from (who and when), (module, schema suffix)
BASE_SCHEMAS = [(subject, "subject"), (session, "session")]

#: every stage, upstream first
STAGES: list[Stage] = [acquisition.STAGE, motion.STAGE, initialization.STAGE, cnmf.STAGE, curation.STAGE,
                       registration.STAGE]


class StageError(ScopelineError, ValueError):
    """An unknown stage name, or a stage that cannot be registered."""


def get(name: str) -> Stage:
    """The stage of this name (or one of its CLI aliases without dashes, e.g. ``init``).

    Raises
    ------
    StageError
        If no stage has that name (the message lists them).
    """
    for stage in STAGES:
        if name == stage.name or name in (a.lstrip("-") for a in stage.aliases if a.startswith("--")):
            return stage
    raise StageError(f"unknown stage {name!r}: the stages are {', '.join(s.name for s in STAGES)}")


def with_params() -> list[Stage]:
    """The stages that have parameter sets (and tasks), upstream first."""
    return [s for s in STAGES if s.paramset is not None]


def per_recording() -> list[Stage]:
    """The stages with parameter sets whose results are per recording (``scope == "recording"``)."""
    return [s for s in with_params() if s.scope == "recording"]


def chain(name: str) -> list[Stage]:
    """A stage and every stage upstream of it, upstream first (``chain("cnmf")``: acquisition, motion,
    initialization, cnmf)."""
    out = [get(name)]
    while out[0].upstream is not None:
        out.insert(0, get(out[0].upstream))
    return out


def schemas() -> list[tuple]:
    """(module, schema suffix) of every schema, in dependency order (a module holding several stages
    once)."""
    out = list(BASE_SCHEMAS)
    for stage in STAGES:
        if all(stage.module is not m for m, _ in out):
            out.append((stage.module, stage.name))
    return out


def register(stage: Stage) -> Stage:
    """Add a stage (after its upstream); when a pipeline is active its schema is activated at once.

    Raises
    ------
    StageError
        If the name is taken or the upstream stage is not registered.
    """
    if any(s.name == stage.name for s in STAGES):
        raise StageError(f"a stage named {stage.name!r} is registered already")
    if stage.upstream is not None:
        get(stage.upstream)
    STAGES.append(stage)
    from scopeline import pipeline

    active = pipeline._active
    if active and all(stage.module is not s.module for s in STAGES[:-1]):
        stage.schema.activate(active["prefix"] + stage.name, connection=active["connection"])
    return stage


def unregister(name: str) -> None:
    """Remove a registered stage (its tables stay in the database)."""
    stage = get(name)
    if any(s.upstream == stage.name for s in STAGES):
        raise StageError(f"stage {name!r} has downstream stages; unregister them first")
    STAGES.remove(stage)
    if all(stage.module is not s.module for s in STAGES):
        stage.schema.database = None
        stage.schema.connection = None


def load_plugins() -> list[Stage]:
    """Register the ``STAGE`` of every module named in ``SCOPELINE_STAGES`` (comma-separated module
    names; each already registered one is skipped), so that every process of a lab (CLI, workers)
    sees the lab's own stages.

    Raises
    ------
    StageError
        If a module cannot be imported or has no ``STAGE``.
    """
    added = []
    for name in filter(None, (n.strip() for n in os.environ.get("SCOPELINE_STAGES", "").split(","))):
        try:
            stage = importlib.import_module(name).STAGE
        except (ImportError, AttributeError) as err:
            raise StageError(f"SCOPELINE_STAGES names {name!r}, which is not a module with a STAGE: {err}") from err
        if all(s is not stage for s in STAGES):
            added.append(register(stage))
    return added
