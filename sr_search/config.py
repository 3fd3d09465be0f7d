"""Study files: load, validate at the edge, freeze.

A study file is a small delta over the defaults written in the models below (the single place they live;
`sr-search validate --show STUDY` prints the resolved study, defaults included). Every problem in a file - and in
the search-space file it names - is collected and reported at once as `file:line: key: message`, before anything
heavy starts. Keys::

    name: str                  required; also the default output folder runs/<name>
    space: PATH                required; a search-space file, relative to this study file (see sr_search.space)
    mode: search | ablation    default search
    fixed: {FIELD: VALUE}      pins common ArchSpec fields of the space (e.g. {scale: 2}); applied to `base` too
    constraints: {max_params, max_macs, max_latency_ms}   added to (and overriding) the space's constraints
    # mode: search
    sampler: tpe|nsga2|random|gp   default tpe
    n_trials: int > 0              default 50
    seed: int                      default 0 (sampler seed)
    baselines: [PRESET, ...]       default []; sr_search.presets names, evaluated (enqueued) first
    # mode: ablation
    base: PRESET | {preset: PRESET, FIELD: VALUE...} | {FIELD: VALUE...}   required: the spec every variant changes
    factors: {FIELD: [LEVEL, ...]} required; a level is a value or {FIELD: VALUE...} that includes FIELD
    design: one_at_a_time | factorial   default one_at_a_time
    seeds: [int, ...]              default [0]; every variant runs once per seed
    # both
    data: sr_search.data.DataSpec           relative folders resolve against this file; `builtin:` as is
    train: sr_search.train.TrainBudget
    timing: auto | repsr | ntire23-x2 | ntire23-x3 | cpu | NAME | {inline protocol}   default auto
    protocols: {NAME: {protocol fields}}    custom protocols, usable by name in `timing`
    objectives: {METRIC: max|min, ...}      ordered; default {psnr_y: max, throughput: max}
    resources: {cpus_per_trial, gpus_per_trial, concurrency, max_failures}
    keep_checkpoints: bool                  default false
    out_dir: PATH                           default runs/<name>, relative to the current directory
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any, Iterable, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from ._domain import Constraints
from ._study_checks import (ABLATION_KEYS, FIELD_LINE, SEARCH_KEYS, build_record, check_ablation, check_baselines,
                            check_modes, check_patch, check_references, check_space, report_validation, study_scale)
from ._yaml import (Doc, KeyPath, Problem, did_you_mean, is_number, key_text, raise_problems, read_yaml,
                    sort_problems)
from .arch import ArchSpec
from .data import BUILTIN, DataSpec
from .errors import SrSearchError
from .presets import preset as resolve_preset
from .space import GridPoint, SearchSpace, describe_space, load_space
from .space_file import SPACE_KEYS, parse_space
from .timing import TimingProtocol
from .train import TrainBudget

__all__ = [
    "Study", "Resources", "Constraints", "load_study", "validate_study", "validate_files", "describe", "detect_kind",
    "resolve_preset", "METRICS", "SEARCH_KEYS", "ABLATION_KEYS",
    # the YAML layer shared with sr_search.space, re-exported from its own module
    "Problem", "Doc", "KeyPath", "read_yaml", "key_text", "raise_problems", "sort_problems", "did_you_mean",
    "is_number",
]

# --- the study ----------------------------------------------------------------------------------------------

#: result columns a study may optimise, with the only direction that makes sense for each
METRICS = {
    "psnr_y": "max", "ssim_y": "max", "psnr_gain": "max", "ntire_score": "max", "throughput": "max",
    "mpix_per_s": "max", "latency_ms": "min", "latency_ms_p90": "min", "params_deploy": "min",
    "params_train": "min", "macs_deploy": "min", "peak_mem_mb": "min", "train_seconds": "min",
}
_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class Resources(BaseModel):
    """Per-trial resources handed to Ray, and how many trials run at once."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cpus_per_trial: float = Field(1, gt=0)
    #: fractional values share a GPU between trials (training only: timings are then marked non-exclusive);
    #: 'auto' = 1 when this machine has CUDA, else 0 (set it explicitly for a cluster whose driver has no GPU)
    gpus_per_trial: float = Field("auto", ge=0, validate_default=True)
    concurrency: int = Field(1, ge=1)
    max_failures: int = Field(0, ge=0)

    @field_validator("gpus_per_trial", mode="before")
    @classmethod
    def _auto_gpus(cls, value: Any) -> Any:
        if value == "auto":
            import torch

            return 1.0 if torch.cuda.is_available() else 0.0
        return value


