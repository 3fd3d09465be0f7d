"""Ablation grids: a base spec and factor levels, enumerated one factor at a time or factorially
(`SearchSpace.grid` is the public entry point)."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Sequence

from ..errors import SrSearchError
from ..model.spec import ArchSpec
from .domain import FIELD_TYPES, show
from .yamlfile import KeyPath, did_you_mean

#: (index in the file, level, field overrides)
Level = tuple[int, Any, dict[str, Any]]
#: most variants a grid may have (each is a training run; a factorial design grows as the product of its levels)
MAX_VARIANTS = 10_000


@dataclass(frozen=True)
class GridPoint:
    """One ablation variant: which factor (or 'base', or 'factorial') and level produced `spec`."""

    factor: str
    level: Any
    spec: ArchSpec

    def __iter__(self) -> Iterator[Any]:  # unpacks as (factor, level, spec)
        return iter((self.factor, self.level, self.spec))

    @property
    def label(self) -> str:
        if self.factor == "base":
            return "base"
        if self.factor == "factorial":
            return ", ".join(f"{k}={show(v)}" for k, v in self.level)
        return f"{self.factor}={show(self.level)}"


def grid_problems(contains: Callable[[ArchSpec], list[str]], base: ArchSpec, factors: Mapping[str, Sequence[Any]],
                  mode: str) -> tuple[list[GridPoint], list[tuple[KeyPath, str]]]:
    """The grid's points and its (key path under `factors`, message) problems; `contains(spec)` says why a spec is
    outside the space (see `SearchSpace.grid`)."""
    problems: list[tuple[KeyPath, str]] = []
    if mode not in ("one_at_a_time", "factorial"):
        return [], [(("design",), f"unknown design {mode!r}; allowed: one_at_a_time, factorial")]
    outside = contains(base)
    problems += [(("base",), f"base spec is outside the space: {m}") for m in outside]
    levels = {factor: _parse_levels(factor, raw_levels, problems) for factor, raw_levels in factors.items()}
    if problems and mode == "factorial":
        return [], problems
    points = [GridPoint("base", None, base)]
    seen = {base.arch_key()}
    if mode == "one_at_a_time":
        cells = [((factor,), (i,), level, over) for factor, lv in levels.items() for i, level, over in lv]
    else:
        cells = _factorial_cells(levels, problems)
    for names, index, level, over in cells:
        key = (names[0], index[0]) if len(names) == 1 else ()
        try:
            spec = base.replace(**over)
        except SrSearchError as exc:
            problems.append((key, f"level {show(level)} gives an invalid spec: {exc} (a level may change "
                                  f"other fields too: {{{names[0]}: ..., OTHER_FIELD: ...}})"))
            continue
        problems += [(key, f"level {show(level)} is outside the space: {m}") for m in contains(spec)
                     if m not in outside]
        if spec.arch_key() not in seen:
            seen.add(spec.arch_key())
            points.append(GridPoint("factorial" if mode == "factorial" else names[0], level, spec))
    return points, problems


def _factorial_cells(levels: dict[str, list[Level]], problems: list[tuple[KeyPath, str]]) -> list[tuple[Any, ...]]:
    """Every combination of levels (first factor slowest) as (factors, level indices, level, field overrides)."""
    names = tuple(levels)
    size = math.prod(len(lv) for lv in levels.values())
    if size > MAX_VARIANTS:
        shape = " x ".join(str(len(lv)) for lv in levels.values())
        problems.append(((), f"the factorial design has {size:,} cells ({shape} "
                             f"levels), more than the {MAX_VARIANTS:,} variants a study may run; use design: "
                             f"one_at_a_time, or fewer factors or levels"))
        return []
    cells = []
    for combo in itertools.product(*(levels[n] for n in names)):
        over: dict[str, Any] = {}
        for name, (i, _, o) in zip(names, combo):
            for k, v in o.items():
                if k in over and over[k] != v:
                    problems.append(((name, i), f"sets {k}={show(v)} while another factor's level sets "
                                                f"{k}={show(over[k])} in the same cell"))
                over[k] = v
        cells.append((names, tuple(i for i, _, _ in combo),
                      tuple((n, level) for n, (_, level, _) in zip(names, combo)), over))
    return cells


def _parse_levels(factor: str, raw: Any, problems: list[tuple[KeyPath, str]]) -> list[Level]:
    """(index in the file, level, field overrides) for every valid level; problems for the others."""
    if factor not in FIELD_TYPES:
        problems.append(((factor,), f"unknown factor {factor!r}{did_you_mean(factor, FIELD_TYPES)}: factors are "
                                    f"ArchSpec fields ({', '.join(FIELD_TYPES)})"))
        return []
    if not isinstance(raw, (list, tuple)) or not raw:
        problems.append(((factor,), f"levels must be a non-empty list, got {show(raw)}"))
        return []
    out, seen = [], []
    for i, level in enumerate(raw):
        over = dict(level) if isinstance(level, Mapping) else {factor: level}
        if factor not in over:
            problems.append(((factor, i), f"a mapping level must set the factor itself ({factor}: ...)"))
            continue
        before = len(problems)
        for name, value in over.items():
            if name not in FIELD_TYPES:
                problems.append(((factor, i), f"unknown field {name!r}{did_you_mean(name, FIELD_TYPES)}; "
                                              f"ArchSpec fields: {', '.join(FIELD_TYPES)}"))
                continue
            over[name], why = FIELD_TYPES[name].check(value)
            if why:
                problems.append(((factor, i), why))
        if over[factor] in seen:
            problems.append(((factor, i), f"level {show(over[factor])} listed twice"))
        seen.append(over[factor])
        if len(problems) == before:
            out.append((i, over[factor], over))
    return out
