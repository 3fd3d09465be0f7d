"""How an ablation's rows name its factors and levels: a level is the factor's own spec column (typed), the base's
level of each factor is the base row's, and levels are ordered as the study file lists them. Shared by `effects`."""

from __future__ import annotations

import ast
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from .tables import _level_text, _missing

#: factor values of rows that are not one factor's level: the base, and a factorial cell (its level names all)
SPECIAL = ("base", "factorial")


def factor_names(rows: list[dict[str, Any]], factorial: bool) -> list[str]:
    """The varied factors in the order their trials ran (a factorial's from its levels' (factor, value) pairs)."""
    if not factorial:
        return list(dict.fromkeys(r["factor"] for r in rows if r["factor"] not in SPECIAL))
    names: dict[str, None] = {}
    for r in rows:
        level = r.get("level")
        pairs = ast.literal_eval(level) if isinstance(level, str) else level
        if isinstance(pairs, (tuple, list)):
            names.update((str(p[0]), None) for p in pairs if isinstance(p, (tuple, list)) and len(p) == 2)
    return list(names)


def order_levels(factor: str, seen: list[Any], base: Any, has_base: bool, given: Sequence[Any] | None) -> list[Any]:
    """A factor's levels (the base's included): the study file's order when given, else numbers sorted and other
    values in trial order after the base's."""
    levels = unique_levels(([base] if has_base else []) + seen)
    if given is not None:
        listed = [lv.get(factor) if isinstance(lv, Mapping) else lv for lv in given]
        rank = {text(v): i for i, v in enumerate(listed)}
        return sorted(levels, key=lambda v: rank.get(text(v), len(rank)))
    if levels and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in levels):
        return sorted(levels)
    return levels


def unique_levels(values: list[Any]) -> list[Any]:
    """Each level once, first appearance first (levels need not be hashable: a factorial's are tuples)."""
    out: list[Any] = []
    for v in values:
        if not any(same(v, o) for o in out):
            out.append(v)
    return out


def product(lists: list[list[Any]]) -> list[tuple[Any, ...]]:
    """Every combination, the first list slowest (as a factorial grid runs)."""
    combos: list[tuple[Any, ...]] = [()]
    for values in lists:
        combos = [(*c, v) for c in combos for v in values]
    return combos


def level_of(row: Mapping[str, Any], factor: str) -> Any:
    """The level of `factor` in `row`: its spec column (typed), else the row's own level text read as a value
    (a table without spec columns)."""
    if factor in row:
        return plain(row[factor])
    if row.get("factor") == factor and isinstance(row.get("level"), str):
        try:
            return ast.literal_eval(row["level"])
        except (ValueError, SyntaxError):
            return row["level"]
    return plain(row.get("level")) if row.get("factor") == factor else None


def plain(value: Any) -> Any:
    """A spec column's value as plain Python (NaN in a float column is None: frozen_bn: null)."""
    if hasattr(value, "item"):
        value = value.item()
    return None if _missing(value) else value


def same(a: Any, b: Any) -> bool:
    """Levels compare by how they read: 4.0 from a float column and '4' from parquet's text are one level."""
    return text(a) == text(b)


def text(level: Any) -> str:
    if isinstance(level, tuple):
        return " × ".join(_level_text(v) for v in level)
    return _level_text(level)


def to_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def seed_of(row: Mapping[str, Any]) -> int:
    """A row's seed (-1 when not recorded, so such rows pair with nothing)."""
    seed = row.get("seed")
    return int(seed) if not _missing(seed) else -1


def mean_of(values: Iterable[float]) -> float:
    values = [v for v in values if math.isfinite(v)]
    return float(np.mean(values)) if values else math.nan