class Study(BaseModel):
    """A validated study file (see the module docstring). Frozen; `with_overrides` makes a new one."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    name: str = Field(max_length=100)
    space: Path
    mode: Literal["search", "ablation"] = "search"
    #: pins common ArchSpec fields of the space for this study (e.g. {scale: 2}); also applied to `base`
    fixed: dict[str, Any] = Field(default_factory=dict)
    #: budgets on top of (and overriding) the space's `constraints`
    constraint_overrides: Constraints = Field(default_factory=Constraints, alias="constraints")
    sampler: Literal["tpe", "nsga2", "random", "gp"] = "tpe"
    n_trials: int = Field(50, ge=1)
    seed: int = Field(0, ge=0)
    baselines: tuple[str, ...] = ()
    base: str | dict[str, Any] | None = None
    factors: dict[str, list[Any]] = Field(default_factory=dict)
    design: Literal["one_at_a_time", "factorial"] = "one_at_a_time"
    seeds: tuple[int, ...] = Field((0,), min_length=1)
    data: DataSpec = Field(default_factory=DataSpec)
    train: TrainBudget = Field(default_factory=TrainBudget)
    timing: str | TimingProtocol = "auto"
    protocols: dict[str, TimingProtocol] = Field(default_factory=dict)
    objectives: dict[str, Literal["max", "min"]] = Field(
        default_factory=lambda: {"psnr_y": "max", "throughput": "max"}, min_length=1)
    resources: Resources = Field(default_factory=Resources)
    keep_checkpoints: bool = False
    #: default runs/<name>, relative to the current directory
    out_dir: Path | None = None

    @model_validator(mode="before")
    @classmethod
    def _default_out_dir(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("out_dir") is None and isinstance(data.get("name"), str):
            data = {**data, "out_dir": str(Path("runs") / data["name"])}
        return data

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not re.match(_NAME, value):
            raise ValueError(f"name {value!r} becomes a folder name (runs/<name>): use letters, digits, '_', '-' "
                             f"and '.', starting with a letter or digit")
        return value

    @field_validator("space", mode="before")
    @classmethod
    def _resolve_space(cls, value: Any, info: ValidationInfo) -> Any:
        return _resolve(value, info)

    @field_validator("data", mode="before")
    @classmethod
    def _resolve_data(cls, value: Any, info: ValidationInfo) -> Any:
        if not isinstance(value, dict):
            return value
        value = dict(value)
        if isinstance(value.get("train"), str) and value["train"] != BUILTIN:
            value["train"] = str(_resolve(value["train"], info))
        if isinstance(value.get("val"), dict):
            value["val"] = {k: str(_resolve(v, info)) if isinstance(v, str) and v != BUILTIN else v
                            for k, v in value["val"].items()}
        return build_record(DataSpec, value)

    @field_validator("train", mode="before")
    @classmethod
    def _resolve_warm_start(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, dict) and isinstance(value.get("warm_start"), str):
            value = {**value, "warm_start": str(_resolve(value["warm_start"], info))}
        return build_record(TrainBudget, value)

    @field_validator("timing", mode="before")
    @classmethod
    def _inline_protocol(cls, value: Any) -> Any:
        return build_record(TimingProtocol, {"name": "inline", **value}) if isinstance(value, dict) else value

    @field_validator("protocols", mode="before")
    @classmethod
    def _custom_protocols(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        out, errors = {}, []
        for key, record in value.items():
            try:
                out[key] = build_record(TimingProtocol, {**record, "name": key} if isinstance(record, dict) else record)
            except ValueError as exc:  # keep the protocol's name in each line's key path
                errors += [FIELD_LINE.sub(lambda m: f"{m[1]} field '{key}.{m[2]}':", line)
                           for line in str(exc).splitlines()]
        if errors:
            raise ValueError("\n".join(errors))
        return out

    @field_validator("objectives")
    @classmethod
    def _check_objectives(cls, value: dict[str, str]) -> dict[str, str]:
        errors = []
        for metric, direction in value.items():
            family = metric if metric in METRICS else metric.rsplit("_", 1)[0]
            if family not in METRICS:
                errors.append(f"unknown metric {metric!r}{did_you_mean(metric, METRICS)}; allowed: "
                              f"{', '.join(METRICS)}, or psnr_y_<set> / ssim_y_<set> for a validation set")
            elif direction != METRICS[family]:
                errors.append(f"{metric} should be {METRICS[family]}imised, not {direction}imised")
        if errors:
            raise ValueError("; ".join(errors))
        return value

    # --- what the runner asks ------------------------------------------------------------------------------

    def search_space(self) -> SearchSpace:
        """The study's space: the file, with `fixed` fields pinned and the study's constraints merged in."""
        space = self._file_space()
        if self.fixed:
            space = space.with_fixed(self.fixed)
        return space.model_copy(update={"constraints": self.constraints(space)})

    def constraints(self, space: SearchSpace | None = None) -> Constraints:
        """The budgets every candidate must meet before it is trained (space's, overridden by the study's)."""
        space = space or self._file_space()
        mine = self.constraint_overrides.model_dump(exclude_none=True)
        return Constraints(**{**space.constraints.model_dump(exclude_none=True), **mine})

    def _file_space(self) -> SearchSpace:
        """The space file as loaded (cached until the file changes)."""
        return _cached_space(str(self.space), self.space.stat().st_mtime_ns)

    def base_spec(self) -> ArchSpec:
        """The ablation's base: a preset, a preset with changes, or an inline spec; `fixed` applied."""
        if self.base is None:
            raise SrSearchError(f"study {self.name!r} has no `base` (mode: {self.mode})")
        if isinstance(self.base, str):
            spec = resolve_preset(self.base)
        else:
            changes = dict(self.base)
            preset = changes.pop("preset", None)
            spec = resolve_preset(preset).replace(**changes) if preset is not None else ArchSpec(**changes)
        return spec.replace(**self.fixed) if self.fixed else spec

    def ablation_grid(self) -> list[GridPoint]:
        """The ablation's variants in order, each once (run each once per seed in `seeds`)."""
        return self.search_space().grid(self.base_spec(), self.factors, mode=self.design)

    def timing_protocol(self, device: Any = None) -> TimingProtocol:
        """The protocol to time with; 'auto' is repsr on a CUDA device (or, without one, when CUDA exists), else cpu."""
        from .timing import default_protocol, get_protocol

        name = self.timing
        if name == "auto":
            if device is None:
                name = default_protocol()
            else:
                name = "repsr" if getattr(device, "type", str(device)).startswith("cuda") else "cpu"
        return get_protocol(name, self.protocols)

    def to_yaml(self) -> str:
        """The resolved study (defaults included), as frozen into the study directory."""
        return yaml.safe_dump(self._dump(), sort_keys=False)

    def _dump(self) -> dict[str, Any]:
        unused = ABLATION_KEYS if self.mode == "search" else SEARCH_KEYS
        return {k: v for k, v in self.model_dump(mode="json", by_alias=True).items() if k not in unused}

    def with_overrides(self, **changes: Any) -> Study:
        """A new, re-validated study; a mapping for a record field (train, data, resources...) updates it."""
        data = self._dump()
        aliases = {name: (info.alias or name) for name, info in type(self).model_fields.items()}
        allowed = sorted(set(aliases) | set(aliases.values()))
        for key, value in changes.items():
            if key not in allowed:
                raise SrSearchError(f"unknown study field {key!r}; allowed: {', '.join(allowed)}")
            key = aliases.get(key, key)
            if isinstance(value, dict) and isinstance(data.get(key), dict) and key not in ("factors", "objectives"):
                value = {**data[key], **value}
            data[key] = value
        if "name" in changes and "out_dir" not in changes and self.out_dir == Path("runs") / self.name:
            data["out_dir"] = None
        doc = Doc(Path(f"{self.name} (overrides)"), data)
        study = validate_study(doc, base_dir=None)
        raise_problems(doc.problems)
        assert study is not None
        return study


