"""Pipeline presets: one name for the parameter sets of every stage, and queuing the whole chain.

A pipeline preset names a parameter set of each stage (a shipped stage preset, or a parameter set
already in the database); a stage it does not name (a stage registered later) takes its own preset
of the pipeline preset's name, else its ``default``, else its first. :func:`queue` inserts the stage
presets that are missing and the tasks of the chain (one per stage, upstream first), sharing work
already queued or done: a second preset that differs only in CNMF reuses the motion correction and
initialization.
"""

from __future__ import annotations

import json
import warnings
from typing import Mapping, Optional

from scopeline.errors import ScopelineError
from scopeline.pipeline import keys, stages
from scopeline.pipeline._paramsets import validate_params

__all__ = ["PIPELINE_PRESETS", "PresetError", "PresetWarning", "stage_paramsets", "ensure_paramset", "queue",
           "result_key"]

#: preset -> {stage name: parameter-set name}
PIPELINE_PRESETS: dict[str, dict[str, str]] = {
    "default": {"motion": "default", "initialization": "minian", "cnmf": "minian"},
    "minian": {"motion": "minian", "initialization": "minian", "cnmf": "minian"},
    "cnmfe": {"motion": "default", "initialization": "cnmfe", "cnmf": "cnmfe"},
    "fast": {"motion": "fast", "initialization": "minian", "cnmf": "minian"},
    # a movie registered before (e.g. shared data): seeds kept 10 px from the edges, which moved
    # with the earlier registration's shifts (the real CA1 demo recording: 71 of 268 units there)
    "registered": {"motion": "default", "initialization": "registered", "cnmf": "minian"},
}


class PresetError(ScopelineError, ValueError):
    """An unknown pipeline preset or stage parameter set."""


class PresetWarning(UserWarning):
    """A shipped preset's name is in the database with other parameters (an earlier version's)."""


def stage_paramsets(preset: str) -> dict[str, str]:
    """``{stage name: parameter-set name}`` of a pipeline preset, for every stage with parameters.

    Raises
    ------
    PresetError
        If the preset is unknown (the message lists the known ones).
    """
    if preset not in PIPELINE_PRESETS:
        raise PresetError(f"unknown preset {preset!r}: choose one of {', '.join(PIPELINE_PRESETS)}")
    named = PIPELINE_PRESETS[preset]
    return {s.name: named[s.name] if s.name in named else _own_preset(s, preset) for s in stages.with_params()}


def _own_preset(stage, preset: str) -> str:
    """A stage's parameter set for a pipeline preset that does not name it: its preset of that name, else
    its ``default``, else its first."""
    for name in (preset, "default"):
        if name in stage.presets:
            return name
    return next(iter(stage.presets), "default")


def ensure_paramset(stage: str, name: str) -> dict:
    """The primary key of a stage's parameter set, inserting the shipped preset of that name if it is
    not in the database yet.

    A preset's name already in the database keeps its stored parameters (results stay tied to what
    made them); when they differ from this version's preset of that name, a :class:`PresetWarning`
    says so.

    Raises
    ------
    PresetError
        If ``name`` is neither in the database nor a shipped preset of the stage.
    """
    stage = stages.get(stage).name
    table = stages.get(stage).paramset
    key = {table.name_attr: name}
    if not (table & key):
        if name not in table.presets:
            raise PresetError(f"no {stage} parameter set {name!r} in the database and no such preset "
                              f"(presets: {', '.join(table.presets)}; add one with `scopeline paramset add`)")
        table.add_preset(name)
    elif name in table.presets:
        _, shipped = validate_params(table.model, json.loads(table.presets[name].canonical_json()), stage)
        if (table & key).fetch1("params_hash") != shipped:
            warnings.warn(PresetWarning(
                f"{stage} parameter set {name!r} in the database differs from the preset of that name shipped "
                f"with this version of scopeline (an earlier version's); the database's is used, as for the "
                f"results already made with it. To run this version's, add it under another name: scopeline "
                f"paramset add NEW schemas/presets/{stage}/{name}.json --stage {stage}"),
                stacklevel=2)
    return key


def queue(recordings: list[dict], paramsets: Mapping[str, str], stage: Optional[str] = None) -> int:
    """Queue the chain up to ``stage`` (default: every stage) with these parameter sets for the recordings.

    Parameters
    ----------
    recordings : list of dict
        Primary keys of RecordingInfo rows.
    paramsets : dict
        Stage name -> parameter-set name (shipped presets are inserted when missing), e.g.
        :func:`stage_paramsets` of a pipeline preset.
    stage : str, optional
        The last stage to queue.

    Returns
    -------
    int
        Tasks of the last stage added (0 when all were queued before).

    Raises
    ------
    PresetError
        If ``paramsets`` lacks a stage of the chain, or names a parameter set that does not exist.
    """
    chain = [s for s in (stages.chain(stage) if stage else stages.STAGES) if s.task is not None and s.scope == "recording"]
    missing = [s.name for s in chain if s.name not in paramsets]
    if missing:
        raise PresetError(f"no parameter set given for {', '.join(missing)}")
    names = {s.key_attr: ensure_paramset(s.name, paramsets[s.name])[s.key_attr] for s in chain}
    before = len(chain[-1].task())
    for s in chain:
        upto = keys.stage_fields(s.name)
        s.task.insert([{**keys.recording(r), **{a: names[a] for a in upto}} for r in recordings],
                      skip_duplicates=True)
    return len(chain[-1].task()) - before


def result_key(recording: dict, preset: str, stage: str = "cnmf") -> dict:
    """The key of a recording's result of ``stage`` (default its CNMF result, the one exports and reports
    show) made with a pipeline preset."""
    return keys.for_paramsets(recording, stage_paramsets(preset), stage)
