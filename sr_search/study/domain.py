"""What a candidate may be: the values each ArchSpec field accepts (`FIELD_TYPES`, read from ArchSpec and the
registered block families, so a space never drifts from them and a family registered later is known at once), one
field's domain in a search space (`Param`), and the budgets a candidate must meet (`Constraints`). Shared by the
space model, its file parser and ablation grids."""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from collections.abc import Iterator, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, PositiveFloat, PositiveInt, model_validator

from ..model.blocks import REGISTRY, family_of
from ..model.spec import ArchSpec, spec_field_infos
from ..records import no_bool_numbers
from .yamlfile import is_number


def show(value: Any) -> str:
    """A value as a YAML file would write it (null, true, 1.5), for messages and summaries."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, str) and (not value or " " in value) else str(value)


# --- ArchSpec field types -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldType:
    """What values one ArchSpec field accepts, read from its annotation (so the space never drifts from it)."""

    name: str
    kind: Literal["int", "float", "bool", "str"]
    allowed: tuple[Any, ...] | None
    optional: bool
    lower: float | None = None
    lower_open: bool = False
    upper: float | None = None

    def text(self) -> str:
        if self.allowed is not None:
            text = "one of " + ", ".join(map(show, self.allowed))
        elif self.kind == "bool":
            text = "true or false"
        else:
            lo = "" if self.lower is None else f"{'>' if self.lower_open else '>='} {show(self.lower)}"
            hi = "" if self.upper is None else f"<= {show(self.upper)}"
            text = f"{'an integer' if self.kind == 'int' else 'a number'} {' and '.join(filter(None, (lo, hi)))}"
        return text + (", or null" if self.optional else "")

    def check(self, value: Any) -> tuple[Any, str | None]:
        """(normalised value, None) or (value, why it is not allowed)."""
        bad = (value, f"{self.name}={show(value)} is not allowed; allowed: {self.text()}")
        if value is None:
            return (None, None) if self.optional else bad
        if self.kind == "bool":
            return (value, None) if isinstance(value, bool) else bad
        if self.kind == "str":
            ok = isinstance(value, str) and (self.allowed is None or value in self.allowed)
            return (value, None) if ok else bad
        if self.kind == "int" and not (isinstance(value, int) and not isinstance(value, bool)):
            return bad
        if not is_number(value):
            return bad
        value = float(value) if self.kind == "float" else value
        if self.allowed is not None and value not in self.allowed:
            return bad
        if self.lower is not None and (value <= self.lower if self.lower_open else value < self.lower):
            return bad
        if self.upper is not None and value > self.upper:
            return bad
        return value, None


def _field_type(name: str, info: Any) -> FieldType:
    union = typing.get_origin(info.annotation) in (typing.Union, types.UnionType)
    args = typing.get_args(info.annotation) if union else (info.annotation,)
    optional = type(None) in args
    (ann,) = [a for a in args if a is not type(None)]
    bounds: dict[str, Any] = {}
    for meta in info.metadata:
        for attr in ("ge", "gt", "le"):
            if getattr(meta, attr, None) is not None:
                bounds[attr] = getattr(meta, attr)
    lower = bounds.get("ge", bounds.get("gt"))
    if typing.get_origin(ann) is Literal:
        allowed = typing.get_args(ann)
        kind = "int" if all(isinstance(a, int) for a in allowed) else "str"
    elif name == "block":
        allowed, kind = tuple(sorted(REGISTRY)), "str"
    else:
        allowed, kind = None, {int: "int", float: "float", bool: "bool", str: "str"}[ann]
    return FieldType(name, kind, allowed, optional, lower, "gt" in bounds, bounds.get("le"))


class _FieldTypes(Mapping[str, FieldType]):
    """Every ArchSpec field's type, common fields first, then each registered family's (re-read when a family is
    registered)."""

    def __init__(self) -> None:
        self._types: dict[str, FieldType] = {}
        self._families: tuple[tuple[str, Any], ...] | None = None

    def _current(self) -> dict[str, FieldType]:
        # keyed on the families themselves, not their number: one family replaced by another keeps the count
        families = tuple(REGISTRY.items())
        if self._families != families:
            self._types = {name: _field_type(name, info) for name, info in spec_field_infos().items()}
            self._families = families
        return self._types

    def __getitem__(self, name: str) -> FieldType:
        return self._current()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._current())

    def __len__(self) -> int:
        return len(self._current())


FIELD_TYPES: Mapping[str, FieldType] = _FieldTypes()
SPEC_DEFAULTS: dict[str, Any] = {name: info.default for name, info in ArchSpec.model_fields.items()}


def family_field_type(block: str, name: str) -> FieldType:
    """`name`'s type as `block`'s family declares it (its own bounds), else as FIELD_TYPES has it."""
    own = family_of(block).Fields.model_fields
    return _field_type(name, own[name]) if name in own else FIELD_TYPES[name]


def current(block: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """Field values as sampled so far, defaults (ArchSpec's, then the family's) for the rest."""
    family = family_of(block)
    data = {**SPEC_DEFAULTS, **{n: i.default for n, i in family.Fields.model_fields.items()}, "block": block,
            **values}
    for name, default in family.defaults(data).items():
        if values.get(name) is None:
            data[name] = default
    return data


# --- one field's domain in a space, and the budgets ---------------------------------------------------------


class Param(BaseModel):
    """One ArchSpec field's domain in a space: a fixed value, choices, or an int/float range; maybe conditional."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str  # the Optuna parameter name
    field: str
    kind: Literal["fixed", "choices", "int", "float"]
    choices: tuple[Any, ...] = ()  # the value for `fixed`
    low: int | float | None = None
    high: int | float | None = None
    step: int | float | None = None
    log: bool = False
    when: tuple[tuple[str, tuple[Any, ...]], ...] = ()

    def active(self, values: Mapping[str, Any]) -> bool:
        return all(values.get(name) in allowed for name, allowed in self.when)

    def suggest(self, trial: Any) -> Any:
        if self.kind == "fixed":
            return self.choices[0]
        if self.kind == "choices":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.kind == "int":
            return int(trial.suggest_int(self.name, int(self.low), int(self.high), step=int(self.step or 1),
                                         log=self.log))
        value = float(trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log))
        return round(value, 12) if self.step else value  # 1.1, not 1.1000000000000001

    def values(self) -> tuple[Any, ...] | None:
        """Every value, or None for a continuous range."""
        if self.kind in ("fixed", "choices"):
            return self.choices
        if self.kind == "int":
            return tuple(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        if self.step is None:
            return None
        n = round((self.high - self.low) / self.step)
        return tuple(round(self.low + i * self.step, 12) for i in range(n + 1))

    def contains(self, value: Any) -> bool:
        if self.kind != "float":
            return value in self.values()
        if not is_number(value) or not self.low <= value <= self.high:
            return False
        return not self.step or abs((value - self.low) / self.step - round((value - self.low) / self.step)) < 1e-9

    def text(self) -> str:
        if self.kind == "fixed":
            domain = show(self.choices[0])
        elif self.kind == "choices":
            domain = "[" + ", ".join(map(show, self.choices)) + "]"
        else:
            extra = f" step {show(self.step)}" if self.step else (" log" if self.log else "")
            domain = f"{self.kind} {show(self.low)}..{show(self.high)}{extra}"
        cond = " and ".join(f"{n} in [{', '.join(map(show, v))}]" for n, v in self.when)
        return f"{self.name}: {domain}" + (f"   (when {cond})" if cond else "")


class Constraints(BaseModel):
    """Budgets checked before training; all optional."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    max_params: PositiveInt | None = None
    max_macs: PositiveFloat | None = None
    max_latency_ms: PositiveFloat | None = None

    _no_bool_numbers = model_validator(mode="before")(classmethod(no_bool_numbers))

    def violations(self, *, params: float | None = None, macs: float | None = None,
                   latency_ms: float | None = None) -> dict[str, float]:
        """`value - limit` for every budget that is set and measured (<= 0 means feasible: Optuna's convention)."""
        pairs = {"max_params": (params, self.max_params), "max_macs": (macs, self.max_macs),
                 "max_latency_ms": (latency_ms, self.max_latency_ms)}
        return {k: float(v - lim) for k, (v, lim) in pairs.items() if v is not None and lim is not None}
