"""Small helpers shared by the stage tables."""

from __future__ import annotations

import numpy as np

__all__ = ["progress_bar", "load_npy"]


def progress_bar(total: int, desc: str, enabled: bool):
    """A tqdm bar counting frames (disabled when ``enabled`` is False)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="frame", disable=not enabled, leave=False)


def load_npy(ref) -> np.ndarray:
    """An ``<npy@>`` value as an array (fetch returns a lazy reference)."""
    return np.asarray(ref.load() if hasattr(ref, "load") else ref)
