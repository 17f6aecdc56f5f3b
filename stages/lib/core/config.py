"""Reading params.yaml: YAML -> the typed :class:`~.params.Params`, then the semantic checks.

Stages read params only through :func:`load_params`: it rejects unknown and missing keys,
checks types (:mod:`.schema`) and values (:mod:`.params_check`), and reports every problem at
once in one :class:`~.errors.ParamsError`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

from . import schema
from .errors import ParamsError
from .params import Params
from .params_check import validate


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml; raise ParamsError listing every problem."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError([f"file not found: {path} (run from the project root)"], str(path))
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ParamsError([f"not valid YAML: {exc}".replace("\n", " ")], str(path)) from exc
    return params_from_dict(raw, source=str(path))


def params_from_dict(raw: Any, source: str = "params.yaml") -> Params:
    """Map an already parsed params mapping onto :class:`Params`; raise ParamsError listing every problem."""
    problems: list[str] = []
    params = schema.build(Params, raw, "", problems)
    if not problems:
        problems.extend(validate(params))
    if problems:
        raise ParamsError(problems, source)
    return with_model_normalisation(params)


def with_model_normalisation(p: Params) -> Params:
    """``p`` with data.mean/std replaced by the model's own normalisation where the model
    names one (torchvision's ImageNet weights expect ImageNet's), so that every stage reads
    the normalisation in force from data.mean/std."""
    if p.model.mean is None or p.model.std is None:
        return p
    data = dataclasses.replace(p.data, mean=list(p.model.mean), std=list(p.model.std))
    return dataclasses.replace(p, data=data)
