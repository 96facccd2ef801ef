"""Ingestion: register recordings found on disk as Subject / Session / Recording / RecordingInfo rows.

Every recording found under the given path is read and validated first (:mod:`scopeline.core.io`);
only when all are valid are rows inserted, in one transaction, so a bad input leaves no row behind.
Re-ingesting a recording already in the database is a no-op.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from scopeline.core import formats, io
from scopeline.pipeline import acquisition, activate, keys
from scopeline.pipeline.session import Session
from scopeline.pipeline.subject import Subject
from scopeline.errors import ScopelineError

__all__ = ["IngestError", "Ingested", "ingest", "match_pattern"]


class IngestError(ScopelineError, ValueError):
    """Ingestion refused: the message names the path or key and the problem."""


@dataclass
class Ingested:
    """One recording's outcome: its key, and whether it was new."""

    key: dict
    path: str
    new: bool
    n_frames: int
    fps: float


def match_pattern(pattern: str, relpath: str) -> dict:
    """Take ``subject`` and ``session`` from a recording's path by a folder pattern.

    Parameters
    ----------
    pattern : str
        Folder template matched against the whole path relative to the data root: ``{subject}`` and
        ``{session}`` match one folder name each, ``*`` any one folder name, ``**`` any number of
        folders (also none). Example for the V4 DAQ layout
        ``lab/m1/2026_11_21/10_00_00/My_V4_Miniscope``: ``"**/{subject}/{session}/*/*"``.
    relpath : str
        The recording's path relative to the data root, POSIX separators.

    Returns
    -------
    dict
        ``{"subject": ..., "session": ...}`` (only the fields present in the pattern).

    Raises
    ------
    IngestError
        If the pattern does not match the path.
    """
    for name in ("{subject}", "{session}"):
        if pattern.count(name) > 1:
            raise IngestError(f"pattern {pattern!r}: {name} appears more than once")
    parts = []
    for token in re.split(r"(\{subject\}|\{session\}|\*\*/|/\*\*|\*\*|\*)", pattern.strip("/")):
        if token in ("{subject}", "{session}"):
            parts.append(f"(?P<{token[1:-1]}>[^/]+)")
        elif token == "**/":
            parts.append("(?:.*/)?")
        elif token == "/**":
            parts.append("(?:/.*)?")
        elif token == "**":
            parts.append(".*")
        elif token == "*":
            parts.append("[^/]+")
        else:
            parts.append(re.escape(token))
    match = re.fullmatch("".join(parts), relpath.strip("/"))
    if match is None:
        raise IngestError(f"{relpath}: does not match the pattern {pattern!r} (relative to the data root)")
    return match.groupdict()


def _identity(source: io.RecordingSource, rel: str, subject: str | None, session: str | None,
              pattern: str | None) -> dict:
    ident = match_pattern(pattern, rel) if pattern else {}
    if subject:
        ident["subject"] = subject
    if session:
        ident["session"] = session
    missing = [k for k in ("subject", "session") if not ident.get(k)]
    if missing:
        raise IngestError(
            f"{source.folder}: no {' and no '.join(missing)} given: pass subject= and session= "
            f"(--subject/--session) or a pattern (--pattern '**/{{subject}}/{{session}}/*/*')"
        )
    try:
        return {"subject": keys.check_id("subject", ident["subject"]), "session": keys.check_id("session", ident["session"])}
    except keys.IdentifierError as err:
        raise IngestError(f"{source.folder}: {err}") from None


def ingest(path: str | Path, subject: str | None = None, session: str | None = None, *,
           pattern: str | None = None, fps: float | None = None, subject_info: dict | None = None,
           session_description: str = "") -> list[Ingested]:
    """Ingest the recordings at ``path`` into the database.

    Parameters
    ----------
    path : str or pathlib.Path
        A recording folder or movie file, or a folder above several recordings (see
        :func:`scopeline.core.io.discover`). Must lie under the data root.
    subject, session : str, optional
        Identity of the recordings; overrides what ``pattern`` takes from the path.
    pattern : str, optional
        Folder template giving subject and session from each recording's path (:func:`match_pattern`).
    fps : float, optional
        Frame rate in Hz for recordings without an acquisition clock (TIFF; AVI without header rate).
    subject_info : dict, optional
        Extra Subject attributes (``sex``, ``species``, ``date_of_birth``, ...) for a new subject.
    session_description : str
        Description for a new session.

    Returns
    -------
    list of Ingested
        One per recording, in the order found; ``new`` is False for recordings already ingested.

    Raises
    ------
    scopeline.core.io.RecordingError
        If a recording is missing, corrupt or inconsistent (nothing is inserted).
    IngestError
        If identity is missing, the path is outside the data root, or a recording was already
        ingested under another subject/session (nothing is inserted).
    """
    conn = activate()["connection"]
    sources = io.discover(path)
    plan = []
    for source in sources:
        try:
            rel = acquisition.relative_path(source.folder)
        except ValueError as err:
            raise IngestError(str(err)) from err
        ident = _identity(source, rel, subject, session, pattern)
        existing = (acquisition.Recording & {"recording_path": rel}).to_dicts()
        if existing:
            row = existing[0]
            if (row["subject"], row["session"]) != (ident["subject"], ident["session"]):
                raise IngestError(
                    f"{source.folder}: already ingested as subject {row['subject']!r} session "
                    f"{row['session']!r} (recording {row['recording_id']})"
                )
            plan.append((source, ident, rel, None, row))
        else:
            plan.append((source, ident, rel, io.read_metadata(source, fps=fps), None))

    results: list[Ingested | None] = [None] * len(plan)
    for i, (source, ident, rel, meta, row) in enumerate(plan):  # already ingested: make sure of its info
        if row is not None:
            key = keys.recording(row)
            acquisition.RecordingInfo.populate(key, suppress_errors=False)
            n_frames, rate = (acquisition.RecordingInfo & key).fetch1("n_frames", "fps")
            results[i] = Ingested(key, rel, False, int(n_frames), float(rate))
    with conn.transaction:
        for i, (source, ident, rel, meta, row) in enumerate(plan):
            if row is not None:
                continue
            Subject.insert1({"subject": ident["subject"], **(subject_info or {})}, skip_duplicates=True)
            Session.insert1({**ident, "session_start_time": meta.start_time,
                             "session_description": session_description}, skip_duplicates=True)
            taken = (acquisition.Recording & ident).to_arrays("recording_id")
            key = {**ident, "recording_id": int(max(taken) + 1) if len(taken) else 0}
            clockless = meta.timing_source == "nominal"
            fmt = formats.get(source.system)  # a format registered after the table was declared: its row
            acquisition.AcquisitionSystem.insert1({"acquisition_system": fmt.name,
                                                   "system_description": fmt.description}, skip_duplicates=True)
            acquisition.Recording.insert1({**key, "acquisition_system": source.system,
                                           "recording_path": rel, "fps_given": fps if clockless else None})
            master, files = acquisition.info_rows(key, meta)
            acquisition.RecordingInfo.insert1(master, allow_direct_insert=True)
            acquisition.RecordingInfo.File.insert(files, allow_direct_insert=True)
            results[i] = Ingested(key, rel, True, meta.n_frames, meta.fps)
    return results
