"""`Study`: a study file validated into one frozen object (the keys and their defaults: sr_search/study/config.py).

Nested sections (`data`, `train`, `timing`, `resources`, ...) are validated by pydantic natively, so every problem
keeps its key path; the timing protocol is resolved once, here (`Study.protocol`), and passed down from there.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from ..columns import DEFAULT_OBJECTIVES, OBJECTIVES
from ..errors import FieldProblem, SrSearchError
from ..model.presets import preset as resolve_preset
from ..model.spec import ArchSpec
from ..records import MAX_SEED, no_bool_numbers
from .domain import Constraints
from .grid import GridPoint
from .protocols import PROTOCOLS, TimingProtocol, get_protocol
from .settings import BUILTIN, DataSpec, TrainBudget
from .space import SearchSpace
from .space_file import load_space
from .yamlfile import did_you_mean

#: result columns a study may optimise, with the only direction that makes sense for each (from the column catalog)
METRICS = OBJECTIVES
SEARCH_KEYS = ("sampler", "n_trials", "seed", "baselines", "pruning")
ABLATION_KEYS = ("base", "factors", "design", "seeds", "base_seeds")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
#: sane upper bounds: far above any real study, low enough that a typo is caught rather than run (ETA 3e27 min)
MAX_TRIALS = 100_000
MAX_SEEDS = 1_000
Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]


class Resources(BaseModel):
    """Per-trial resources handed to Ray, and how many trials run at once."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    cpus_per_trial: float = Field(1, gt=0, le=1024)
    #: fractional values share a GPU between trials (training only: timings are then marked non-exclusive);
    #: 'auto' = 1 when this machine has CUDA, else 0 (set it explicitly for a cluster whose driver has no GPU)
    gpus_per_trial: float = Field("auto", ge=0, le=64, validate_default=True)
    concurrency: int = Field(1, ge=1, le=10_000)
    max_failures: int = Field(0, ge=0, le=100)
    #: the cluster adds nodes on demand (Ray autoscaler): wait for missing resources instead of refusing to start
    autoscaling: bool = False
    #: how long to wait for an autoscaling cluster to offer what the study needs before giving up
    wait_s: float = Field(1800, gt=0, le=7 * 24 * 3600)

    _no_bool_numbers = model_validator(mode="before")(classmethod(no_bool_numbers))

    @field_validator("gpus_per_trial", mode="before")
    @classmethod
    def _auto_gpus(cls, value: Any) -> Any:
        if value == "auto":
            import torch

            return 1.0 if torch.cuda.is_available() else 0.0
        return value


class TimingPlacement(BaseModel):
    """Where every timing runs: a Ray custom resource the deployment node offers (`ray start --resources
    '{"rtx3090": 1}'`); training runs on any GPU the cluster has."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    resources: dict[str, float] = Field(min_length=1)

    _no_bool_numbers = model_validator(mode="before")(classmethod(no_bool_numbers))

    @field_validator("resources")
    @classmethod
    def _positive(cls, value: dict[str, float]) -> dict[str, float]:
        for name, amount in value.items():
            if name.upper() in ("CPU", "GPU") or not amount > 0:
                raise FieldProblem(name, "name a custom resource of the deployment node with an amount > 0 "
                                         "(CPU and GPU are asked for by the timing protocol itself)")
        return value


class Pruning(BaseModel):
    """Pareto-safe successive halving (search studies): candidates are compared at `min_iterations`,
    `min_iterations * reduction_factor`, ... below the full budget; the top 1/reduction_factor of those that reached
    a rung continue, ranked on (quality at the rung, exact cost). See sr_search/run/halving.py."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    method: Literal["successive_halving"] = "successive_halving"
    min_iterations: int = Field(ge=1, le=10_000_000)
    reduction_factor: int = Field(3, ge=2, le=16)

    def rungs(self, iterations: int) -> list[int]:
        """The rung budgets, then the full budget (where nothing is decided). A rung is followed by at least
        `reduction_factor` times its budget (740 x 3 of 20,000: 740, 2220, 6660; no decision at 19,980)."""
        rungs, budget = [], self.min_iterations
        while budget * self.reduction_factor <= iterations:
            rungs.append(budget)
            budget *= self.reduction_factor
        return rungs + [iterations]


