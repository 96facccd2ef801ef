"""scopeline: a DataJoint pipeline for 1-photon miniscope calcium imaging."""

__version__ = "0.1.0"
