"""Subjects: the animals recorded."""

from scopeline._dj import dj

schema = dj.Schema()


@schema
class Subject(dj.Manual):
    """An experimental animal.

    Attributes
    ----------
    subject : str
        Subject id, free text (``"m1"``, ``"ANM-042"``): not restricted to numbers.
    species : str
        Species, default ``"Mus musculus"``.
    sex : {"M", "F", "U"}
        ``"U"`` when unknown.
    date_of_birth : date or None
    subject_description : str
    """

    definition = """
    # An experimental animal
    subject                    : varchar(64)    # subject id (free text)
    ---
    species = 'Mus musculus'   : varchar(64)
    sex = 'U'                  : enum('M', 'F', 'U')
    date_of_birth = null       : date
    subject_description = ''   : varchar(1024)
    """