class Candidate(BaseModel):
    """One candidate of a confirmation study (`confirms:`): a trial of the source study, trained again with the
    confirmation's budget once per seed in `seeds`. Written by `sr-search confirm` (sr_search/run/confirm.py)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: the source study's trial id; every row of this candidate carries it (`source_trial_id`)
    trial: str = Field(pattern=r"^[0-9]{4,}$")
    #: its architecture, every ArchSpec field (the source row's `arch_json`)
    arch: dict[str, Any]
    seeds: tuple[Seed, ...] = Field(min_length=1, max_length=MAX_SEEDS)
    #: the named baseline (preset) the source trial was, if any
    baseline: str | None = None
    #: `confirm --continue`: the source trial's kept weights, and the iterations they were trained for; training
    #: goes on from there for the rest of the budget
    warm_start: str | None = None
    warm_iterations: int | None = Field(None, ge=1)

    _no_bool_numbers = model_validator(mode="before")(classmethod(no_bool_numbers))

    @field_validator("arch")
    @classmethod
    def _check_arch(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            ArchSpec.from_json(json.dumps(value))
        except (SrSearchError, ValueError, TypeError) as exc:
            raise ValueError(f"not an architecture: {exc}") from None
        return value

    @model_validator(mode="after")
    def _check_warm(self) -> Candidate:
        if (self.warm_start is None) != (self.warm_iterations is None):
            raise FieldProblem("warm_start", "warm_start and warm_iterations go together (the weights and the "
                                             "iterations they were trained for)")
        if len(set(self.seeds)) != len(self.seeds):
            raise FieldProblem("seeds", f"seeds {list(self.seeds)} repeat a seed")
        return self

    def spec(self) -> ArchSpec:
        return ArchSpec.from_json(json.dumps(self.arch))


class Study(BaseModel):
    """A validated study file. Frozen; `with_overrides` makes a new one."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True, allow_inf_nan=False)

    name: str = Field(max_length=100)
    space: Path
    mode: Literal["search", "ablation"] = "search"
    #: pins common ArchSpec fields of the space for this study (e.g. {scale: 2}); also applied to `base`
    fixed: dict[str, Any] = Field(default_factory=dict)
    #: budgets on top of (and overriding) the space's `constraints`
    constraint_overrides: Constraints = Field(default_factory=Constraints, alias="constraints")
    sampler: Literal["tpe", "nsga2", "random", "gp"] = "tpe"
    n_trials: int = Field(50, ge=1, le=MAX_TRIALS)
    seed: int = Field(0, ge=0, le=MAX_SEED)
    baselines: tuple[str, ...] = ()
    base: str | dict[str, Any] | None = None
    factors: dict[str, list[Any]] = Field(default_factory=dict)
    design: Literal["one_at_a_time", "factorial"] = "one_at_a_time"
    seeds: tuple[Seed, ...] = Field((0,), min_length=1, max_length=MAX_SEEDS)
    #: how many seeds the base runs with in all (`seeds`, then the next unused integers): its seed-to-seed spread is
    #: the noise floor next to effects measured with one seed; None = the base runs with `seeds` like every variant
    base_seeds: int | None = Field(None, ge=1, le=1000)
    data: DataSpec = Field(default_factory=DataSpec)
    train: TrainBudget = Field(default_factory=TrainBudget)
    timing: str | TimingProtocol = "auto"
    protocols: dict[str, TimingProtocol] = Field(default_factory=dict)
    #: other protocols every candidate is also timed under (another runtime: ort-cpu, openvino-cpu, ...); each adds
    #: the column `latency_ms@<protocol>` (`timing_error@<protocol>` when that timing fails), which objectives may name
    also_time: tuple[str, ...] | None = None
    objectives: dict[str, Literal["max", "min"]] = Field(default_factory=lambda: dict(DEFAULT_OBJECTIVES),
                                                         min_length=1)
    resources: Resources = Field(default_factory=Resources)
    keep_checkpoints: bool = False
    #: time on the deployment device (a Ray custom resource); default: where each candidate trained
    timing_on: TimingPlacement | None = None
    #: early stopping for searches (default: every candidate gets the full budget)
    pruning: Pruning | None = None
    #: default runs/<name>, relative to the current directory
    out_dir: Path | None = None
    #: where Tune keeps trial checkpoints (a shared path or a pyarrow URI such as s3://bucket/runs); default: the
    #: study folder. Workers write only there, never in the study folder.
    storage: str | None = None
    #: a confirmation study: the source study folder it confirms (only read) and the candidates it trains again
    #: (sr_search/run/confirm.py writes both; everything else is the source's but the training budget)
    confirms: Path | None = None
    candidates: tuple[Candidate, ...] = ()
    #: the space as loaded with the study (its file read once, `fixed` pinned); not part of the study file
    loaded_space: SearchSpace | None = Field(None, exclude=True, repr=False)

    _no_bool_numbers = model_validator(mode="before")(classmethod(no_bool_numbers))

    @model_validator(mode="before")
    @classmethod
    def _default_out_dir(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("out_dir") is None and isinstance(data.get("name"), str):
            data = {**data, "out_dir": str(Path("runs") / data["name"])}
        return data

    @model_validator(mode="before")
    @classmethod
    def _confirmation_trials(cls, data: Any) -> Any:
        """A confirmation runs each candidate once per seed: that is its n_trials unless the file says it."""
        if isinstance(data, dict) and data.get("confirms") is not None and "n_trials" not in data:
            candidates = data.get("candidates")
            if isinstance(candidates, (list, tuple)) and all(isinstance(c, dict) for c in candidates):
                runs = sum(len(c["seeds"]) for c in candidates if isinstance(c.get("seeds"), (list, tuple)))
                if runs:
                    data = {**data, "n_trials": runs}
        return data

    @field_validator("confirms", mode="before")
    @classmethod
    def _resolve_confirms(cls, value: Any, info: ValidationInfo) -> Any:
        return _resolve(value, info)

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _NAME.fullmatch(value):  # fullmatch: `$` would let a trailing newline through
            raise ValueError(f"name {value!r} becomes a folder name (runs/<name>): use letters, digits, '_', '-' "
                             f"and '.', starting with a letter or digit (no spaces or control characters)")
        return value

    @field_validator("space", mode="before")
    @classmethod
    def _resolve_space(cls, value: Any, info: ValidationInfo) -> Any:
        return _resolve(value, info)

    @field_validator("storage", mode="before")
    @classmethod
    def _resolve_storage(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, str) and "://" not in value:
            return str(_resolve(value, info))
        return value

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
        return value

    @field_validator("train", mode="before")
    @classmethod
    def _resolve_warm_start(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, dict) and isinstance(value.get("warm_start"), str):
            value = {**value, "warm_start": str(_resolve(value["warm_start"], info))}
        return value

    @field_validator("timing", mode="before")
    @classmethod
    def _inline_protocol(cls, value: Any) -> Any:
        # built here, so its problems keep their key paths (timing.lr_size), not the union's member names
        return TimingProtocol(**{"name": "inline", **value}) if isinstance(value, dict) else value

    @field_validator("protocols", mode="before")
    @classmethod
    def _custom_protocols(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        return {key: {**record, "name": key} if isinstance(record, dict) else record for key, record in value.items()}

    @field_validator("objectives")
    @classmethod
    def _check_objectives(cls, value: dict[str, str]) -> dict[str, str]:
        for metric, direction in value.items():
            family = metric if metric in METRICS else metric.rsplit("_", 1)[0]
            if "@" in metric:  # latency_ms@<protocol>: a latency the study also times (`also_time`)
                family, _, _ = metric.partition("@")
                if family != "latency_ms":
                    raise FieldProblem(metric, f"{metric!r}: only latency_ms@<protocol> names another runtime's "
                                               f"timing (a protocol listed in also_time)")
            if family not in METRICS:
                raise FieldProblem(metric, f"unknown metric {metric!r}{did_you_mean(metric, METRICS)}", [
                    *METRICS, "psnr_y_<set>", "ssim_y_<set> (per validation set)"])
            if direction != METRICS[family]:
                raise FieldProblem(metric, f"{metric} should be {METRICS[family]}imised, not {direction}imised")
        return value

    @model_validator(mode="after")
    def _check_base_seeds(self) -> Study:
        if self.base_seeds is not None and self.base_seeds < len(self.seeds):
            raise FieldProblem("base_seeds", f"base_seeds={self.base_seeds} is fewer than the {len(self.seeds)} "
                                             f"seeds every variant runs with; it counts the base's seeds in all "
                                             f"(at least {len(self.seeds)})")
        return self

    @model_validator(mode="after")
    def _check_confirmation(self) -> Study:
        if self.confirms is None:
            if self.candidates:
                raise FieldProblem("candidates", "only a confirmation study (confirms: SOURCE_DIR) lists candidates")
            return self
        if self.mode != "search":
            raise FieldProblem("mode", "a confirmation trains a list of candidates: mode: search")
        if self.pruning is not None:
            raise FieldProblem("pruning", "a confirmation trains every candidate to its full budget (remove pruning)")
        if self.baselines:
            raise FieldProblem("baselines", "a confirmation's baselines are among its candidates (remove baselines)")
        if not self.candidates:
            raise FieldProblem("candidates", "a confirmation needs at least one candidate")
        runs = [(c.spec().arch_key(), seed) for c in self.candidates for seed in c.seeds]
        if len(set(runs)) != len(runs):
            raise FieldProblem("candidates", "two candidates run the same architecture with the same seed")
        if self.n_trials != len(runs):
            raise FieldProblem("n_trials", f"n_trials={self.n_trials}, but the candidates ask for {len(runs)} "
                                           f"trainings (one per candidate and seed); leave n_trials out")
        for c in self.candidates:
            if c.warm_iterations is not None and c.warm_iterations >= self.train.iterations:
                raise FieldProblem(("train", "iterations"),
                                   f"{self.train.iterations} iterations do not go beyond the {c.warm_iterations} that "
                                   f"candidate {c.trial} continues from")
        return self

    @model_validator(mode="after")
    def _resolve_protocol(self) -> Study:
        self.protocol  # noqa: B018 - resolved (and checked) once, here
        self.also_protocols()  # noqa: B018 - and the ones it also times under
        if self.pruning is not None:
            if self.mode != "search":
                raise FieldProblem("pruning", "stops candidates early, which only a search does; an ablation "
                                              "trains every variant for its full budget (remove pruning)")
            p = self.pruning
            if p.min_iterations * p.reduction_factor > self.train.iterations:
                raise FieldProblem(("pruning", "min_iterations"),
                                   f"{p.min_iterations} x reduction_factor {p.reduction_factor} must be at most "
                                   f"train.iterations ({self.train.iterations}), or no candidate is ever compared "
                                   f"early")
        return self

    # --- what the runner asks ------------------------------------------------------------------------------

    @functools.cached_property
    def protocol(self) -> TimingProtocol:
        """The timing protocol, resolved once: a name (custom protocols first, then built-ins), an inline one, or
        'auto': `repsr` when trials get a GPU, else `cpu`."""
        name = self.timing
        if name == "auto":
            name = "repsr" if self.resources.gpus_per_trial > 0 else "cpu"
        known = ["auto", *PROTOCOLS, *(k for k in self.protocols if k not in PROTOCOLS)]
        if isinstance(name, str) and name not in known:
            raise FieldProblem("timing", f"unknown timing protocol {name!r}{did_you_mean(name, known)}",
                               [*known, "or an inline protocol mapping"])
        try:
            return get_protocol(name, self.protocols)
        except SrSearchError as exc:
            raise FieldProblem("protocols", str(exc)) from None

    def also_protocols(self) -> list[TimingProtocol]:
        """The protocols every candidate is also timed under (`also_time`), resolved like `timing`; every
        `latency_ms@<protocol>` objective names one of them."""
        out = []
        for i, name in enumerate(self.also_time or ()):
            try:
                p = get_protocol(name, self.protocols)
            except SrSearchError as exc:
                raise FieldProblem(("also_time", i), str(exc)) from None
            if p.name == self.protocol.name or p.name in (q.name for q in out):
                raise FieldProblem(("also_time", i), f"protocol {name!r} is timed already (timing: "
                                                     f"{self.protocol.name}; also_time lists each other one once)")
            out.append(p)
        names = {p.name for p in out}
        for metric in self.objectives:
            if "@" in metric and metric.partition("@")[2] not in names:
                raise FieldProblem(("objectives", metric), f"{metric!r} names protocol "
                                                           f"{metric.partition('@')[2]!r}, which the study does not "
                                                           f"also time: add it to also_time")
        return out

    def timing_protocol(self, name: str) -> TimingProtocol:
        """The study's protocol named `name`: its `timing` or one of `also_time`."""
        for p in (self.protocol, *self.also_protocols()):
            if p.name == name:
                return p
        raise SrSearchError(f"study {self.name!r} does not time under protocol {name!r}")

    def search_space(self) -> SearchSpace:
        """The study's space: the file as loaded with the study, `fixed` pinned, the study's constraints merged in."""
        space = self.loaded_space
        if space is None:
            space = self._file_space()
            if self.fixed:
                space = space.with_fixed(self.fixed)
        return space.model_copy(update={"constraints": self.constraints(space)})

    def constraints(self, space: SearchSpace | None = None) -> Constraints:
        """The budgets every candidate must meet before it is trained (space's, overridden by the study's)."""
        space = space or self.loaded_space or self._file_space()
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

    def base_seed_list(self) -> tuple[int, ...]:
        """The seeds the base runs with: `seeds`, then max(seeds) + 1, + 2, ... until `base_seeds` in all (so raising
        `base_seeds` only adds seeds, and the variants' seeds always have a base to pair with)."""
        extra = max(0, (self.base_seeds or 0) - len(self.seeds))
        top = max(self.seeds)
        return (*self.seeds, *range(top + 1, top + 1 + extra))

    def to_yaml(self) -> str:
        """The resolved study (defaults included), as frozen into the study directory."""
        return yaml.safe_dump(self.dump(), sort_keys=False)

    def dump(self) -> dict[str, Any]:
        """The resolved study as plain data, without the keys of the other mode."""
        unused = ABLATION_KEYS if self.mode == "search" else SEARCH_KEYS
        if self.confirms is None:
            unused = (*unused, "confirms", "candidates")
        return {k: v for k, v in self.model_dump(mode="json", by_alias=True).items() if k not in unused}


def _resolve(value: Any, info: ValidationInfo) -> Any:
    base_dir = (info.context or {}).get("base_dir")
    if isinstance(value, (str, Path)) and base_dir is not None and str(value):
        return (Path(base_dir) / Path(value).expanduser()).resolve()
    return value


@functools.lru_cache(maxsize=16)
def _cached_space(path: str, mtime_ns: int) -> SearchSpace:
    return load_space(path)
