"""Block families, registered by name. Adding a family touches only its module and the import list below.

Every family answers the same questions (see `BlockFamily`): which spec fields it uses and their defaults,
which of them its deployed form depends on, how to build a body block, the head/smooth conv ("stem") and
the tail conv. Modules that change form at deployment implement `to_deploy()` (see `sr_search.deploy`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from torch import nn

from ..errors import SrSearchError

if TYPE_CHECKING:
    from ..arch import ArchSpec


class BlockFamily:
    """What `network.build` and `ArchSpec` need to know about one block family."""

    name: ClassVar[str]
    paper: ClassVar[str]
    #: block-specific ArchSpec fields this family uses, with defaults
    fields: ClassVar[dict[str, Any]] = {}
    #: the subset of `fields` that the deployed network depends on
    deploy_fields: ClassVar[tuple[str, ...]] = ()
    #: families that deploy to the same plain network share timings through `ArchSpec.deploy_key`
    deploys_as: ClassVar[str]
    #: VGG-style nets (ECBSR, RepSR, SRVGG) activate the head features; long-skip nets do not
    vgg_style: ClassVar[bool] = False
    #: smallest LR tile (after pixel-unshuffle) the block accepts
    min_lr_size: ClassVar[int] = 1

    def defaults(self, data: dict[str, Any]) -> dict[str, Any]:
        return dict(self.fields)

    def validate(self, spec: ArchSpec) -> None:
        """Raise `SrSearchError` for combinations the block cannot build."""

    def block(self, spec: ArchSpec) -> nn.Module:
        raise NotImplementedError

    def stem(self, spec: ArchSpec, cin: int, cout: int, act: bool) -> nn.Module:
        """The family's 3x3 conv used for the head and the smooth conv (a plain conv by default)."""
        from ._layers import conv_act

        return conv_act(cin, cout, 3, spec.activation if act else "identity", spec)

    def tail(self, spec: ArchSpec, cin: int, cout: int) -> nn.Module:
        return nn.Conv2d(cin, cout, 3, padding=1)


REGISTRY: dict[str, BlockFamily] = {}


def register(cls: type[BlockFamily]) -> type[BlockFamily]:
    """Class decorator: make a family available by its `name`."""
    if cls.name in REGISTRY:
        raise ValueError(f"block family {cls.name!r} registered twice")
    REGISTRY[cls.name] = cls()
    return cls


def family_of(name: str) -> BlockFamily:
    try:
        return REGISTRY[name]
    except KeyError:
        raise SrSearchError(
            f"ArchSpec field 'block': unknown block {name!r}; allowed: {', '.join(sorted(REGISTRY))}"
        ) from None


# Explicit imports register the families (no file-name scanning).
from . import plain, rep, ecb, rlfb, esdb, eresidual  # noqa: E402,F401
