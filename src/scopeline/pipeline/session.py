"""Sessions: one visit of a subject to the rig, holding one or more recordings."""

from scopeline._dj import dj
from scopeline.pipeline.subject import Subject  # noqa: F401  (foreign key)

schema = dj.Schema()


@schema
class Session(dj.Manual):
    """A recording session of one subject.

    Attributes
    ----------
    subject : str
        From :class:`~scopeline.pipeline.subject.Subject`.
    session : str
        Session id, free text (often a date such as ``"2026_11_21"``).
    session_start_time : datetime or None
        Start of the session's first recording (acquisition computer's local time) when the
        acquisition metadata has it.
    session_description : str
    """

    definition = """
    # A recording session of one subject
    -> Subject
    session                    : varchar(64)    # session id (free text, often a date)
    ---
    session_start_time = null  : datetime       # local time of the acquisition computer
    session_description = ''   : varchar(1024)
    """