def _resolve(value: Any, info: ValidationInfo) -> Any:
    base_dir = (info.context or {}).get("base_dir")
    if isinstance(value, (str, Path)) and base_dir is not None and str(value):
        return (Path(base_dir) / Path(value).expanduser()).resolve()
    return value


@functools.lru_cache(maxsize=16)
def _cached_space(path: str, mtime_ns: int) -> SearchSpace:
    return load_space(path)


# --- loading and checking -----------------------------------------------------------------------------------


def load_study(path: str | Path) -> Study:
    """Load and check a study file and the space it names; raises `SrSearchError` listing every problem."""
    doc = read_yaml(path, "study")
    study = validate_study(doc, base_dir=Path(path).parent) if not doc.problems else None
    raise_problems(doc.problems)
    assert study is not None
    return study


def validate_study(doc: Doc, base_dir: Path | None) -> Study | None:
    """Typed validation plus the checks that need other files; problems go to `doc.problems`."""
    data = doc.data
    study = None
    try:
        study = Study.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        report_validation(doc, exc, Study)
    check_modes(doc, data)
    check_references(doc, data, base_dir)
    space = check_space(doc, data, base_dir)
    if study is None:
        return None
    check_baselines(doc, study, space)
    if study.mode == "ablation" and space is not None:
        check_ablation(doc, study, space)
    if space is not None:
        check_patch(doc, study, space)
    try:
        protocol = study.timing_protocol("cpu" if study.timing == "auto" else None)
    except SrSearchError as exc:
        if not any(p.key == "timing" for p in doc.problems):
            doc.problem(("protocols",), str(exc))
    else:
        scale = study_scale(study, space)
        if protocol.scale is not None and scale is not None and protocol.scale != scale:
            doc.problem(("timing",), f"protocol {protocol.name!r} times x{protocol.scale} models, but this study's "
                                     f"candidates are x{scale}")
    return None if doc.problems else study


