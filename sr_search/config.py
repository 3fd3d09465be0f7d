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

import difflib
import functools
import math
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Literal

import yaml
from pydantic import (BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, ValidationError, ValidationInfo,
                      field_validator, model_validator)

from .arch import ArchSpec
from .blocks import family_of
from .data import BUILTIN, DataSpec
from .errors import SrSearchError
from .timing import TimingProtocol
from .train import TrainBudget

if TYPE_CHECKING:
    from .space import GridPoint, SearchSpace

KeyPath = tuple[Any, ...]


# --- problems and YAML with line numbers -------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one file: where (file, key path, line) and what to do about it."""

    file: str
    key: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


def key_text(path: Iterable[Any]) -> str:
    """('factors', 'width_mult', 1) -> 'factors.width_mult[1]'."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


@dataclass
class Doc:
    """A parsed YAML file plus the line of every key path, so problems can point at the line."""

    path: Path
    data: Any
    lines: dict[KeyPath, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    def line(self, path: KeyPath) -> int | None:
        path = tuple(path)
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get((), None)

    def problem(self, path: KeyPath, message: str) -> None:
        self.problems.append(Problem(str(self.path), key_text(path), self.line(path), message))


def read_yaml(path: str | Path, what: str) -> Doc:
    """Parse `path`; a missing, unreadable, empty or non-mapping file becomes a problem in `doc.problems`."""
    path = Path(path)
    doc = Doc(path, None)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        doc.problem((), f"{what} file not found")
        return doc
    except (OSError, UnicodeDecodeError) as exc:
        doc.problem((), f"cannot read {what} file: {exc}")
        return doc
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is not None:
            doc.data = loader.construct_document(node)
            _record_lines(node, (), doc)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        doc.problems.append(Problem(str(path), "", line, f"not valid YAML: {exc}".replace("\n", " ")))
        return doc
    finally:
        loader.dispose()
    if doc.data is None:
        doc.problem((), f"{what} file is empty; {_EMPTY_HINTS.get(what, _EMPTY_HINTS['YAML'])}")
    elif not isinstance(doc.data, dict):
        doc.problem((), f"a {what} file must be a mapping of key: value, got {type(doc.data).__name__}")
    return doc


_EMPTY_HINTS = {
    "study": "a study needs at least `name` and `space` (format: sr_search/config.py)",
    "search space": "a search space needs `params` (format: sr_search/space.py)",
    "YAML": "a study needs at least `name` and `space` (format: sr_search/config.py); a search space needs "
            "`params` (format: sr_search/space.py)",
}


def _record_lines(node: yaml.Node, path: KeyPath, doc: Doc) -> None:
    doc.lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.value)
            if key in seen:
                doc.lines[path + (key,)] = key_node.start_mark.line + 1
                doc.problem(path + (key,), "key written twice (the second would silently win); keep one")
            seen.add(key)
            doc.lines[path + (key,)] = key_node.start_mark.line + 1
            _record_lines(value_node, path + (key,), doc)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _record_lines(item, path + (i,), doc)


def did_you_mean(word: Any, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(word), list(options), n=1, cutoff=0.75)
    return f" (did you mean {close[0]!r}?)" if close else ""


def sort_problems(problems: list[Problem]) -> list[Problem]:
    """Files in the order they were met, lines in order within each file."""
    order = {f: i for i, f in reversed(list(enumerate(p.file for p in problems)))}
    return sorted(problems, key=lambda p: (order[p.file], p.line or 0))


def raise_problems(problems: list[Problem]) -> None:
    """Raise one `SrSearchError` listing every problem (nothing when the list is empty)."""
    if problems:
        files = sorted({p.file for p in problems})
        head = f"{len(problems)} problem{'s' if len(problems) > 1 else ''} in {', '.join(files)}:"
        raise SrSearchError("\n".join([head, *(f"  {p}" for p in sort_problems(problems))]))


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# --- the study ----------------------------------------------------------------------------------------------

SEARCH_KEYS = ("sampler", "n_trials", "seed", "baselines")
ABLATION_KEYS = ("base", "factors", "design", "seeds")
#: result columns a study may optimise, with the only direction that makes sense for each
METRICS = {
    "psnr_y": "max", "ssim_y": "max", "psnr_gain": "max", "ntire_score": "max", "throughput": "max",
    "mpix_per_s": "max", "latency_ms": "min", "latency_ms_p90": "min", "params_deploy": "min",
    "params_train": "min", "macs_deploy": "min", "peak_mem_mb": "min", "train_seconds": "min",
}
_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class Constraints(BaseModel):
    """Budgets checked before training; all optional."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_params: PositiveInt | None = None
    max_macs: PositiveFloat | None = None
    max_latency_ms: PositiveFloat | None = None

    def violations(self, *, params: float | None = None, macs: float | None = None,
                   latency_ms: float | None = None) -> dict[str, float]:
        """`value - limit` for every budget that is set and measured (<= 0 means feasible: Optuna's convention)."""
        pairs = {"max_params": (params, self.max_params), "max_macs": (macs, self.max_macs),
                 "max_latency_ms": (latency_ms, self.max_latency_ms)}
        return {k: float(v - lim) for k, (v, lim) in pairs.items() if v is not None and lim is not None}


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
        return _record(DataSpec, value)

    @field_validator("train", mode="before")
    @classmethod
    def _resolve_warm_start(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, dict) and isinstance(value.get("warm_start"), str):
            value = {**value, "warm_start": str(_resolve(value["warm_start"], info))}
        return _record(TrainBudget, value)

    @field_validator("timing", mode="before")
    @classmethod
    def _inline_protocol(cls, value: Any) -> Any:
        return _record(TimingProtocol, {"name": "inline", **value}) if isinstance(value, dict) else value

    @field_validator("protocols", mode="before")
    @classmethod
    def _custom_protocols(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        out, errors = {}, []
        for key, record in value.items():
            try:
                out[key] = _record(TimingProtocol, {**record, "name": key} if isinstance(record, dict) else record)
            except ValueError as exc:  # keep the protocol's name in each line's key path
                errors += [_FIELD_LINE.sub(lambda m: f"{m[1]} field '{key}.{m[2]}':", line)
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
        space = _cached_space(str(self.space), self.space.stat().st_mtime_ns)
        if self.fixed:
            space = space.with_fixed(self.fixed)
        return space.model_copy(update={"constraints": self.constraints(space)})

    def constraints(self, space: SearchSpace | None = None) -> Constraints:
        """The budgets every candidate must meet before it is trained (space's, overridden by the study's)."""
        space = space or _cached_space(str(self.space), self.space.stat().st_mtime_ns)
        mine = self.constraint_overrides.model_dump(exclude_none=True)
        return Constraints(**{**space.constraints.model_dump(exclude_none=True), **mine})

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


#: how `arch.format_validation_error` words one problem of a record with its own `__init__`
_FIELD_LINE = re.compile(r"^(\S+) field '([^']+)':")


def _record(cls: type[BaseModel], value: Any) -> Any:
    """Build a record whose `__init__` raises `SrSearchError` (DataSpec, TrainBudget, TimingProtocol) as a
    pydantic error, so its problems join the others (`_report_validation` splits them back per field)."""
    if not isinstance(value, dict):
        return value
    try:
        return cls(**value)
    except SrSearchError as exc:
        raise ValueError(str(exc)) from None


@functools.lru_cache(maxsize=16)
def _cached_space(path: str, mtime_ns: int) -> SearchSpace:
    from .space import load_space

    return load_space(path)


def resolve_preset(name: str) -> ArchSpec:
    from .presets import PRESETS

    if name not in PRESETS:
        close = difflib.get_close_matches(name, PRESETS, n=4, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise SrSearchError(f"unknown preset {name!r}; {hint}presets: {', '.join(PRESETS)}")
    return PRESETS[name]


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
        _report_validation(doc, exc)
    _check_modes(doc, data)
    _check_references(doc, data, base_dir)
    space = _check_space(doc, data, base_dir)
    if study is None:
        return None
    _check_baselines(doc, study, space)
    if study.mode == "ablation" and space is not None:
        _check_ablation(doc, study, space)
    if space is not None:
        _check_patch(doc, study, space)
    try:
        protocol = study.timing_protocol("cpu" if study.timing == "auto" else None)
    except SrSearchError as exc:
        if not any(p.key == "timing" for p in doc.problems):
            doc.problem(("protocols",), str(exc))
    else:
        scale = _study_scale(study, space)
        if protocol.scale is not None and scale is not None and protocol.scale != scale:
            doc.problem(("timing",), f"protocol {protocol.name!r} times x{protocol.scale} models, but this study's "
                                     f"candidates are x{scale}")
    return None if doc.problems else study


def _report_validation(doc: Doc, exc: ValidationError) -> None:
    for err in exc.errors():
        loc = tuple(err["loc"])
        if err["type"] == "extra_forbidden":
            allowed = _allowed_keys(loc[:-1])
            doc.problem(loc, f"unknown key {loc[-1]!r}{did_you_mean(loc[-1], allowed)}; allowed: {', '.join(allowed)}")
        elif err["type"] == "missing":
            doc.problem(loc, "required key is missing")
        elif err["type"] == "value_error" and _FIELD_LINE.match(err["msg"].removeprefix("Value error, ")):
            for line in err["msg"].removeprefix("Value error, ").splitlines():
                match = _FIELD_LINE.match(line)
                if match is None:
                    doc.problem(loc, line)
                    continue
                sub = tuple(int(p) if p.isdigit() else p for p in match[2].split("."))
                message = line[match.end():].strip()
                unknown = re.match(r"unknown field \(allowed: ([^)]*)\)", message)
                if unknown:
                    allowed = unknown[1].split(", ")
                    message = f"unknown key {sub[-1]!r}{did_you_mean(sub[-1], allowed)}; allowed: {unknown[1]}"
                doc.problem(loc + sub, message)
        else:
            msg = err["msg"].removeprefix("Value error, ")
            got = err.get("input")
            shown = "" if isinstance(got, (dict, list)) else f"; got {got!r}"
            doc.problem(loc, f"{msg}{shown}")


def _allowed_keys(loc: KeyPath) -> list[str]:
    model: Any = Study
    for part in loc:
        info = model.model_fields.get(part) if isinstance(model, type) and issubclass(model, BaseModel) else None
        if info is None:
            by_alias = {i.alias: i for i in model.model_fields.values() if i.alias} if model is Study else {}
            info = by_alias.get(part)
        if info is None:
            return []
        model = next((a for a in (typing.get_args(info.annotation) or (info.annotation,))
                      if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if model is None:
            return []
    return [info.alias or name for name, info in model.model_fields.items()]


def _check_modes(doc: Doc, data: dict[str, Any]) -> None:
    mode = data.get("mode", "search")
    if mode not in ("search", "ablation"):
        return
    wrong = ABLATION_KEYS if mode == "search" else SEARCH_KEYS
    other = "ablation" if mode == "search" else "search"
    for key in wrong:
        if key in data:
            doc.problem((key,), f"{key!r} is only used with mode: {other} (this study has mode: {mode})")
    if mode == "ablation":
        for key in ("base", "factors"):
            if key not in data:
                doc.problem((), f"mode: ablation needs `{key}` ({'a preset name or a spec' if key == 'base' else 'FIELD: [levels]'})")


def _check_space(doc: Doc, data: dict[str, Any], base_dir: Path | None) -> SearchSpace | None:
    from .space import parse_space

    raw = data.get("space")
    if not isinstance(raw, (str, Path)) or not str(raw):
        return None
    path = Path(raw) if base_dir is None else (base_dir / raw).resolve()
    if not path.is_file():
        doc.problem(("space",), f"search-space file not found: {path}"
                                + (" (relative paths resolve against the study file's folder)" if base_dir else ""))
        return None
    space_doc = read_yaml(path, "search space")
    space = parse_space(space_doc) if not space_doc.problems else None
    doc.problems.extend(space_doc.problems)
    fixed = data.get("fixed")
    if space is not None and isinstance(fixed, dict) and fixed:
        try:
            space = space.with_fixed(fixed)
        except SrSearchError as exc:
            doc.problem(("fixed",), str(exc))
            return None
    if space is not None and data.get("mode", "search") == "search":
        for field in ("scale", "colors"):
            if space.fixed_value(field) is None:
                doc.problem(("fixed",) if fixed else ("space",),
                            f"the space lets {field!r} vary, but a study compares candidates on one task: pin it "
                            f"(e.g. fixed: {{{field}: ...}})")
    return space


def _check_references(doc: Doc, data: dict[str, Any], base_dir: Path | None) -> None:
    """Names and paths the study refers to: image folders, warm-start checkpoint, presets, timing protocol."""
    from .presets import PRESETS
    from .timing import PROTOCOLS

    def local(value: str) -> Path:
        path = Path(value).expanduser()
        return (base_dir / path).resolve() if base_dir is not None else path

    raw_data = data.get("data") if isinstance(data.get("data"), dict) else {}
    sources = [(("data", "train"), raw_data.get("train"))]
    if isinstance(raw_data.get("val"), dict):
        sources += [(("data", "val", k), v) for k, v in raw_data["val"].items()]
    for path, source in sources:
        if isinstance(source, str) and source != BUILTIN and not local(source).is_dir():
            doc.problem(path, f"image folder not found: {local(source)} (relative paths resolve against the study "
                              f"file's folder; `{BUILTIN}` is the built-in image set)")
    train = data.get("train") if isinstance(data.get("train"), dict) else {}
    if isinstance(train.get("warm_start"), str) and not local(train["warm_start"]).is_file():
        doc.problem(("train", "warm_start"), f"checkpoint not found: {local(train['warm_start'])}")
    baselines = data.get("baselines")
    for i, name in enumerate(baselines if isinstance(baselines, list) else []):
        if isinstance(name, str) and name not in PRESETS:
            doc.problem(("baselines", i), f"unknown preset {name!r}{did_you_mean(name, PRESETS)}; "
                                          f"`sr-search inspect` and sr_search/presets.py list them")
    timing, custom = data.get("timing"), data.get("protocols")
    known = ["auto", *PROTOCOLS, *(custom if isinstance(custom, dict) else {})]
    if isinstance(timing, str) and timing not in known:
        doc.problem(("timing",), f"unknown timing protocol {timing!r}{did_you_mean(timing, known)}; allowed: "
                                 f"{', '.join(known)}, or an inline protocol mapping")


def _check_baselines(doc: Doc, study: Study, space: SearchSpace | None) -> None:
    from .presets import PRESETS

    scale = _study_scale(study, space)
    for i, name in enumerate(study.baselines):
        spec = PRESETS.get(name)
        if spec is not None and scale is not None and spec.scale != scale:
            doc.problem(("baselines", i), f"{name} is a x{spec.scale} model but this study's candidates are "
                                          f"x{scale}; pick its x{scale} variant")


def _check_ablation(doc: Doc, study: Study, space: SearchSpace) -> None:
    try:
        base = study.base_spec()
    except SrSearchError as exc:
        doc.problem(("base",), str(exc))
        return
    _, problems = space.grid_problems(base, study.factors, study.design)
    for path, message in problems:
        doc.problem(path if path[:1] in (("base",), ("design",)) else ("factors", *path), message)
    if len(set(study.seeds)) != len(study.seeds):
        doc.problem(("seeds",), f"a seed is listed twice: {list(study.seeds)}")


def _check_patch(doc: Doc, study: Study, space: SearchSpace) -> None:
    """Every candidate's LR patch must divide by its unshuffle and keep the block's minimum tile (ESA: 15 px)."""
    if study.mode == "ablation":
        try:
            cases = {(p.spec.block, p.spec.unshuffle) for p in space.grid(study.base_spec(), study.factors,
                                                                              mode=study.design)}
        except SrSearchError:
            return
    else:
        cases = set()
        for block, params in space.plans:
            entries = [p for p in params if p.field == "unshuffle"]
            cases |= {(block, u) for u in (entries[0].values() if entries else (1,))}
    patch = study.train.lr_patch
    bad = sorted((b, u) for b, u in cases if patch % u or patch // u < family_of(b).min_lr_size)
    if bad:
        need = math.lcm(*(u for _, u in cases))
        need *= math.ceil(max(family_of(b).min_lr_size * u for b, u in cases) / need)
        shown = ", ".join(f"{b} with unshuffle {u}" for b, u in bad)
        doc.problem(("train", "lr_patch"), f"lr_patch={patch} does not fit {shown} (a patch must divide by the "
                                           f"unshuffle and keep >= the block's minimum LR tile after it); "
                                           f"the smallest lr_patch that fits every candidate is {need}")


def _study_scale(study: Study, space: SearchSpace | None) -> int | None:
    if study.mode == "ablation":
        try:
            return study.base_spec().scale
        except SrSearchError:
            return None
    return space.fixed_value("scale") if space is not None else None


def detect_kind(doc: Doc) -> str | None:
    """'space' or 'study' from a parsed file's keys (None, with a problem recorded, when neither fits)."""
    from .space import SPACE_KEYS

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
    from .space import parse_space

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
    from .space import describe_space, load_space

    doc = read_yaml(path, "YAML")
    raise_problems(doc.problems)
    if detect_kind(doc) == "space":
        return describe_space(load_space(path))
    study = load_study(path)
    scale = _study_scale(study, study.search_space())
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
