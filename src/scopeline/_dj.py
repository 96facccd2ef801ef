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


def _default_store_fix() -> None:
    """DataJoint 2.3.5 resolves ``<npy@>`` (the default store) as the store named '' and fails
    ("Storage '' is requested but not configured"); treat '' as the default store."""
    from datajoint.settings import Config

    original = Config.get_store_spec
    if getattr(original, "_scopeline_fix", False):
        return

    def get_store_spec(self, store=None, **kwargs):
        return original(self, None if store == "" else store, **kwargs)

    get_store_spec._scopeline_fix = True
    Config.get_store_spec = get_store_spec


_default_store_fix()

__all__ = ["dj"]
