"""Pipeline presets: one name for the parameter sets of every stage, and queuing the whole chain.

A pipeline preset names a motion, an initialization and a CNMF parameter set (each a shipped stage
preset, or a parameter set already in the database). :func:`queue` inserts the stage presets that are
missing and the tasks of the chain (MotionTask -> InitTask -> CNMFTask), sharing work already queued
or done: a second preset that differs only in CNMF reuses the motion correction and initialization.
"""

from __future__ import annotations

import json
import warnings

from scopeline.pipeline import cnmf, initialization, motion
from scopeline.pipeline._paramsets import validate_params

__all__ = ["PIPELINE_PRESETS", "PARAMSET_TABLES", "PresetError", "PresetWarning", "stage_paramsets",
           "ensure_paramset", "queue", "result_key"]

#: preset -> {"motion", "init", "cnmf"} parameter-set names
PIPELINE_PRESETS: dict[str, dict[str, str]] = {
    "default": {"motion": "default", "init": "minian", "cnmf": "minian"},
    "minian": {"motion": "minian", "init": "minian", "cnmf": "minian"},
    "cnmfe": {"motion": "default", "init": "cnmfe", "cnmf": "cnmfe"},
    "fast": {"motion": "fast", "init": "minian", "cnmf": "minian"},
    # a movie registered before (e.g. shared data): seeds kept 10 px from the edges, which moved
    # with the earlier registration's shifts (the real CA1 demo recording: 71 of 268 units there)
    "registered": {"motion": "default", "init": "registered", "cnmf": "minian"},
}

#: stage name -> its parameter-set table
PARAMSET_TABLES = {"motion": motion.MotionParamSet, "init": initialization.InitParamSet, "cnmf": cnmf.CNMFParamSet}
#: stage name -> its folder of shipped presets under schemas/presets/
PRESET_FOLDERS = {"motion": "motion", "init": "initialization", "cnmf": "cnmf"}


class PresetError(ValueError):
    """An unknown pipeline preset or stage parameter set."""


class PresetWarning(UserWarning):
    """A shipped preset's name is in the database with other parameters (an earlier version's)."""


def stage_paramsets(preset: str) -> dict[str, str]:
    """``{"motion", "init", "cnmf"}`` parameter-set names of a pipeline preset.

    Raises
    ------
    PresetError
        If the preset is unknown (the message lists the known ones).
    """
    if preset not in PIPELINE_PRESETS:
        raise PresetError(f"unknown preset {preset!r}: choose one of {', '.join(PIPELINE_PRESETS)}")
    return dict(PIPELINE_PRESETS[preset])


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
    table = PARAMSET_TABLES[stage]
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
                f"paramset add NEW schemas/presets/{PRESET_FOLDERS[stage]}/{name}.json --stage {stage}"),
                stacklevel=2)
    return key


def queue(recordings: list[dict], motion_paramset: str, init_paramset: str, cnmf_paramset: str) -> int:
    """Queue motion correction, initialization and CNMF with these parameter sets for the recordings.

    Parameters
    ----------
    recordings : list of dict
        Primary keys of RecordingInfo rows.
    motion_paramset, init_paramset, cnmf_paramset : str
        Parameter-set names (shipped presets are inserted when missing).

    Returns
    -------
    int
        CNMF tasks added (0 when all were queued before).
    """
    m = ensure_paramset("motion", motion_paramset)
    i = ensure_paramset("init", init_paramset)
    c = ensure_paramset("cnmf", cnmf_paramset)
    before = len(cnmf.CNMFTask())
    motion.MotionTask.insert([{**k, **m} for k in recordings], skip_duplicates=True)
    initialization.InitTask.insert([{**k, **m, **i} for k in recordings], skip_duplicates=True)
    cnmf.CNMFTask.insert([{**k, **m, **i, **c} for k in recordings], skip_duplicates=True)
    return len(cnmf.CNMFTask()) - before


def result_key(recording: dict, preset: str) -> dict:
    """The CNMF primary key of a recording processed with a pipeline preset."""
    names = stage_paramsets(preset)
    return {**{k: recording[k] for k in ("subject", "session", "recording_id")},
            "motion_paramset": names["motion"], "init_paramset": names["init"], "cnmf_paramset": names["cnmf"]}
