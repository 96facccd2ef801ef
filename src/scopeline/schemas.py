"""JSON Schemas of scopeline's parameter sets and the shipped presets, generated from the code.

``python -m scopeline.schemas [FOLDER]`` writes them to ``schemas/`` (the default); the tests check
that the committed files equal what the code generates, so they cannot drift.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pydantic import BaseModel

from scopeline.core import cnmf, initialize, motion
from scopeline.core.simulate import SimulationParams

__all__ = ["schemas", "presets", "write"]


#: stage -> (parameter model, presets, description)
STAGES = {
    "motion": (motion.MotionParams, motion.PRESETS,
               "Motion-correction parameter set of scopeline (preprocessing, registration, output); pixels "
               "refer to the frame after cropping and downsampling unless stated."),
    "initialization": (initialize.InitParams, initialize.PRESETS,
                       "Initialization parameter set of scopeline (seeds, refinement, initial footprints); "
                       "pixels of the motion-corrected movie, Hz of its frame rate."),
    "cnmf": (cnmf.CNMFParams, cnmf.PRESETS,
             "CNMF parameter set of scopeline (noise, spatial and temporal updates, merging); pixels and "
             "frames of the motion-corrected movie."),
}


def _schema(model_cls: type[BaseModel], description: str) -> dict:
    schema = model_cls.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["description"] = description
    return schema


def schemas() -> dict[str, dict]:
    """Schema name -> JSON Schema (dict)."""
    out = {"simulation": SimulationParams.json_schema()}
    out.update({stage: _schema(model, text) for stage, (model, _, text) in STAGES.items()})
    return out


def presets() -> dict[str, dict[str, dict]]:
    """Stage -> preset name -> parameters (JSON-ready dict, every default filled)."""
    return {stage: {name: json.loads(p.canonical_json()) for name, p in named.items()} for stage, (_, named, _) in STAGES.items()}


def write(folder: str | Path) -> list[Path]:
    """Write ``<name>.schema.json`` and ``presets/<stage>/<name>.json`` under ``folder``."""
    folder = Path(folder)
    written = []
    for name, schema in schemas().items():
        path = folder / f"{name}.schema.json"
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        written.append(path)
    for stage, named in presets().items():
        (folder / "presets" / stage).mkdir(parents=True, exist_ok=True)
        for name, params in named.items():
            path = folder / "presets" / stage / f"{name}.json"
            path.write_text(json.dumps(params, indent=2, sort_keys=True) + "\n")
            written.append(path)
    return written


if __name__ == "__main__":  # pragma: no cover
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[2] / "schemas"
    for p in write(target):
        print(p)
