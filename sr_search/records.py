"""`Record`: the base of every typed config object (ArchSpec, DataSpec, TrainBudget, TimingProtocol, Study parts).

Frozen and strict about unknown keys. Built directly, invalid input raises `SrSearchError` with one line per problem
naming the field, the bad value and what is allowed; nested inside a larger record (a study), pydantic validates it
natively and `field_problems` reads the problems, with their full paths, out of the `ValidationError`.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from .errors import FieldProblem, InvalidRecord

#: a seed every library takes (numpy and Optuna's samplers want < 2**32; a search adds the trial number to it)
MAX_SEED = 2**31 - 1


def no_bool_numbers(model: type[BaseModel], data: Any) -> Any:
    """Refuse YAML's true/false where a field wants a number: pydantic would take them as 1 and 0, so
    `n_trials: true` would run one trial and `colors: true` train on Y. Use as a `model_validator(mode="before")`
    (records, study sections and block families have it); containers of numbers are checked element by element."""
    if not isinstance(data, Mapping):
        return data
    problems = []
    for name, info in model.model_fields.items():
        for key in (name, info.alias):
            if key is not None and key in data:
                problems += [FieldProblem((key, *path), f"expected a number, got {str(value).lower()} (true/false "
                                                        f"is not a number)", value=value)
                             for path, value in _bools(info.annotation, data[key], ())]
                break
    if problems:
        raise ProblemList(problems)
    return data


def _wants_number(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if annotation in (int, float):
        return True
    if origin is Annotated:
        return _wants_number(typing.get_args(annotation)[0])
    if origin is Literal:
        args = typing.get_args(annotation)
        return all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return bool(args) and all(_wants_number(a) for a in args)
    return False


def _bools(annotation: Any, value: Any, path: tuple[Any, ...]) -> list[tuple[tuple[Any, ...], bool]]:
    """(path, value) of every bool in `value` where `annotation` wants a number."""
    if isinstance(value, bool):
        return [(path, value)] if _wants_number(annotation) else []
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Annotated:
        return _bools(args[0], value, path)
    if origin in (typing.Union, types.UnionType):
        containers = [a for a in args if typing.get_origin(a) in (tuple, list, dict)]
        return _bools(containers[0], value, path) if len(containers) == 1 else []
    if origin in (tuple, list) and isinstance(value, (list, tuple)):
        items = args[:1] * len(value) if origin is list or (len(args) == 2 and args[1] is Ellipsis) else args
        return [found for i, (a, v) in enumerate(zip(items, value)) for found in _bools(a, v, (*path, i))]
    if origin is dict and isinstance(value, Mapping) and len(args) == 2:
        return [found for k, v in value.items() for found in _bools(args[1], v, (*path, k))]
    return []


class Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    #: how messages name the record (the study-file section for data/train)
    record_name: ClassVar[str] = ""

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            problems = field_problems(exc, type(self))
            name = self.record_name or type(self).__name__
            raise InvalidRecord("\n".join(f"{name} {problem_line(p)}" for p in problems), problems) from None

    @model_validator(mode="before")
    @classmethod
    def _no_bool_numbers(cls, data: Any) -> Any:
        return no_bool_numbers(cls, data)


def field_problems(exc: ValidationError, model: type[BaseModel] | None = None) -> list[FieldProblem]:
    """Every problem of a pydantic `ValidationError` as a `FieldProblem` with its full key path.

    A validator's own `FieldProblem` keeps its path (below where it was raised) and allowed values; an unknown key
    gets the keys its record allows (when `model` is the record validated).
    """
    out = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        raised = (err.get("ctx") or {}).get("error")
        if isinstance(raised, FieldProblem):
            out.append(raised.under(*loc))
            continue
        if isinstance(raised, (ProblemList, InvalidRecord)):
            out += [p.under(*loc) for p in raised.problems]
            continue
        value = err.get("input")
        if err["type"] == "extra_forbidden":
            allowed = allowed_keys(model, loc[:-1]) if model is not None else None
            out.append(FieldProblem(loc, "unknown field", allowed, value))
        elif err["type"] == "missing":
            out.append(FieldProblem(loc, "required field is missing"))
        else:
            message = err["msg"].removeprefix("Value error, ")
            shown = "" if isinstance(value, (dict, list)) else f"; got {value!r}"
            out.append(FieldProblem(loc, f"{message}{shown}", None, value))
    return out


class ProblemList(ValueError):
    """Several `FieldProblem`s raised at once by one validator (e.g. every bad field of a block family)."""

    def __init__(self, problems: list[FieldProblem]) -> None:
        self.problems = problems
        super().__init__("; ".join(problem_line(p) for p in problems))


def problem_line(problem: FieldProblem) -> str:
    path = ".".join(str(p) for p in problem.loc)
    return f"field {path!r}: {problem.text()}" if path else problem.text()


def allowed_keys(root: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The keys the record at `loc` below `root` accepts (by alias where it has one)."""
    import typing

    model: Any = root
    for part in loc:
        fields = model.model_fields if isinstance(model, type) and issubclass(model, BaseModel) else {}
        info = fields.get(part) or {i.alias: i for i in fields.values() if i.alias}.get(part)
        if info is None:
            return []
        model = next((a for a in (typing.get_args(info.annotation) or (info.annotation,))
                      if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if model is None:
            return []
    return [info.alias or name for name, info in model.model_fields.items()]
