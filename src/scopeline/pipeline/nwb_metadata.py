"""NWB metadata a lab sets: who recorded, where, with which indicator and optics (what the recording
files do not say), from a YAML or JSON file validated against ``schemas/nwb_metadata.schema.json``.

In NeuroConv's get-metadata / edit / write spirit: :func:`get_metadata` gives what scopeline would
write for a result (its defaults, and the experimenter the acquisition software recorded), a lab
edits a file with the fields it knows, and :func:`scopeline.pipeline.nwb.export_nwb` writes the
merge (``metadata=`` the file, or ``SCOPELINE_NWB_METADATA`` naming the lab's file for every export).

Example file (YAML; every field optional)::

    NWBFile:
      experimenter: ["Doe, Jane"]
      institution: University of Somewhere
      lab: Memory Lab
    Ophys:
      ImagingPlane:
        indicator: GCaMP6f
        location: CA1
        excitation_lambda: 470.0
        emission_lambda: 525.0
        grid_spacing_um: 1.1
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from scopeline.errors import ScopelineError

__all__ = ["NWBMetadata", "MetadataError", "load", "resolve", "get_metadata", "json_schema"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NWBFileMetadata(_Strict):
    """Fields of the NWB file itself."""

    experimenter: Optional[list[str]] = Field(None, description="Who recorded, 'Last, First' (default: the "
                                              "researcher the acquisition software recorded, if any).")
    institution: Optional[str] = Field(None, description="Institution where the experiment was performed.")
    lab: Optional[str] = Field(None, description="Lab where the experiment was performed.")
    experiment_description: Optional[str] = Field(None, description="General description of the experiment.")
    related_publications: Optional[list[str]] = Field(None, description="DOIs or URLs of related publications.")
    keywords: Optional[list[str]] = Field(None, description="Added to scopeline's own keywords.")


class ImagingPlaneMetadata(_Strict):
    """The optics and the imaged region."""

    indicator: str = Field("GCaMP", min_length=1, description="Calcium indicator, e.g. GCaMP6f, jGCaMP8m.")
    location: str = Field("root", min_length=1, description="Imaged brain region (Allen CCF acronym for mice, "
                          "e.g. CA1; default 'root': the brain, region not recorded).")
    excitation_lambda: float = Field(470.0, gt=0, description="Excitation wavelength, nm (the Miniscope's blue "
                                     "LED by default).")
    emission_lambda: float = Field(520.0, gt=0, description="Emission wavelength, nm (GCaMP's peak by default).")
    grid_spacing_um: Optional[float] = Field(None, gt=0, description="Pixel size of the raw frame, micrometers "
                                             "(not written when unknown).")


class OphysMetadata(_Strict):
    ImagingPlane: ImagingPlaneMetadata = Field(default_factory=ImagingPlaneMetadata)


class NWBMetadata(_Strict):
    """What a lab sets in its NWB files (NeuroConv's layout: ``NWBFile`` and ``Ophys`` sections)."""

    NWBFile: NWBFileMetadata = Field(default_factory=NWBFileMetadata)
    Ophys: OphysMetadata = Field(default_factory=OphysMetadata)

    def given(self) -> set[str]:
        """Dotted names of the fields set explicitly (not defaults), e.g. ``Ophys.ImagingPlane.indicator``."""
        out = {f"NWBFile.{k}" for k in self.NWBFile.model_fields_set}
        return out | {f"Ophys.ImagingPlane.{k}" for k in self.Ophys.ImagingPlane.model_fields_set}


class MetadataError(ScopelineError, ValueError):
    """A lab metadata file that cannot be read or does not validate (the message names the file and field)."""


def json_schema() -> dict:
    """JSON Schema of the lab metadata file."""
    schema = NWBMetadata.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["description"] = ("Lab metadata of scopeline's NWB files (YAML or JSON): who, where, indicator and "
                             "optics; every field optional.")
    return schema


def load(path: Union[str, Path]) -> NWBMetadata:
    """Read and validate a lab metadata file (``.yaml``/``.yml`` or ``.json``).

    Raises
    ------
    MetadataError
        If the file is missing or unreadable, not YAML/JSON, or a field is unknown or invalid.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise MetadataError(f"{path}: cannot read the NWB metadata file ({err.strerror or err})") from None
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            raw = yaml.safe_load(text)
        else:
            raw = json.loads(text)
    except Exception as err:  # yaml.YAMLError, json.JSONDecodeError
        raise MetadataError(f"{path}: not valid {'YAML' if path.suffix.lower() in ('.yaml', '.yml') else 'JSON'} "
                            f"({err})") from None
    return _validate(raw or {}, str(path))


def _validate(raw, where: str) -> NWBMetadata:
    try:
        return NWBMetadata.model_validate(raw)
    except ValidationError as err:
        reasons = "; ".join(f"{'.'.join(str(x) for x in e['loc']) or 'metadata'}: {e['msg']}" for e in err.errors())
        raise MetadataError(f"{where}: invalid NWB metadata: {reasons} (see schemas/nwb_metadata.schema.json)") \
            from None


def resolve(metadata=None) -> NWBMetadata:
    """The lab metadata for an export: ``metadata`` (a file path, a dict or an :class:`NWBMetadata`), else
    the file ``SCOPELINE_NWB_METADATA`` names, else the defaults.

    Raises
    ------
    MetadataError
        If the file or dict does not validate.
    """
    if isinstance(metadata, NWBMetadata):
        return metadata
    if isinstance(metadata, dict):
        return _validate(metadata, "metadata")
    if metadata is not None:
        return load(metadata)
    lab = os.environ.get("SCOPELINE_NWB_METADATA")
    return load(lab) if lab else NWBMetadata()


def get_metadata(device_metadata: Optional[dict] = None, metadata=None) -> dict:
    """What an export writes (NeuroConv's ``get_metadata``): the lab metadata (:func:`resolve`) with the
    experimenter the acquisition software recorded (UCLA Miniscope DAQ ``researcherName``) where the lab's
    leaves it unset; a plain dict to edit and pass back as ``metadata=``."""
    out = resolve(metadata)
    if out.NWBFile.experimenter is None:
        session = (device_metadata or {}).get("session") or {}
        name = str(session.get("researcherName") or "").strip() if isinstance(session, dict) else ""
        if name:
            out = out.model_copy(update={"NWBFile": out.NWBFile.model_copy(update={"experimenter": [name]})})
    return out.model_dump(mode="json")
