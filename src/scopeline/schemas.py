"""JSON Schemas of scopeline's parameter sets and the shipped presets, generated from the code.

``python -m scopeline.schemas [FOLDER]`` writes them to ``schemas/`` (the default); the tests check
that the committed files equal what the code generates, so they cannot drift.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pydantic import BaseModel

from scopeline.core.simulate import SimulationParams
from scopeline.pipeline import nwb_metadata, stages

__all__ = ["schemas", "presets", "write"]


def _schema(model_cls: type[BaseModel], description: str) -> dict:
    schema = model_cls.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["description"] = description
    return schema


def schemas() -> dict[str, dict]:
    """Schema name -> JSON Schema (dict)."""
    out = {"simulation": SimulationParams.json_schema(), "nwb_metadata": nwb_metadata.json_schema()}
    out.update({s.name: _schema(s.model, s.description) for s in stages.with_params()})
    return out


def presets() -> dict[str, dict[str, dict]]:
    """Stage -> preset name -> parameters (JSON-ready dict, every default filled)."""
    return {s.name: {name: json.loads(p.canonical_json()) for name, p in s.presets.items()} for s in stages.with_params()}


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
