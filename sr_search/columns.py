"""The result columns: every column of a trial's row (`results.parquet`, `trials/<id>.parquet`), declared once.

`CATALOG` lists each column with its kind, the direction a study may optimise it in, its unit, its Arrow type and
the label reports print. Every list of columns elsewhere is derived from it: the objectives a study may name
(`study.model.METRICS`), the parquet schema (`results.store.COLUMNS`), the cost and timed objectives of the effects
and of `compare`, what counts as quality (`run.trial.is_quality`), the labels and units of tables and figures. A
trial's status is `TrialStatus`, a string-valued enum, so parquet holds the same text it always did.

This module is the bottom of the house (see docs/architecture.md, "Layers"): it imports nothing of sr_search and no
heavy library (`sr-search status` loads it), so the Arrow type is a string here, mapped to pyarrow in
`results.store`.

Adding a column
---------------
1. Append a `Column(...)` to `CATALOG` at the end of its group (the order of `CATALOG` is the column order of a row
   file; appending keeps the position of every landed column). Give it a kind, its Arrow type (one of
   `ARROW_TYPES`), a direction only if a study may optimise it, a unit and a label when a report shows it.
   `fixed=False` for a column written only when measured (a RGB model's `psnr_rgb`): it is then absent from rows
   that lack it instead of a null in every row.
2. Declare it in the typed record of its stage (`TrialRow`'s parts below: the one of its kind), and write the value
   where the row is built (`run.trial`); nothing else needs an edit: the schema, the objectives a study may name and
   the report's labels follow.
3. Never rename a landed column or change its Arrow type: study folders written by 0.1 and 0.2 hold it
   (`tests/test_columns.py` compares them column by column). A column that a family of names shares (one per
   validation set, one per constraint) is a `Family`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Literal, TypedDict


class TrialStatus(str, Enum):
    """How a trial ended; the value is the text stored in the row's `status` column."""

    COMPLETE = "complete"
    INFEASIBLE = "infeasible"  # a constraint refused it before training (cost is exact without training)
    FAILED = "failed"  # an error, with its reason in `error`
    PRUNED = "pruned"  # stopped at a rung by successive halving

    __str__ = str.__str__  # f"{status}" is the stored text on every Python version


#: every status as stored text, in the order reports count them
STATUSES: tuple[str, ...] = tuple(s.value for s in TrialStatus)


class Kind(str, Enum):
    """What a column holds."""

    IDENTITY = "identity"  # which trial: study, id, architecture, ablation factor and level, seed
    BOOKKEEPING = "bookkeeping"  # how it ran: status, error, times, host, versions
    QUALITY = "quality"  # measured on validation images; depends on the training budget
    REFERENCE = "reference"  # the bicubic baseline's scores on the same images
    COST = "cost"  # exact from the network alone (no training, no timing)
    TIMED = "timed"  # measured by the timing protocol (noisy; equal for equal deployed networks)
    TIMING = "timing"  # how the timed columns were measured
    TRAINING = "training"  # the training run
    RUNG = "rung"  # successive halving: the last rung a trial reached
    CONSTRAINT = "constraint"  # how far a constraint is exceeded (feasible <= 0)


#: the Arrow types a column may have, as `results.store` maps them to pyarrow
ARROW_TYPES = ("large_string", "int64", "float64", "bool", "timestamp[us, tz=UTC]")
Direction = Literal["max", "min"]


@dataclass(frozen=True)
class Column:
    """One result column. `direction`: the one way a study may optimise it (None: not an objective); `timed`: its
    value comes from a timing measurement (a timed column, or a score that uses the runtime)."""

    name: str
    kind: Kind
    arrow: str
    direction: Direction | None = None
    unit: str = ""
    label: str = ""
    fixed: bool = True
    timed: bool = False

    def __post_init__(self) -> None:
        if self.arrow not in ARROW_TYPES:
            raise ValueError(f"column {self.name!r}: Arrow type {self.arrow!r} is none of {ARROW_TYPES}")
        if self.kind is Kind.TIMED:
            object.__setattr__(self, "timed", True)

    @property
    def display(self) -> str:
        """The label with its unit, as tables and axes show it: 'PSNR-Y (dB)'."""
        text = self.label or self.name
        return f"{text} ({self.unit})" if self.unit and f"({self.unit})" not in text else text


@dataclass(frozen=True)
class Family:
    """Columns that share a prefix: one per validation set (`psnr_y_<set>`) or per constraint (`constraint_<c>`).
    Never written in the fixed schema; their type is inferred from the value."""

    prefix: str
    kind: Kind
    arrow: str
    unit: str = ""


