"""`Record`: the base of every typed config object (ArchSpec, DataSpec, TrainBudget, TimingProtocol).

Frozen, unknown keys rejected, and invalid input raises `SrSearchError` with one line per problem naming the
field, the bad value and what is allowed - the wording config.py relies on to point at the YAML key.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import SrSearchError


class Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    #: how problems name the record (the study-file section for data/train)
    record_name: ClassVar[str] = ""

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            name = self.record_name or type(self).__name__
            raise SrSearchError(
                format_validation_error(exc, name, allowed_fields=list(type(self).model_fields))
            ) from None


def format_validation_error(
    exc: ValidationError, where: str, allowed_fields: list[str] | None = None
) -> str:
    """One line per problem: field path, the bad value and pydantic's statement of what is allowed."""
    lines = []
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
            if allowed_fields:
                msg += f" (allowed: {', '.join(allowed_fields)})"
        got = err.get("input")
        got_text = "" if err["type"] == "missing" else f"; got {got!r}"
        lines.append(f"{where} field {path!r}: {msg}{got_text}")
    return "\n".join(lines)
