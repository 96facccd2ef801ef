"""What a processing stage is: its declaration (:class:`Stage`) and the tables every stage with
parameters has (:func:`stage_tables`: a ParamSet Lookup and a Task), declared once here.

A stage's own pipeline module declares its Computed table (what it stores is its own), builds its
ParamSet and Task with :func:`stage_tables`, and ends with ``STAGE = Stage(...)``; the registry
(:mod:`scopeline.pipeline.stages`) lists the stages, and everything that walks the pipeline (presets,
JSON Schemas, ``status``, ``populate``, ``paramset``, ``task``, the CLI's options, the query layer,
result keys) iterates over that list.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import ModuleType
from typing import Callable, Optional

from scopeline._dj import dj
from scopeline.pipeline._paramsets import ParamSetTable

__all__ = ["Stage", "stage_tables"]


@dataclass(frozen=True)
class Stage:
    """One processing stage of the pipeline, declared once.

    Attributes
    ----------
    name : str
        The stage's name everywhere: CLI (``--NAME``, ``scopeline task NAME``, ``paramset add --stage
        NAME``), pipeline presets, ``schemas/NAME.schema.json``, ``schemas/presets/NAME/``, and the
        database schema ``<prefix>NAME``.
    module : module
        Its pipeline module (holds ``schema``, a deferred :class:`datajoint.Schema`).
    computed : type
        Its Computed (or Imported) table: one row per result.
    paramset, task : type, optional
        Its parameter-set Lookup and Task Manual tables (:func:`stage_tables`); None for a stage with
        no parameters (ingestion's RecordingInfo).
    upstream : str, optional
        Name of the stage whose results this one starts from (None: a recording).
    queued_by : type, optional
        Table whose rows say what to compute (``status``'s pending): the task, unless given.
    label : str
        The stage in prose ("CNMF"); default the name.
    description : str
        One sentence on its parameters, for the JSON Schema.
    aliases : tuple of str
        Further CLI spellings of ``--NAME`` (kept for earlier command lines, e.g. ``--init``).
    figures : callable, optional
        ``figures(key, out_dir) -> dict[str, Path]`` for one of its results (``scopeline report`` and
        ``run`` call it for each of its results of the CNMF result they show).
    nwb : callable, optional
        ``nwb(nwbfile, cnmf_key)`` adding the stage's data to an NWB file being written for a CNMF result.
    scope : str
        ``"recording"`` (one result per recording and parameter sets of its chain: every stage so far)
        or ``"group"`` (one result per group of results across recordings, e.g. cross-session
        registration: its key is its group's, and per-recording walks (``task``, the CLI's
        parameter-set options, ``query.sessions``, ``presets.queue``) leave it out).
    extra : dict
        Further declarations: ``"columns"`` (attributes :func:`scopeline.query.results` shows),
        ``"select_units"`` (a unit-choosing stage: see :mod:`scopeline.pipeline.units`), ``"provenance"``
        (``fn(cnmf_key) -> dict or None``, added to an NWB file's provenance under the stage's name),
        ``"figures_per": "cnmf"`` (``figures`` is called once per CNMF result, with its key, rather
        than for each of the stage's results).
    """

    name: str
    module: ModuleType
    computed: type
    paramset: Optional[type] = None
    task: Optional[type] = None
    upstream: Optional[str] = None
    queued_by: Optional[type] = None
    label: str = ""
    description: str = ""
    aliases: tuple = ()
    figures: Optional[Callable] = None
    nwb: Optional[Callable] = None
    scope: str = "recording"
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if not self.label:
            object.__setattr__(self, "label", self.name)
        if self.queued_by is None:
            object.__setattr__(self, "queued_by", self.task)

    @property
    def key_attr(self) -> Optional[str]:
        """The primary-key attribute naming this stage's parameter set (``motion_paramset``), or None."""
        return self.paramset.name_attr if self.paramset is not None else None

    @property
    def model(self):
        """The stage's parameter model (a pydantic :class:`scopeline.core.params.StageParams`), or None."""
        return self.paramset.model if self.paramset is not None else None

    @property
    def presets(self) -> dict:
        """Shipped parameter sets: name -> model instance ({} for a stage without parameters)."""
        return self.paramset.presets if self.paramset is not None else {}

    @property
    def schema(self) -> dj.Schema:
        return self.module.schema


_PARAMSET_DEFINITION = """
# Named {label} parameter sets
{attr:<26} : varchar(64)
---
description = ''           : varchar(1024)
params                     : json           # every field of {model}, defaults filled
params_hash                : char(32)       # md5 of the canonical JSON
unique index (params_hash)
"""

_TASK_DEFINITION = """
# A {label} job: this parameter set on {upstream_text}
-> {upstream}
-> {paramset}
"""


def stage_tables(module_globals: dict, *, prefix: str, attr: str, model: type, presets: dict, label: str,
                 upstream: str, upstream_text: str) -> tuple[type, type]:
    """Declare a stage's parameter-set Lookup ``<prefix>ParamSet`` and its Task ``<prefix>Task`` in its module.

    Parameters
    ----------
    module_globals : dict
        The stage module's ``globals()``: holds its ``schema``, and resolves ``upstream``.
    prefix : str
        Table class prefix (``"Motion"`` gives ``MotionParamSet`` and ``MotionTask``; their database
        names follow DataJoint's rule, ``#motion_param_set`` and ``motion_task``).
    attr : str
        Primary-key attribute naming a parameter set (``"motion_paramset"``).
    model : type
        The stage's pydantic parameter model; presets : dict, name -> model instance.
    label : str
        The stage in prose, for comments and messages ("CNMF").
    upstream : str
        The table a task follows, as the module names it (``"acquisition.RecordingInfo"``,
        ``"motion.MotionTask"``); ``upstream_text`` says it in words.

    Returns
    -------
    (ParamSet, Task)
        Both decorated with the module's schema (declared when the schema is activated).

    Notes
    -----
    ParamSet rows are validated on insert (every default filled, the md5 of the canonical JSON
    unique: the same parameters cannot be stored under two names); ``ParamSet.add_preset(name)``
    inserts a shipped preset. A task may be inserted before its upstream work is done; populate
    runs exactly the tasks.
    """
    schema, name = module_globals["schema"], module_globals["__name__"]
    paramset = type(f"{prefix}ParamSet", (ParamSetTable, dj.Lookup), {
        "__module__": name, "__qualname__": f"{prefix}ParamSet",
        "__doc__": f"Named {label} parameter sets (:class:`{model.__module__}.{model.__name__}`): ``{attr}``, "
                   f"description, params (every field, defaults filled), params_hash (md5, unique). "
                   f"Presets: {', '.join(presets)}.",
        "definition": _PARAMSET_DEFINITION.format(label=label, attr=attr, model=model.__name__),
        "model": model, "presets": presets, "stage": label, "name_attr": attr})
    schema(paramset, context=module_globals)
    task = type(f"{prefix}Task", (dj.Manual,), {
        "__module__": name, "__qualname__": f"{prefix}Task",
        "__doc__": f"Which {label} parameter set to run on {upstream_text} (may be inserted before that is done).",
        "definition": _TASK_DEFINITION.format(label=label, upstream=upstream, upstream_text=upstream_text,
                                              paramset=paramset.__name__)})
    schema(task, context={**module_globals, paramset.__name__: paramset})
    return paramset, task
