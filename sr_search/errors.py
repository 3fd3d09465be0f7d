"""The errors users see. The CLI turns `SrSearchError` into a message and exit code 1.

`FieldProblem` is what a validator raises about one field: pydantic keeps the exception object with the error it
reports, so the field's path and its allowed values travel as data from the validator to the message (see
`sr_search.records.field_problems`), never through a formatted string that has to be parsed back.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class SrSearchError(Exception):
    """Bad input: the message names the file/field, the bad value and what is allowed.

    `problems` holds the structured problems behind the message when it comes from validation.
    """

    def __init__(self, message: str, problems: Sequence[FieldProblem] = ()) -> None:
        super().__init__(message)
        self.problems = tuple(problems)


class InvalidRecord(SrSearchError, ValueError):
    """A typed record rejected its input. Also a ValueError, so a record validated inside a larger one (a study's
    `train:` section) hands its problems to the enclosing validation, paths intact, instead of aborting it."""


class FieldProblem(ValueError):
    """One field's problem: its path (relative to the record being validated), why, and what is allowed."""

    def __init__(self, loc: str | Sequence[Any], message: str, allowed: Sequence[Any] | None = None,
                 value: Any = None) -> None:
        self.loc = (loc,) if isinstance(loc, str) else tuple(loc)
        self.message = message
        self.allowed = tuple(allowed) if allowed is not None else None
        self.value = value
        super().__init__(self.text())

    def text(self) -> str:
        """The message with the allowed values (what a CLI user reads)."""
        if self.allowed is None or "allowed:" in self.message:
            return self.message
        return f"{self.message}; allowed: {', '.join(map(str, self.allowed))}"

    def under(self, *prefix: Any) -> FieldProblem:
        """The same problem seen from an enclosing record (its path prefixed)."""
        return FieldProblem((*prefix, *self.loc), self.message, self.allowed, self.value)

    def __repr__(self) -> str:
        return f"FieldProblem({self.loc!r}, {self.message!r})"


class StudyWriteError(OSError):
    """A file of the study could not be written (a full disk, a read-only folder): names the path. Everything
    written before stays valid, and a resumed study carries on from there."""

    def __init__(self, path: object, cause: OSError) -> None:
        super().__init__(cause.errno, f"cannot write {path}: {cause.strerror or cause}")
        self.path = path


class StudyDataWarning(UserWarning):
    """A file of a study folder could not be used (a truncated or corrupt row): named, moved aside, and the study
    goes on without it (the CLI prints it as `warning: ...`)."""


class StudyStopped(Exception):
    """A study stopped before all its trials finished (Ctrl-C): nothing finished is lost; resume it."""

    def __init__(self, folder: object, done: int, total: int, resume_hint: str) -> None:
        super().__init__(f"stopped with {done}/{total} trials in {folder}; continue with: {resume_hint}")
        self.folder, self.done, self.total, self.resume_hint = folder, done, total, resume_hint
