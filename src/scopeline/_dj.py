"""The one place scopeline imports DataJoint (quietly: scopeline configures it itself)."""

import logging
import warnings

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="No datajoint.json found")
    import datajoint as dj

warnings.filterwarnings("ignore", message="MariaDB is not officially supported", category=UserWarning)


class _NoNativeTypeNotice(logging.Filter):
    """DataJoint 2.3 warns about 'native' integer types in the job tables it generates itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Native type")


logging.getLogger("datajoint").addFilter(_NoNativeTypeNotice())

__all__ = ["dj"]
