"""Parameter-set Lookup tables shared by every stage: validation on insert, canonical hash, presets."""

from __future__ import annotations

import hashlib
import json

from pydantic import BaseModel, ValidationError

from scopeline.errors import ScopelineError

__all__ = ["ParamSetError", "validate_params", "parse_params", "ParamSetTable"]


class ParamSetError(ScopelineError, ValueError):
    """A parameter set was refused: the message names the field and the reason."""


def validate_params(model_cls: type[BaseModel], params, stage: str) -> tuple[dict, str]:
    """Validate parameters against a stage's pydantic model; return (every default filled, md5 hash).

    Parameters
    ----------
    model_cls : type
        The stage's parameter model (a :class:`scopeline.core.params.StageParams`) (e.g. :class:`scopeline.core.cnmf.CNMFParams`).
    params : dict or str
        Parameters (a JSON string or dict); missing fields take their defaults.
    stage : str
        Stage name for messages ("motion", "initialization", "CNMF").

    Returns
    -------
    (dict, str)
        The full parameter set and the md5 hex digest of its canonical JSON (sorted keys).

    Raises
    ------
    ParamSetError
        Naming each invalid field and why.
    """
    if isinstance(params, str):
        try:
            params = json.loads(params)
        except json.JSONDecodeError as err:
            raise ParamSetError(f"params: not valid JSON ({err})") from err
    try:
        model = model_cls.model_validate(params or {})
    except ValidationError as err:
        reasons = "; ".join(f"{'.'.join(str(x) for x in e['loc']) or 'params'}: {e['msg']}" for e in err.errors())
        raise ParamSetError(f"invalid {stage} parameters: {reasons}") from None
    canonical = model.canonical_json()
    return json.loads(canonical), hashlib.md5(canonical.encode()).hexdigest()


def parse_params(model_cls: type[BaseModel], params: dict, stage: str, name: str) -> BaseModel:
    """A stored parameter set as its model, for a make (no database access).

    Raises
    ------
    ParamSetError
        If the stored parameters no longer validate (e.g. written by another scopeline version).
    """
    try:
        return model_cls.model_validate(params)
    except ValidationError as err:
        raise ParamSetError(f"{stage} paramset {name!r} is invalid: {err}") from None


class ParamSetTable:
    """Mixin for a stage's parameter-set Lookup table.

    Subclasses set ``model`` (the pydantic parameter class), ``presets`` (name -> model instance),
    ``stage`` (for messages) and ``name_attr`` (the primary-key attribute). Rows are validated on
    insert (defaults filled, hash computed); the same parameters cannot be stored under two names.
    """

    model: type[BaseModel]
    presets: dict
    stage: str
    name_attr: str

    def insert(self, rows, **kwargs):
        """Validate each row's params (filling defaults and the hash) before inserting."""
        checked = []
        for row in rows:
            row = dict(row)
            params, digest = validate_params(self.model, row.get("params"), self.stage)
            row["params"], row["params_hash"] = params, digest
            same = (type(self)() & {"params_hash": digest}).to_dicts()
            if same and same[0][self.name_attr] != row.get(self.name_attr):
                raise ParamSetError(
                    f"paramset {row.get(self.name_attr)!r}: the same parameters are stored as "
                    f"{same[0][self.name_attr]!r}")
            checked.append(row)
        super().insert(checked, **kwargs)

    @classmethod
    def add_preset(cls, name: str) -> dict:
        """Insert a shipped preset (no-op if present); return its key.

        Raises
        ------
        ParamSetError
            If ``name`` is not a shipped preset of this stage.
        """
        if name not in cls.presets:
            raise ParamSetError(f"unknown {cls.stage} preset {name!r}; shipped: {sorted(cls.presets)}")
        key = {cls.name_attr: name}
        if not (cls() & key):
            model = cls.presets[name]
            cls().insert1({**key, "description": f"scopeline preset {name!r}",
                           "params": json.loads(model.canonical_json())})
        return key

