"""Mapping a YAML mapping onto (frozen) dataclasses: unknown and missing keys, and values of
the wrong type, are collected as problems instead of raised one at a time."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any


def build(cls: type, raw: Any, where: str, problems: list[str]) -> Any:
    """``cls(**raw)`` with every field converted to its annotated type, or None (see problems)."""
    return _build(cls, raw, where, problems)


def _build(cls: type, raw: Any, where: str, problems: list[str]) -> Any:
    label = where or "top level"
    if not isinstance(raw, dict):
        problems.append(f"{label}: expected a mapping, got {type(raw).__name__}")
        return None
    hints = typing.get_type_hints(cls)
    fields = [f.name for f in dataclasses.fields(cls)]
    for key in raw:
        if key not in hints:
            problems.append(f"{_join(where, key)}: unknown key (valid: {', '.join(fields)})")
    values = {}
    for name in fields:
        if name not in raw:
            problems.append(f"{_join(where, name)}: missing")
            continue
        values[name] = _convert(hints[name], raw[name], _join(where, name), problems)
    if len(values) != len(fields):
        return None
    try:
        return cls(**values)
    except TypeError as exc:  # only reachable through a bug in this module
        problems.append(f"{label}: {exc}")
        return None


def _convert(tp: Any, value: Any, where: str, problems: list[str]) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, where, problems)  # type: ignore[arg-type]
    if origin in (typing.Union, types.UnionType):  # `X | None`: null is allowed
        options = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None and len(options) < len(typing.get_args(tp)):
            return None
        return _convert_union(options, value, where, problems)
    if origin is dict:
        key_tp, item_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            problems.append(f"{where}: expected a mapping, got {value!r}")
            return {}
        return {
            _convert(key_tp, k, f"{where} key {k!r}", problems): _convert(item_tp, v, f"{where}.{k}", problems)
            for k, v in value.items()
        }
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            problems.append(f"{where}: expected a list, got {value!r}")
            return []
        return [_convert(item_tp, v, f"{where}[{i}]", problems) for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            problems.append(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            problems.append(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            problems.append(f"{where}: expected a number, got {value!r}")
            return value
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            problems.append(f"{where}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported field type {tp!r} at {where}")  # a bug, not user input


def _convert_union(options: list[Any], value: Any, where: str, problems: list[str]) -> Any:
    """The first of ``options`` that ``value`` converts to without a problem (`bool | str`)."""
    if len(options) == 1:
        return _convert(options[0], value, where, problems)
    for option in options:
        scratch: list[str] = []
        converted = _convert(option, value, where, scratch)
        if not scratch:
            return converted
    names = " or ".join(getattr(o, "__name__", str(o)) for o in options)
    problems.append(f"{where}: expected {names}, got {value!r}")
    return value


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key
