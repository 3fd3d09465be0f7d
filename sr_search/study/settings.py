"""The data and training sections of a study (`data:`, `train:`): typed, frozen, validated at the edge.

They live with the study because a study file is where they are written; `sr_search.run.data` and
`sr_search.run.train` do what they say.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from ..records import Record

#: the built-in image set: natural photos shipped inside scikit-image (see sr_search.run.data)
BUILTIN = "builtin:"
_SET_NAME = re.compile(r"[A-Za-z0-9_]+")  # fullmatch: `$` would let a trailing newline through
#: sane upper bounds: far above any real run, low enough that a typo is caught rather than run
MAX_ITERATIONS = 100_000_000
MAX_SIDE = 65_536


class DataSpec(Record):
    """Where the images come from; part of a study file (`data:`)."""

    record_name = "data"

    train: str = BUILTIN
    val: dict[str, str] = Field(default_factory=lambda: {"builtin": BUILTIN})
    #: centre-crop validation HR images to at most this many pixels per side (bounds CPU eval cost); None = full
    val_max_size: int | None = Field(256, ge=8, le=MAX_SIDE)
    train_max_images: int | None = Field(None, ge=1, le=10_000_000)
    #: where each node keeps the prepared images (decoded, degraded, uint8, memory-mapped by every trial): a folder,
    #: 'off' (each trial process prepares its own copy in memory), or None: $SR_SEARCH_DATA_CACHE, else the
    #: user's cache folder (~/.cache/sr-search/data). How a study runs, not what it means: may change on resume.
    cache: str | None = None
    #: the cache's size bound in GB; beyond it the least recently used entries of other datasets are removed
    cache_max_gb: float | None = Field(200.0, gt=0)
    #: keep the training images on the GPU (each trial holds its own copy there; for small sets). Default: they
    #: stay in host memory, mapped once per node, and each batch is copied to the GPU
    on_gpu: bool = False

    def __hash__(self) -> int:  # `val` is a dict; callers cache loaded data by DataSpec
        return hash((self.train, tuple(sorted(self.val.items())), self.val_max_size, self.train_max_images,
                     self.cache, self.cache_max_gb, self.on_gpu))

    @field_validator("cache", mode="before")
    @classmethod
    def _cache_switch(cls, value: object) -> object:
        """YAML reads `off` and `on` as booleans: false is 'off', true the default folder."""
        return {False: "off", True: None}.get(value, value) if isinstance(value, bool) else value

    @field_validator("val")
    @classmethod
    def _check_val(cls, val: dict[str, str]) -> dict[str, str]:
        if not val:
            raise ValueError("needs at least one validation set, e.g. {builtin: 'builtin:'}")
        for name in val:
            if not _SET_NAME.fullmatch(name):
                raise ValueError(
                    f"validation set name {name!r} must use only letters, digits and '_' "
                    f"(it becomes the column suffix psnr_y_<name>)"
                )
        return val



class TrainBudget(Record):
    """How one candidate is trained; part of a study file (`train:`)."""

    record_name = "train"

    iterations: int = Field(1000, ge=1, le=MAX_ITERATIONS)
    batch_size: int = Field(16, ge=1, le=65_536)
    #: LR patch side in pixels (HR patch = lr_patch * scale); the study's training images must hold it
    lr_patch: int = Field(32, ge=1, le=4096)
    lr: float = Field(5e-4, gt=0)
    loss: Literal["l1", "l2", "charbonnier"] = "l1"
    schedule: Literal["cosine", "multistep", "constant"] = "cosine"
    #: multistep: fractions of `iterations` where the learning rate is multiplied by `gamma`
    milestones: tuple[float, ...] = (0.5, 0.75)
    gamma: float = Field(0.5, gt=0, le=1)
    #: validate every N iterations (and at the end); 0 = only at the end
    val_every: int = Field(0, ge=0, le=MAX_ITERATIONS)
    #: state_dict to start from (RLFN's multi-stage training: each stage warm-starts from the previous one)
    warm_start: str | None = None
    #: mixed precision: 'auto' is fp16 autocast with loss scaling on CUDA and full precision elsewhere; 'fp16' and
    #: 'bf16' autocast on any device (bf16 needs no loss scaling); 'off' trains in the model's dtype.
    #: true/false mean auto/off.
    amp: Literal["auto", "fp16", "bf16", "off"] = "auto"
    grad_clip: float | None = Field(None, gt=0)

    @field_validator("amp", mode="before")
    @classmethod
    def _amp_switch(cls, value: object) -> object:
        return {True: "auto", False: "off"}.get(value, value) if isinstance(value, bool) else value

    @field_validator("milestones")
    @classmethod
    def _check_milestones(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(not 0 < m < 1 for m in value) or list(value) != sorted(set(value)):
            raise ValueError("milestones must be increasing fractions of the iterations, each in (0, 1)")
        return value


