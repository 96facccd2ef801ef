"""Small helpers shared by the stage tables."""

from __future__ import annotations

import datetime as _dt

import numpy as np

__all__ = ["progress_bar", "load_npy", "json_default"]


def progress_bar(total: int, desc: str, enabled: bool):
    """A tqdm bar counting frames (disabled when ``enabled`` is False)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="frame", disable=not enabled, leave=False)


def load_npy(ref) -> np.ndarray:
    """An ``<npy@>`` value as an array (fetch returns a lazy reference)."""
    return np.asarray(ref.load() if hasattr(ref, "load") else ref)


def json_default(value):
    """JSON for numpy scalars/arrays and dates in provenance and metadata."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (_dt.date, _dt.datetime)):
        return value.isoformat()
    return str(value)