_STR, _INT, _F64, _BOOL, _TIME = "large_string", "int64", "float64", "bool", "timestamp[us, tz=UTC]"
_ID, _BOOK, _QUAL, _REF, _COST, _TIMED, _HOW, _TRAIN, _RUNG, _LIMIT = (
    Kind.IDENTITY, Kind.BOOKKEEPING, Kind.QUALITY, Kind.REFERENCE, Kind.COST, Kind.TIMED, Kind.TIMING, Kind.TRAINING,
    Kind.RUNG, Kind.CONSTRAINT)

#: Every column, in the order a row file holds them (the architecture's fields follow `SPEC_AFTER`).
CATALOG: tuple[Column, ...] = (
    Column("study", _ID, _STR),
    Column("trial_id", _ID, _STR),
    Column("status", _BOOK, _STR),
    Column("error", _BOOK, _STR),
    Column("arch_json", _ID, _STR),
    Column("arch_key", _ID, _STR),
    Column("deploy_key", _ID, _STR),
    Column("baseline", _ID, _STR),
    Column("factor", _ID, _STR),
    Column("level", _ID, _STR),
    Column("params_train", _TRAIN, _INT, "min", label="parameters (training)"),
    Column("params_deploy", _COST, _INT, "min", label="parameters (deployed)"),
    Column("macs_deploy", _COST, _INT, "min", label="MACs (deployed)"),
    Column("psnr_y", _QUAL, _F64, "max", "dB", "PSNR-Y"),
    Column("ssim_y", _QUAL, _F64, "max", label="SSIM-Y"),
    Column("bicubic_psnr_y", _REF, _F64, unit="dB", label="bicubic PSNR-Y"),
    Column("psnr_gain", _QUAL, _F64, "max", "dB", "PSNR-Y gain over bicubic"),
    Column("collapsed", _TRAIN, _BOOL),  # a training gone wrong (results/quality_flags.py); 0.1/0.2: below bicubic
    Column("train_iterations", _TRAIN, _INT),
    Column("train_seconds", _TRAIN, _F64, "min", "s", "training time"),
    Column("final_loss", _TRAIN, _F64),
    Column("val_curve", _TRAIN, _STR),
    Column("rung", _RUNG, _INT),
    Column("rung_iterations", _RUNG, _INT),
    Column("rung_psnr_y", _RUNG, _F64, unit="dB"),
    Column("rung_ssim_y", _RUNG, _F64),
    Column("rung_psnr_gain", _RUNG, _F64, unit="dB"),
    Column("latency_ms", _TIMED, _F64, "min", "ms", "latency"),
    Column("latency_ms_p90", _TIMED, _F64, "min", "ms", "latency p90"),
    Column("latency_ms_mean", _TIMED, _F64, "min", "ms", "mean latency"),
    Column("throughput", _TIMED, _F64, "max", "images/s", "throughput"),
    Column("mpix_per_s", _TIMED, _F64, "max", "Mpixel/s", "output pixels"),
    Column("timing_protocol", _HOW, _STR),
    Column("timing_device", _HOW, _STR),
    Column("timing_precision", _HOW, _STR),
    Column("timing_exclusive", _HOW, _BOOL),
    Column("timing_cached", _HOW, _BOOL),
    Column("timing_retimed", _HOW, _BOOL),
    Column("timing_node", _HOW, _STR),
    Column("reparam_max_abs_err", _COST, _F64),
    Column("peak_mem_mb", _TIMED, _F64, "min", "MB", "peak memory"),
    Column("ntire_score", _QUAL, _F64, "max", label="NTIRE23 score", timed=True),
    Column("ntire_esr_score", _QUAL, _F64, "min", label="NTIRE ESR score", timed=True),
    Column("ntire_esr_gflops", _COST, _F64, unit="GFLOPs", label="fvcore FLOPs"),
    Column("constraint_violation", _LIMIT, _F64),
    Column("seed", _ID, _INT),
    Column("started_at", _BOOK, _TIME),
    Column("finished_at", _BOOK, _TIME),
    Column("host", _BOOK, _STR),
    Column("node", _BOOK, _STR),
    Column("versions", _BOOK, _STR),
    # written only when measured: RGB models' scores, the bicubic baseline's other scores
    Column("psnr_rgb", _QUAL, _F64, unit="dB", label="PSNR-RGB", fixed=False),
    Column("bicubic_ssim_y", _REF, _F64, fixed=False),
    Column("bicubic_psnr_rgb", _REF, _F64, unit="dB", fixed=False),
    # a confirmation's rows (`confirms:`): the source trial each confirms, and the proxy iterations it continued from
    Column("source_trial_id", _ID, _STR, fixed=False),
    Column("continued_from_iterations", _TRAIN, _INT, fixed=False),
    # timed in a deployment engine (runtime other than torch): what ran it, its build time, versions and check
    Column("timing_runtime", _HOW, _STR, fixed=False),
    Column("engine_build_s", _HOW, _F64, unit="s", label="engine build time", fixed=False),
    Column("engine_versions", _HOW, _STR, fixed=False),
    Column("engine_max_abs_err", _HOW, _F64, fixed=False),
    Column("engine_failure", _BOOK, _STR, fixed=False),  # export, build or check: the stage that failed
    # the quality flags (results/quality_flags.py): under bicubic, and the PSNR-Y the network started from
    Column("below_bicubic", _TRAIN, _BOOL, fixed=False),
    Column("start_psnr_y", _TRAIN, _F64, unit="dB", label="PSNR-Y before training", fixed=False),
    # where a trial's time went (train_seconds: active training only): preparing and feeding data, validating,
    # reparameterizing and checking the deployed network, timing it, and paused between rung segments
    Column("data_seconds", _BOOK, _F64, unit="s", label="data time"),
    Column("validate_seconds", _BOOK, _F64, unit="s", label="validation time"),
    Column("deploy_seconds", _BOOK, _F64, unit="s", label="deploy time"),
    Column("timing_seconds", _BOOK, _F64, unit="s", label="timing time"),
    Column("paused_seconds", _BOOK, _F64, unit="s", label="paused time"),
)
#: the architecture's fields (every ArchSpec field, each registered family's) follow this column in a row file
SPEC_AFTER = "error"

