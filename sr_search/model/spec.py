"""`ArchSpec`: one candidate network as a flat, frozen, hashable record.

It holds the macro fields every family shares (declared below) plus the chosen family's own fields, validated by
that family's `Fields` model (see `sr_search.model.blocks`). Both read the same: `spec.channels`,
`spec.width_mult`; `model_dump()` and the JSON are flat, so YAML and parquet are too. A family fills its own
defaults, so two specs that build the same network compare equal and hash the same.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import ConfigDict, Field, ValidationError, model_validator

from ..errors import FieldProblem, SrSearchError
from ..records import ProblemList, Record, field_problems
from .blocks import REGISTRY, api, block_field_infos, family_of, users_of

Activation = Literal["relu", "prelu", "gelu", "silu", "lrelu", "identity"]


class ArchSpec(Record):
    """One candidate. Build it with `sr_search.build(spec)`; invalid values raise `SrSearchError`."""

    # extra fields are the family's own, and only those: `_family_fields` admits and validates them
    model_config = ConfigDict(frozen=True, extra="allow")

    scale: Literal[2, 3, 4] = 4
    colors: Literal[1, 3] = 3
    block: str = "plain"
    channels: int = Field(32, ge=1, le=1024)
    depth: int = Field(4, ge=0, le=128)
    activation: Activation = "prelu"
    #: pixel-unshuffle the input by r, shuffle by scale * r at the end
    unshuffle: Literal[1, 2, 3, 4] = 1
    global_skip: Literal["nearest", "bilinear", "bicubic", "none"] = "nearest"
    #: add the head features before the upsampler (RLFN, BSRN, CARN-style nets)
    long_skip: bool = False
    fusion: Literal["none", "concat", "cascade"] = "none"
    #: repeat the input channels k times (BSRN)
    input_repeat: int = Field(1, ge=1, le=8)
    smooth_conv: bool = False
    upsampler: Literal["pixelshuffle", "progressive"] = "pixelshuffle"
    mean_shift: bool = False

    @model_validator(mode="before")
    @classmethod
    def _family_fields(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        family = family_of(data.get("block", "plain"))
        own = family.Fields.model_fields
        common = {k: v for k, v in data.items() if k in cls.model_fields}
        given = {k: v for k, v in data.items() if k not in cls.model_fields}
        problems = []
        for name, value in list(given.items()):
            if name in own:
                continue
            del given[name]
            users = users_of(name)
            if value is None and users:
                continue  # 0.1 rows wrote every family's fields, unused ones as null
            if users:
                problems.append(FieldProblem(name, f"is not used by block {family.name!r} (only by: "
                                                   f"{', '.join(users)}); leave it unset"))
            else:
                allowed = [*cls.model_fields, *own]
                problems.append(FieldProblem(name, "unknown field", allowed, value))
        dynamic = family.defaults({**_COMMON_DEFAULTS, **common})
        for name, default in dynamic.items():
            if given.get(name) is None:
                given[name] = default
        try:
            fields = family.Fields(**given)
        except ValidationError as exc:
            problems += field_problems(exc, family.Fields)
        if problems:
            raise ProblemList(problems)
        own_values = fields.model_dump()
        # a field that does not apply (its `applies_when` fails) takes its default: one spec, one arch_key
        values = {**_COMMON_DEFAULTS, **common, **own_values}
        for name in family.applies_when:
            if not family.active(name, values):
                own_values[name] = dynamic.get(name, own[name].default)
        return {**common, **own_values}

    @model_validator(mode="after")
    def _check_combinations(self) -> ArchSpec:
        if self.mean_shift and self.colors != 3:
            raise FieldProblem("mean_shift", "needs colors=3 (it shifts by the RGB mean)")
        if self.fusion != "none" and self.depth < 1:
            raise FieldProblem("fusion", f"{self.fusion!r} needs depth >= 1")
        family_of(self.block).validate(self)
        return self

    def __hash__(self) -> int:
        return hash(tuple(self.model_dump().items()))

    # --- derived keys -----------------------------------------------------------------------------

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str) -> ArchSpec:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SrSearchError(f"ArchSpec JSON is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise SrSearchError("ArchSpec JSON must be an object of field: value")
        return cls(**data)

    def replace(self, **changes: Any) -> ArchSpec:
        """A new spec with `changes`; switching `block` drops the old family's fields."""
        data = self.model_dump()
        if "block" in changes and changes["block"] != self.block:
            data = {k: v for k, v in data.items() if k in COMMON_FIELDS}
        data.update(changes)
        return ArchSpec(**data)

    def arch_key(self) -> str:
        """Hash of every field: equal keys build the same training-time network."""
        return _digest(self.model_dump())

    def deploy_key(self) -> str:
        """Hash of what the *deployed* network depends on, so timings can be shared.

        Rep, ECB and plain candidates of the same shape deploy to the same plain conv net; branch
        count, width multiplier, BN and frozen-BN choices are training-time only.
        """
        family = family_of(self.block)
        payload = {name: getattr(self, name) for name in COMMON_FIELDS}
        payload["block"] = family.deploy_name
        payload.update(family.deploy_key_fields(self))
        return _digest(payload)

    def block_fields(self) -> dict[str, Any]:
        """The fields of this spec's family (for display)."""
        return {name: getattr(self, name) for name in family_of(self.block).field_names}


#: Fields every family has; all of them shape the deployed network.
COMMON_FIELDS: tuple[str, ...] = tuple(ArchSpec.model_fields)
_COMMON_DEFAULTS = {name: info.default for name, info in ArchSpec.model_fields.items()}
api.reserve(COMMON_FIELDS)


def spec_field_infos() -> dict[str, Any]:
    """Every field a spec can have: the common ones, then every registered family's (name -> pydantic FieldInfo)."""
    return {**ArchSpec.model_fields, **block_field_infos()}


def block_field_names() -> tuple[str, ...]:
    """The names of every registered family's own fields."""
    return tuple(block_field_infos())


def _digest(payload: dict[str, Any]) -> str:
    return hashlib.sha1(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


__all__ = ["ArchSpec", "COMMON_FIELDS", "Activation", "spec_field_infos", "block_field_names", "REGISTRY"]
