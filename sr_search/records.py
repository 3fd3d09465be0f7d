"""`Record`: the base of every typed config object (ArchSpec, DataSpec, TrainBudget, TimingProtocol, Study parts).

Frozen and strict about unknown keys. Built directly, invalid input raises `SrSearchError` with one line per problem
naming the field, the bad value and what is allowed; nested inside a larger record (a study), pydantic validates it
natively and `field_problems` reads the problems, with their full paths, out of the `ValidationError`.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import FieldProblem, InvalidRecord


class Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    #: how messages name the record (the study-file section for data/train)
    record_name: ClassVar[str] = ""

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            problems = field_problems(exc, type(self))
            name = self.record_name or type(self).__name__
            raise InvalidRecord("\n".join(f"{name} {problem_line(p)}" for p in problems), problems) from None


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
