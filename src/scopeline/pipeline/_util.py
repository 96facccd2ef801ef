"""Small helpers shared by the stage tables."""

from __future__ import annotations

import datetime as _dt
import hashlib

import numpy as np

from scopeline import memory

__all__ = ["progress_bar", "load_npy", "json_default", "fingerprint", "FetchFingerprint"]


def progress_bar(total: int, desc: str, enabled: bool):
    """A tqdm bar counting frames (disabled when ``enabled`` is False)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="frame", disable=not enabled, leave=False)


def load_npy(ref) -> np.ndarray:
    """An ``<npy@>`` value as an array (fetch returns a lazy reference)."""
    return np.asarray(ref.load() if hasattr(ref, "load") else ref)


def load_npy_writable(ref) -> np.ndarray:
    """An ``<npy@>`` value as a writeable array without a second copy: a private (copy-on-write) map of
    the stored file, so a computation may use it as working memory. (``load`` reads the file into bytes
    and returns a read-only view of them.)"""
    if hasattr(ref, "load"):
        return np.asarray(ref.load(mmap_mode="c"))
    arr = np.asarray(ref)
    return arr if arr.flags.writeable else arr.copy()


def json_default(value):
    """JSON for numpy scalars/arrays and dates in provenance and metadata."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (_dt.date, _dt.datetime)):
        return value.isoformat()
    return str(value)


def fingerprint(value) -> str:
    """A digest of what a ``make_fetch`` returned: numpy arrays by dtype, shape and bytes, ``<npy@>``
    references by their stored metadata (path, shape, dtype; never loaded), containers item by item,
    anything else by ``repr``. Equal digests mean equal upstream data for DataJoint's integrity check."""
    h = hashlib.blake2b(digest_size=20)
    _feed(h, value)
    return h.hexdigest()


def _feed(h, value) -> None:
    if isinstance(value, np.ndarray):
        h.update(f"nd{value.dtype.str}{value.shape}".encode())
        h.update(np.ascontiguousarray(value).view(np.uint8).data if value.size else b"")
    elif hasattr(value, "_meta") and hasattr(value, "load"):  # a lazy <npy@> reference
        h.update(b"npy" + repr(sorted(value._meta.items())).encode())
    elif isinstance(value, dict):
        h.update(b"{")
        for k in sorted(value, key=repr):
            _feed(h, k)
            _feed(h, value[k])
        h.update(b"}")
    elif isinstance(value, (list, tuple)):
        h.update(b"(")
        for v in value:
            _feed(h, v)
        h.update(b")")
    else:
        text = repr(value)
        if " at 0x" in text:  # a default repr holds the object's address: two fetches would never match
            raise TypeError(f"make_fetch returned a {type(value).__name__}, which has no stable repr to fingerprint")
        h.update(text.encode())


class FetchFingerprint:
    """Mixin for tables with ``make_fetch`` / ``make_compute`` / ``make_insert``: DataJoint's tripartite
    make, except that what DataJoint hashes twice to check upstream did not change while computing is
    :func:`fingerprint` of the fetched data, not the data itself (DataJoint's deepdiff walks numpy arrays
    element by element: 33 s of a 608 x 608 x 2,000 CNMF, and it grows with frames and units).

    ``make_fetch`` should return references (``<npy@>``), not loaded arrays: it runs again inside the
    insert's transaction, and ``make_compute`` loads what it needs."""

    def make(self, key, **kwargs):
        fetched = self.make_fetch(key, **kwargs)
        computed = yield fingerprint(fetched)
        if computed is None:
            computed = self.make_compute(key, *fetched)
            yield computed
        self.make_insert(key, *computed)
        del computed
        memory.trim()  # the next stage starts from what is alive, not from this one's high-water mark
        yield
