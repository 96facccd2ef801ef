"""The one place the pipeline imports DataJoint (quietly: scopeline configures it itself)."""

import warnings

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="No datajoint.json found")
    import datajoint as dj

warnings.filterwarnings("ignore", message="MariaDB is not officially supported", category=UserWarning)

__all__ = ["dj"]
