"""Result identity: which fields name a recording and a stage's result, built from the stage registry.

A result of stage X is named by the recording (:data:`RECORDING`) and the parameter-set attribute of
every stage up to X (``motion_paramset``, ``init_paramset``, ``cnmf_paramset`` for CNMF). Nothing
else in scopeline spells these lists out: it asks :func:`fields`, and builds keys and restrictions
with :func:`restriction`, :func:`of`, :func:`for_paramsets` and :func:`name`.

>>> from scopeline.pipeline import keys
>>> keys.fields("cnmf")
('subject', 'session', 'recording_id', 'motion_paramset', 'init_paramset', 'cnmf_paramset')
>>> keys.restriction(subject="m1", cnmf="minian")
{'subject': 'm1', 'cnmf_paramset': 'minian'}
"""

from __future__ import annotations

import re
from typing import Mapping, Optional

from scopeline.errors import ScopelineError

__all__ = ["RECORDING", "fields", "stage_fields", "of", "recording", "recording_text", "restriction", "for_paramsets", "name",
           "describe", "IdentifierError", "check_id", "file_part", "ID_PATTERN"]

#: the fields naming one recording (acquisition.Recording's primary key)
RECORDING = ("subject", "session", "recording_id")

#: subject and session ids: 1-64 letters, digits, ``_``, ``-``, ``.`` and ``+``, starting with a letter or
#: digit (so an id is never a path: no ``/``, ``\``, ``..`` or leading ``.``, and is the same on every
#: file system)
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}")


class IdentifierError(ScopelineError, ValueError):
    """A subject or session id outside :data:`ID_PATTERN`."""


def check_id(kind: str, value: str) -> str:
    """``value`` if it is a valid ``kind`` id (subject, session: :data:`ID_PATTERN`, no ``..``).

    Raises
    ------
    IdentifierError
        Naming the id and what is allowed.
    """
    text = str(value)
    if not ID_PATTERN.fullmatch(text) or ".." in text:
        raise IdentifierError(f"{kind} id {text!r}: use 1-64 letters, digits, '_', '-', '.' or '+', starting with a "
                              "letter or digit (ids name files and folders, so no '/', '\\', '..', spaces or leading "
                              "'.')")
    return text


def file_part(value) -> str:
    """``value`` as one safe file-name part, whatever the database holds: characters outside ``[A-Za-z0-9_.+-]``
    become ``_``, leading dots ``_`` and ``..`` ``__`` (the result never names another folder)."""
    text = re.sub(r"[^A-Za-z0-9_.+-]", "_", str(value)) or "_"
    text = text.replace("..", "__")
    return "_" + text[1:] if text.startswith(".") else text


def stage_fields(stage: Optional[str] = None) -> tuple[str, ...]:
    """The parameter-set attributes of a stage's result (every stage up to it; default: all stages)."""
    from scopeline.pipeline import stages  # the registry imports the stage modules, which use keys

    chain = stages.chain(stage) if stage else stages.STAGES
    return tuple(s.key_attr for s in chain if s.key_attr)


def fields(stage: Optional[str] = None) -> tuple[str, ...]:
    """Every field naming a result of ``stage`` (default: the fields of every stage's results)."""
    return RECORDING + stage_fields(stage)


def of(key: Mapping, stage: Optional[str] = None) -> dict:
    """The part of ``key`` that names a result of ``stage`` (fields ``key`` lacks left out)."""
    return {k: key[k] for k in fields(stage) if k in key}


def recording(key: Mapping) -> dict:
    """The recording's part of a key."""
    return {k: key[k] for k in RECORDING}


def recording_text(key: Mapping) -> str:
    """The recording of a key as ``subject/session/recording_id`` (progress bars, messages)."""
    return "/".join(str(key[k]) for k in RECORDING)


def restriction(*, subject=None, session=None, recording_id=None, **paramsets) -> dict:
    """A restriction from optional values (None: any), parameter sets given by stage name or attribute.

    Parameters
    ----------
    subject, session, recording_id : optional
        The recording's fields.
    **paramsets : str or None
        ``motion="default"`` or ``motion_paramset="default"`` (aliases such as ``init`` work too).

    Raises
    ------
    scopeline.pipeline.stages.StageError
        If a name is neither a stage nor a stage's parameter-set attribute.
    """
    from scopeline.pipeline import stages  # the registry imports the stage modules, which use keys

    out = {k: v for k, v in (("subject", subject), ("session", session), ("recording_id", recording_id))
           if v is not None}
    attrs = {s.key_attr for s in stages.with_params()}
    for given, value in paramsets.items():
        if value is not None:
            out[given if given in attrs else stages.get(given).key_attr or given] = value
    return out


def for_paramsets(recording_key: Mapping, paramsets: Mapping[str, str], stage: Optional[str] = None) -> dict:
    """The key of a recording's result made with these parameter sets (stage name -> paramset name).

    Raises
    ------
    KeyError
        If ``paramsets`` lacks one of the stages up to ``stage``.
    """
    from scopeline.pipeline import stages  # the registry imports the stage modules, which use keys

    chain = stages.chain(stage) if stage else stages.STAGES
    return {**recording(recording_key), **{s.key_attr: paramsets[s.name] for s in chain if s.key_attr}}


def name(key: Mapping) -> str:
    """File-name stem of a result: its fields' values joined by ``_`` (subject_session_recording_motion_...),
    each made a safe file-name part (:func:`file_part`)."""
    return "_".join(file_part(key[k]) for k in fields() if k in key)


def describe(key: Mapping) -> str:
    """A result's fields in words for messages (``subject m1, session d1, ..., cnmf minian``)."""
    from scopeline.pipeline import stages  # the registry imports the stage modules, which use keys

    labels = {s.key_attr: s.name for s in stages.with_params()}
    return ", ".join(f"{labels.get(k, k)} {key[k]}" for k in fields() if k in key)
