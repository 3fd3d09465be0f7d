"""`ArchSpec`: one candidate network as a flat, frozen, hashable record.

Block-specific fields (DESIGN 4.3) are None unless the chosen block family uses them; a family fills
its own defaults, so two specs that build the same network compare equal and hash the same.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import Field, model_validator

from ._record import Record

from .errors import SrSearchError

Activation = Literal["relu", "prelu", "gelu", "silu", "lrelu", "identity"]
BranchForm = Literal["c3_bn_c1", "c3_bn+c1_bn", "c3_bn_c1_bn", "c1_bn_c3"]

#: Fields every family uses; all of them shape the deployed network.
COMMON_FIELDS = (
    "scale", "colors", "block", "channels", "depth", "activation", "unshuffle", "global_skip",
    "long_skip", "fusion", "input_repeat", "smooth_conv", "upsampler", "mean_shift",
)


class ArchSpec(Record):
    """One candidate. Build it with `sr_search.build(spec)`; invalid values raise `SrSearchError`."""

    scale: Literal[2, 3, 4] = 4
    colors: Literal[1, 3] = 3
    block: str = "plain"
    channels: int = Field(32, ge=1, le=1024)
    depth: int = Field(4, ge=0, le=128)
    activation: Activation = "prelu"
    unshuffle: Literal[1, 2, 3, 4] = 1
    global_skip: Literal["nearest", "bilinear", "bicubic", "none"] = "nearest"

    # rep / ecb
    width_mult: float | None = Field(None, gt=0, le=16)
    branches: int | None = Field(None, ge=1, le=4)
    residual: Literal["clean", "bn", "none"] | None = None
    branch_form: BranchForm | None = None
    bn: bool | None = None
    frozen_bn: float | None = Field(None, ge=0, le=1)
    with_idt: bool | None = None
    # rlfb / esdb
    esa_channels: int | None = Field(None, ge=1, le=1024)
    cca: bool | None = None
    # eresidual
    groups: int | None = Field(None, ge=1, le=1024)
    shared: bool | None = None

    # macro-architecture
    long_skip: bool = False
    fusion: Literal["none", "concat", "cascade"] = "none"
    input_repeat: int = Field(1, ge=1, le=8)
    smooth_conv: bool = False
    upsampler: Literal["pixelshuffle", "progressive"] = "pixelshuffle"
    mean_shift: bool = False

    @model_validator(mode="before")
    @classmethod
    def _fill_block_fields(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        from .blocks import REGISTRY, family_of

        block = data.get("block", "plain")
        if block not in REGISTRY:
            raise SrSearchError(
                f"ArchSpec field 'block': unknown block {block!r}; allowed: {', '.join(sorted(REGISTRY))}"
            )
        family = family_of(block)
        data = dict(data)
        for name in BLOCK_FIELDS:
            if name in family.fields:
                continue
            if data.get(name) is not None:
                users = sorted(n for n, f in REGISTRY.items() if name in f.fields)
                raise SrSearchError(
                    f"ArchSpec field {name!r} is not used by block {block!r} (only by: {', '.join(users)}); "
                    f"leave it unset"
                )
        for name, default in family.defaults(data).items():
            if data.get(name) is None:
                data[name] = default
        return data

    @model_validator(mode="after")
    def _check_combinations(self) -> ArchSpec:
        from .blocks import family_of

        if self.mean_shift and self.colors != 3:
            raise SrSearchError("ArchSpec field 'mean_shift': needs colors=3 (it shifts by the RGB mean)")
        if self.fusion != "none" and self.depth < 1:
            raise SrSearchError(f"ArchSpec field 'fusion': {self.fusion!r} needs depth >= 1")
        family_of(self.block).validate(self)
        return self

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
            for name in BLOCK_FIELDS:
                data[name] = None
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
        from .blocks import family_of

        family = family_of(self.block)
        payload = {name: getattr(self, name) for name in COMMON_FIELDS}
        payload["block"] = family.deploys_as
        payload.update({name: getattr(self, name) for name in family.deploy_fields})
        return _digest(payload)

    def block_fields(self) -> dict[str, Any]:
        """The block-specific fields this spec's family uses (for display)."""
        from .blocks import family_of

        return {name: getattr(self, name) for name in family_of(self.block).fields}


BLOCK_FIELDS = tuple(
    name for name in ArchSpec.model_fields if name not in COMMON_FIELDS
)


def _digest(payload: dict[str, Any]) -> str:
    return hashlib.sha1(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
