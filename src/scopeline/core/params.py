"""The base of every stage's parameter set: strict fields and a canonical JSON form."""

from __future__ import annotations

import json

from pydantic import BaseModel, ConfigDict

__all__ = ["StageParams"]


class StageParams(BaseModel):
    """A stage's parameters: unknown fields are refused; :meth:`canonical_json` gives equal text for equal
    parameters (every default filled, keys sorted), which the parameter-set tables hash."""

    model_config = ConfigDict(extra="forbid")

    def canonical_json(self) -> str:
        """JSON with every default filled and keys sorted."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
