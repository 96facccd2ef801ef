"""The one base class of the errors a user can cause and fix, and the CLI's exit code for each kind.

Every scopeline error a user can act on (a bad recording, invalid parameters, an unknown preset or
stage, a database of an earlier version, a storage setting missing) derives from
:class:`ScopelineError`; its message names the file, key or setting and what to do. The ``scopeline``
command prints such an error as one line and exits with its class's ``exit_code``
(:func:`exit_code`); anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = ["ScopelineError", "ConfigurationError", "exit_code"]


class ScopelineError(Exception):
    """An error the user can act on: the message says what is wrong and how to fix it.

    Attributes
    ----------
    exit_code : int
        Exit status of the ``scopeline`` command when it stops on this error: 1 bad input
        (recordings, parameters, names), 2 configuration (database, storage, server), 3 a database
        of an earlier scopeline.
    """

    exit_code = 1


class ConfigurationError(ScopelineError):
    """The database server, object store or data root is not set up for what was asked."""

    exit_code = 2


def exit_code(err: BaseException) -> int:
    """The ``scopeline`` command's exit status for an error (1 for errors not of scopeline's own)."""
    return getattr(err, "exit_code", 1) if isinstance(err, ScopelineError) else 1