def detect_kind(doc: Doc) -> str | None:
    """'space' or 'study' from a parsed file's keys (None, with a problem recorded, when neither fits)."""
    keys = set(doc.data)
    if keys & {"params", "blocks"}:
        return "space"
    if keys & {"name", "space", "mode"}:
        return "study"
    doc.problem((), f"neither a study (keys: name, space, mode, ...) nor a search space (keys: "
                    f"{', '.join(SPACE_KEYS)}); found: {', '.join(map(str, doc.data)) or 'nothing'}")
    return None


def validate_files(paths: Iterable[str | Path]) -> list[Problem]:
    """Every problem in every file (studies and spaces, told apart by their keys); empty when all are fine."""
    problems: list[Problem] = []
    for path in paths:
        doc = read_yaml(path, "YAML")
        if not doc.problems:
            kind = detect_kind(doc)
            if kind == "space":
                parse_space(doc)
            elif kind == "study":
                validate_study(doc, base_dir=Path(path).parent)
        problems += [p for p in sort_problems(doc.problems) if p not in problems]
    return problems


def describe(path: str | Path) -> str:
    """What `sr-search validate --show` prints: a space's size, parameters and samples; a study's plan."""
    doc = read_yaml(path, "YAML")
    raise_problems(doc.problems)
    if detect_kind(doc) == "space":
        return describe_space(load_space(path))
    study = load_study(path)
    scale = study_scale(study, study.search_space())
    lines = [f"study {study.name!r} ({study.mode}, x{scale}) -> {study.out_dir}"]
    if study.mode == "search":
        lines.append(f"  sampler {study.sampler}, {study.n_trials} trials, seed {study.seed}"
                     + (f", baselines first: {', '.join(study.baselines)}" if study.baselines else ""))
    else:
        points = study.ablation_grid()
        lines.append(f"  {len(points)} variants x {len(study.seeds)} seed(s) = {len(points) * len(study.seeds)} "
                     f"runs ({study.design})")
        lines += [f"    {i:2d}. {p.label}" for i, p in enumerate(points)]
    lines.append(f"  train: {study.train.iterations} iterations, batch {study.train.batch_size}, "
                 f"LR patch {study.train.lr_patch}")
    lines.append(f"  timing: {study.timing if isinstance(study.timing, str) else study.timing.name}; "
                 f"objectives: {', '.join(f'{k} ({v})' for k, v in study.objectives.items())}")
    lines.append(describe_space(study.search_space()))
    return "\n".join(lines)
