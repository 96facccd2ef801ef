"""Where scopeline keeps its own files, and where the lab's recordings live.

scopeline's home directory holds the private database server (when one is used), its credentials,
and the default object store for large arrays. It is chosen, in order, by:

1. the ``SCOPELINE_HOME`` environment variable;
2. the user's data directory (``platformdirs.user_data_dir("scopeline")``, e.g.
   ``~/.local/share/scopeline`` on Linux).

The data root is the folder that recording paths are stored relative to, so that the same database
works on machines that mount the lab's data at different places. It is chosen by
``SCOPELINE_DATA_ROOT``, else by ``data_root`` in ``<home>/config.json``, else the filesystem
root (paths are then stored as absolute paths without the leading slash).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import platformdirs

__all__ = ["home", "data_root", "store_location", "read_home_config"]


def home() -> Path:
    """Return scopeline's home directory (created on first use).

    Returns
    -------
    pathlib.Path
        Absolute path of the home directory.
    """
    env = os.environ.get("SCOPELINE_HOME")
    path = Path(env).expanduser() if env else Path(platformdirs.user_data_dir("scopeline"))
    path = path.resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def read_home_config() -> dict:
    """Return the settings in ``<home>/config.json`` (an empty dict when the file is absent).

    Raises
    ------
    ValueError
        If the file exists but is not a JSON object.
    """
    path = home() / "config.json"
    if not path.exists():
        return {}
    try:
        cfg = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return cfg


def data_root() -> Path:
    """Return the data root that recording paths are stored relative to.

    Returns
    -------
    pathlib.Path
        Absolute, resolved path.
    """
    env = os.environ.get("SCOPELINE_DATA_ROOT") or read_home_config().get("data_root")
    return Path(env).expanduser().resolve() if env else Path("/")


def store_location() -> Path:
    """Return the folder of scopeline's default file object store (``<home>/store``)."""
    path = home() / "store"
    path.mkdir(parents=True, exist_ok=True)
    return path