#: per validation set and per constraint (after the fixed ones in a row file, typed by their values)
FAMILIES: tuple[Family, ...] = (
    Family("psnr_y_", _QUAL, _F64, "dB"),
    Family("ssim_y_", _QUAL, _F64),
    Family("psnr_rgb_", _QUAL, _F64, "dB"),
    Family("bicubic_", _REF, _F64),
    Family("constraint_", _LIMIT, _F64),
    # a study that also times in other runtimes (`also_time`): the latency under each, and why one failed
    Family("latency_ms@", _TIMED, _F64, "ms"),
    Family("timing_error@", _BOOK, _STR),
)

BY_NAME: dict[str, Column] = {c.name: c for c in CATALOG}


def column(name: str) -> Column | None:
    """The catalog's column `name` (None for a family's column or an unknown one)."""
    return BY_NAME.get(name)


def kind_of(name: str) -> Kind | None:
    """The kind of a column, a family's included (None when unknown)."""
    if name in BY_NAME:
        return BY_NAME[name].kind
    return next((f.kind for f in FAMILIES if name.startswith(f.prefix)), None)


def names(*kinds: Kind, fixed: bool | None = None) -> tuple[str, ...]:
    """Names of the columns of these kinds, in catalog order (`fixed`: only those in / not in the fixed schema)."""
    return tuple(c.name for c in CATALOG if c.kind in kinds and (fixed is None or c.fixed is fixed))


#: the objectives a study may name, with the only direction that makes sense for each
OBJECTIVES: dict[str, Direction] = {c.name: c.direction for c in CATALOG if c.direction is not None}
#: what a study optimises unless it says otherwise: quality and speed (the one place this default lives)
DEFAULT_OBJECTIVES: dict[str, Direction] = {"psnr_y": "max", "throughput": "max"}
#: columns whose value depends on the training budget (a rung's row carries its own)
QUALITY: tuple[str, ...] = names(Kind.QUALITY)
#: per-set quality columns (`psnr_y_<set>`): quality too
QUALITY_PREFIXES: tuple[str, ...] = tuple(f.prefix for f in FAMILIES if f.kind is Kind.QUALITY)
#: measured by the timing protocol: noisy, equal for equal deployed networks
TIMED: tuple[str, ...] = names(Kind.TIMED)
#: every column whose value uses a timing (the timed ones and the scores built on the runtime)
USES_TIMING: tuple[str, ...] = tuple(c.name for c in CATALOG if c.timed)
#: what depends only on the deployed network: equal `deploy_key`, equal value, whatever the seed
DEPLOYED_COST: tuple[str, ...] = tuple(c.name for c in CATALOG if c.kind in (Kind.COST, Kind.TIMED) and c.direction)
#: labels (with unit) and units, for tables, figures and reports
LABELS: dict[str, str] = {c.name: c.display for c in CATALOG if c.label}
UNITS: dict[str, str] = {c.name: c.unit for c in CATALOG if c.unit}


def is_quality(name: str) -> bool:
    """Whether column `name` is measured on validation images after training (a per-set one included)."""
    return name in QUALITY or name.startswith(QUALITY_PREFIXES)



