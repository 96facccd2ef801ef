"""The JSON Schemas and presets in schemas/ match the code and validate real parameter sets."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from scopeline import schemas as sch
from scopeline.core.motion import MotionParams
from scopeline.core.simulate import SimulationParams

SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"


@pytest.mark.parametrize("name", sorted(sch.schemas()))
def test_schema_files_up_to_date(name):
    committed = json.loads((SCHEMAS / f"{name}.schema.json").read_text())
    assert committed == sch.schemas()[name], f"run: python -m scopeline.schemas  ({name} changed)"


def test_preset_files_up_to_date_and_valid():
    schema = json.loads((SCHEMAS / "motion.schema.json").read_text())
    for name, params in sch.presets()["motion"].items():
        committed = json.loads((SCHEMAS / "presets" / "motion" / f"{name}.json").read_text())
        assert committed == params, f"run: python -m scopeline.schemas  (preset {name} changed)"
        jsonschema.validate(committed, schema)
        assert MotionParams.model_validate(committed).canonical_json() == json.dumps(committed, sort_keys=True, separators=(",", ":"))


def test_simulation_schema_validates():
    schema = json.loads((SCHEMAS / "simulation.schema.json").read_text())
    jsonschema.validate(json.loads(SimulationParams(n_frames=50).to_json()), schema)
    with pytest.raises(jsonschema.ValidationError, match="n_frames"):
        jsonschema.validate({"n_frames": "many"}, schema)
    with pytest.raises(jsonschema.ValidationError, match="unknown_field"):
        jsonschema.validate({"unknown_field": 1}, schema)


def test_motion_schema_refuses_bad_values():
    schema = json.loads((SCHEMAS / "motion.schema.json").read_text())
    jsonschema.validate({"registration": {"mode": "piecewise"}}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"registration": {"mode": "wobbly"}}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"preprocess": {"denoise_window": 0}}, schema)
