"""A sweep's grid: Hydra overrides whose values may be comma lists (Hydra's multirun
syntax; commas inside [...], {...} or quotes stay), and the cartesian product of them."""

from __future__ import annotations

import itertools

from ..core.errors import ParamsError


def split_values(value: str) -> list[str]:
    """``a,[1,2],'x,y'`` -> ``["a", "[1,2]", "'x,y'"]``: commas at bracket depth 0 split."""
    parts, depth, quote, cur = [], 0, "", ""
    for ch in value:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        cur += ch
    return [*parts, cur]


def parse_grid(args: list[str]) -> list[tuple[str, list[str]]]:
    """[(key, [value, ...]), ...] from ``key=v1,v2`` arguments; every mistake at once."""
    groups: list[tuple[str, list[str]]] = []
    problems: list[str] = []
    for arg in args:
        key, eq, value = arg.partition("=")
        values = split_values(value)
        if not eq or not key.strip():
            problems.append(f"{arg!r} is not KEY=VALUE[,VALUE...]")
        elif any(not v.strip() for v in values):
            problems.append(f"{arg!r} has an empty value")
        elif any(key == k for k, _ in groups):
            problems.append(f"{key} is given twice: put all its values in one comma list")
        else:
            groups.append((key.strip(), values))
    if not groups and not problems:
        problems.append("no grid: give overrides such as calibrate.method=minmax,entropy precision=int8,fp16")
    if problems:
        raise ParamsError(problems, source="the sweep grid")
    return groups


def grid_points(groups: list[tuple[str, list[str]]]) -> list[list[str]]:
    """Every combination, as Hydra overrides (``key=value``), in the grid's order."""
    keys = [k for k, _ in groups]
    combos = itertools.product(*(values for _, values in groups))
    return [[f"{k}={v}" for k, v in zip(keys, combo, strict=True)] for combo in combos]