# --- the row, typed by stage ------------------------------------------------------------------------------------
# What a trial sends the driver and the driver writes (`results.store.write_trial_row`): a `TrialRow`. One TypedDict
# per stage of a trial, each holding the columns of its kinds (tests/test_columns.py keeps them equal to `CATALOG`);
# every value may be None (a failed or infeasible trial has no quality). A row also holds the spec's fields and the
# families' columns (`psnr_y_<set>`, `constraint_<name>`), which depend on the study and are not listed here.

class TrialIdentity(TypedDict, total=False):
    """Who the trial is: every row has these (`run.trial.task_columns`), and the spec's fields."""

    study: str | None
    trial_id: str | None
    arch_json: str | None
    arch_key: str | None
    deploy_key: str | None
    baseline: str | None
    factor: str | None
    level: str | None
    seed: int | None
    source_trial_id: str | None


class TrialBookkeeping(TypedDict, total=False):
    """How it ran: its status (a `TrialStatus` value) and error, when and where, where its time went."""

    status: str | None
    error: str | None
    started_at: datetime | None
    finished_at: datetime | None
    host: str | None
    node: str | None
    versions: str | None
    engine_failure: str | None
    data_seconds: float | None
    validate_seconds: float | None
    deploy_seconds: float | None
    timing_seconds: float | None
    paused_seconds: float | None


class CostColumns(TypedDict, total=False):
    """Known before training: the deployed network's exact cost, and how far it breaks a constraint
    (`constraint_<name>` too)."""

    params_deploy: int | None
    macs_deploy: int | None
    reparam_max_abs_err: float | None
    ntire_esr_gflops: float | None
    constraint_violation: float | None


class TimedColumns(TypedDict, total=False):
    """The deployed network's timing and how it was measured (`run.trial.timing_columns`)."""

    latency_ms: float | None
    latency_ms_p90: float | None
    latency_ms_mean: float | None
    throughput: float | None
    mpix_per_s: float | None
    timing_protocol: str | None
    timing_device: str | None
    timing_precision: str | None
    timing_exclusive: bool | None
    timing_cached: bool | None
    timing_retimed: bool | None
    timing_node: str | None
    peak_mem_mb: float | None
    timing_runtime: str | None
    engine_build_s: float | None
    engine_versions: str | None
    engine_max_abs_err: float | None


class TrainingColumns(TypedDict, total=False):
    """The training run."""

    params_train: int | None
    collapsed: bool | None
    train_iterations: int | None
    train_seconds: float | None
    final_loss: float | None
    val_curve: str | None
    continued_from_iterations: int | None
    below_bicubic: bool | None
    start_psnr_y: float | None


class QualityColumns(TypedDict, total=False):
    """Measured on the validation images after training (`psnr_y_<set>` too), and the bicubic baseline's
    scores on them."""

    psnr_y: float | None
    ssim_y: float | None
    bicubic_psnr_y: float | None
    psnr_gain: float | None
    ntire_score: float | None
    ntire_esr_score: float | None
    psnr_rgb: float | None
    bicubic_ssim_y: float | None
    bicubic_psnr_rgb: float | None


class RungColumns(TypedDict, total=False):
    """Successive halving: the last rung a stopped candidate reached (its quality there, never in `psnr_y`)."""

    rung: int | None
    rung_iterations: int | None
    rung_psnr_y: float | None
    rung_ssim_y: float | None
    rung_psnr_gain: float | None


class TrialRow(TrialIdentity, TrialBookkeeping, CostColumns, TimedColumns, TrainingColumns, QualityColumns, RungColumns,
               total=False):
    """One trial's row: `study`, `trial_id` and `status` always, the rest as far as the trial got."""


#: the typed record of each kind's columns
STAGES: dict[Kind, type] = {
    Kind.IDENTITY: TrialIdentity,
    Kind.BOOKKEEPING: TrialBookkeeping,
    Kind.COST: CostColumns,
    Kind.CONSTRAINT: CostColumns,
    Kind.TIMED: TimedColumns,
    Kind.TIMING: TimedColumns,
    Kind.TRAINING: TrainingColumns,
    Kind.QUALITY: QualityColumns,
    Kind.REFERENCE: QualityColumns,
    Kind.RUNG: RungColumns,
}


__all__ = ["ARROW_TYPES", "CATALOG", "Column", "DEFAULT_OBJECTIVES", "DEPLOYED_COST", "FAMILIES", "Family", "Kind",
           "LABELS", "OBJECTIVES", "QUALITY", "SPEC_AFTER", "STATUSES", "TIMED", "TrialStatus", "UNITS", "USES_TIMING",
           "column", "is_quality", "kind_of", "names", "TrialRow", "STAGES", "TrialIdentity", "TrialBookkeeping",
           "CostColumns", "TimedColumns", "TrainingColumns", "QualityColumns", "RungColumns"]
