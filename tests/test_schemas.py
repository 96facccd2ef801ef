"""The JSON Schemas in schemas/ match the parameter objects and validate real parameter sets."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from scopeline.core.simulate import SimulationParams

SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"


def test_simulation_schema_up_to_date():
    committed = json.loads((SCHEMAS / "simulation.schema.json").read_text())
    assert committed == SimulationParams.json_schema(), "regenerate schemas/simulation.schema.json"


def test_simulation_schema_validates():
    schema = json.loads((SCHEMAS / "simulation.schema.json").read_text())
    jsonschema.validate(json.loads(SimulationParams(n_frames=50).to_json()), schema)
    with pytest.raises(jsonschema.ValidationError, match="n_frames"):
        jsonschema.validate({"n_frames": "many"}, schema)
    with pytest.raises(jsonschema.ValidationError, match="unknown_field"):
        jsonschema.validate({"unknown_field": 1}, schema)
