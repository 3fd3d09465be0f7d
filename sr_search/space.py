"""`SearchSpace`: what may vary, in which ranges, under which conditions; sampled define-by-run, or enumerated
as an ablation grid.

File format (YAML; every key but `params` optional)::

    description: free text
    params:                          # any ArchSpec field; fields not named keep ArchSpec's / the family's default
      scale: 2                       # fixed value
      block: [rep, ecb, plain]       # choices (default: the keys of `blocks`, else plain)
      channels: {low: 8, high: 64, step: 8}     # int range, inclusive; `step` optional
      width_mult: {low: 1.0, high: 4.0, log: true}  # float range; `log` or `step`, not both
      activation: {choices: [relu, prelu], when: {colors: 1}}   # only sampled when the condition holds
      frozen_bn: {value: 0.9, when: {bn: true}}                 # a fixed value, conditional
    blocks:                          # per-block sections: sampled only when that block is chosen
      rep:
        branches: [1, 2, 3, 4]
        channels: {low: 8, high: 32}   # a common field here overrides the top-level entry for this block
      ecb: {with_idt: [true, false]}
    constraints:                     # checked before training; candidates over budget are not trained
      max_params: 200000             # deployed parameters
      max_macs: 50000000000          # deployed MACs at the timing protocol's input size
      max_latency_ms: 16.0           # median latency under the study's timing protocol (measured by the runner)

A condition `when: {FIELD: VALUE or [VALUES], ...}` holds when every named field has one of the values; fields are
sampled after the fields their conditions name, and a field whose condition fails keeps its default. Fields used
only by some block families (branches, with_idt, esa_channels, ...) belong under `blocks.<name>`; at top level they
are accepted only when every block of the space uses them. Optuna parameter names are stable: the field name for
top-level entries, `<block>.<field>` for section entries, `block` for the block choice; fixed values are never
suggested. Combinations ArchSpec rejects (e.g. `residual: bn` with `bn: false`) are found when the file is loaded,
by enumerating small spaces and sampling large ones.

Optuna is never imported here: `sample` takes any object with Optuna's `suggest_categorical/int/float`
(`RandomTrial` is a dependency-free one, used by `sr-search validate --show` and the tests).
"""

from __future__ import annotations

import itertools
import math
import random
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Literal, Mapping, Sequence

from pydantic import BaseModel, ConfigDict, ValidationError

from .arch import BLOCK_FIELDS, COMMON_FIELDS, ArchSpec
from .blocks import REGISTRY, family_of
from .config import Constraints, Doc, KeyPath, did_you_mean, is_number, key_text, raise_problems, read_yaml
from .errors import SrSearchError

SPACE_KEYS = ("description", "params", "blocks", "constraints")
PARAM_KEYS = ("value", "choices", "low", "high", "step", "log", "when")
#: spaces up to this many combinations are enumerated completely when loaded; larger ones are sampled
PROBE_ENUMERATE = 5000
PROBE_SAMPLES = 400


# --- ArchSpec field types -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldType:
    """What values one ArchSpec field accepts, read from its annotation (so the space never drifts from it)."""

    name: str
    kind: Literal["int", "float", "bool", "str"]
    allowed: tuple[Any, ...] | None
    optional: bool
    lower: float | None = None
    lower_open: bool = False
    upper: float | None = None

    def text(self) -> str:
        if self.allowed is not None:
            text = "one of " + ", ".join(map(_show, self.allowed))
        elif self.kind == "bool":
            text = "true or false"
        else:
            lo = "" if self.lower is None else f"{'>' if self.lower_open else '>='} {_show(self.lower)}"
            hi = "" if self.upper is None else f"<= {_show(self.upper)}"
            text = f"{'an integer' if self.kind == 'int' else 'a number'} {' and '.join(filter(None, (lo, hi)))}"
        return text + (", or null" if self.optional else "")

    def check(self, value: Any) -> tuple[Any, str | None]:
        """(normalised value, None) or (value, why it is not allowed)."""
        bad = (value, f"{self.name}={_show(value)} is not allowed; allowed: {self.text()}")
        if value is None:
            return (None, None) if self.optional else bad
        if self.kind == "bool":
            return (value, None) if isinstance(value, bool) else bad
        if self.kind == "str":
            ok = isinstance(value, str) and (self.allowed is None or value in self.allowed)
            return (value, None) if ok else bad
        if self.kind == "int" and not (isinstance(value, int) and not isinstance(value, bool)):
            return bad
        if not is_number(value):
            return bad
        value = float(value) if self.kind == "float" else value
        if self.allowed is not None and value not in self.allowed:
            return bad
        if self.lower is not None and (value <= self.lower if self.lower_open else value < self.lower):
            return bad
        if self.upper is not None and value > self.upper:
            return bad
        return value, None


def _field_type(name: str) -> FieldType:
    info = ArchSpec.model_fields[name]
    union = typing.get_origin(info.annotation) in (typing.Union, types.UnionType)
    args = typing.get_args(info.annotation) if union else (info.annotation,)
    optional = type(None) in args
    (ann,) = [a for a in args if a is not type(None)]
    bounds: dict[str, Any] = {}
    for meta in info.metadata:
        for attr in ("ge", "gt", "le"):
            if getattr(meta, attr, None) is not None:
                bounds[attr] = getattr(meta, attr)
    lower = bounds.get("ge", bounds.get("gt"))
    if typing.get_origin(ann) is Literal:
        allowed = typing.get_args(ann)
        kind = "int" if all(isinstance(a, int) for a in allowed) else "str"
    elif name == "block":
        allowed, kind = tuple(sorted(REGISTRY)), "str"
    else:
        allowed, kind = None, {int: "int", float: "float", bool: "bool", str: "str"}[ann]
    return FieldType(name, kind, allowed, optional, lower, "gt" in bounds, bounds.get("le"))


FIELD_TYPES: dict[str, FieldType] = {name: _field_type(name) for name in ArchSpec.model_fields}


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, str) and (not value or " " in value) else str(value)


# --- parameters -------------------------------------------------------------------------------------------


class Param(BaseModel):
    """One ArchSpec field's domain in a space: a fixed value, choices, or an int/float range; maybe conditional."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str  # the Optuna parameter name
    field: str
    kind: Literal["fixed", "choices", "int", "float"]
    choices: tuple[Any, ...] = ()  # the value for `fixed`
    low: int | float | None = None
    high: int | float | None = None
    step: int | float | None = None
    log: bool = False
    when: tuple[tuple[str, tuple[Any, ...]], ...] = ()

    def active(self, values: Mapping[str, Any]) -> bool:
        return all(values.get(name) in allowed for name, allowed in self.when)

    def suggest(self, trial: Any) -> Any:
        if self.kind == "fixed":
            return self.choices[0]
        if self.kind == "choices":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.kind == "int":
            return int(trial.suggest_int(self.name, int(self.low), int(self.high), step=int(self.step or 1),
                                         log=self.log))
        value = float(trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log))
        return round(value, 12) if self.step else value  # 1.1, not 1.1000000000000001

    def values(self) -> tuple[Any, ...] | None:
        """Every value, or None for a continuous range."""
        if self.kind in ("fixed", "choices"):
            return self.choices
        if self.kind == "int":
            return tuple(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        if self.step is None:
            return None
        n = round((self.high - self.low) / self.step)
        return tuple(round(self.low + i * self.step, 12) for i in range(n + 1))

    def contains(self, value: Any) -> bool:
        if self.kind != "float":
            return value in self.values()
        if not is_number(value) or not self.low <= value <= self.high:
            return False
        return not self.step or abs((value - self.low) / self.step - round((value - self.low) / self.step)) < 1e-9

    def text(self) -> str:
        if self.kind == "fixed":
            domain = _show(self.choices[0])
        elif self.kind == "choices":
            domain = "[" + ", ".join(map(_show, self.choices)) + "]"
        else:
            extra = f" step {_show(self.step)}" if self.step else (" log" if self.log else "")
            domain = f"{self.kind} {_show(self.low)}..{_show(self.high)}{extra}"
        cond = " and ".join(f"{n} in [{', '.join(map(_show, v))}]" for n, v in self.when)
        return f"{self.name}: {domain}" + (f"   (when {cond})" if cond else "")


@dataclass(frozen=True)
class GridPoint:
    """One ablation variant: which factor (or 'base', or 'factorial') and level produced `spec`."""

    factor: str
    level: Any
    spec: ArchSpec

    def __iter__(self) -> Iterator[Any]:  # unpacks as (factor, level, spec)
        return iter((self.factor, self.level, self.spec))

    @property
    def label(self) -> str:
        if self.factor == "base":
            return "base"
        if self.factor == "factorial":
            return ", ".join(f"{k}={_show(v)}" for k, v in self.level)
        return f"{self.factor}={_show(self.level)}"


# --- the space --------------------------------------------------------------------------------------------


class SearchSpace(BaseModel):
    """A loaded, checked search space (see the module docstring for the file format)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: Path | None = None
    description: str = ""
    block: Param
    #: per block, its parameters in sampling order (conditions after the fields they name)
    plans: tuple[tuple[str, tuple[Param, ...]], ...]
    constraints: Constraints = Constraints()

    @property
    def blocks(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.plans)

    def params_for(self, block: str) -> tuple[Param, ...]:
        for name, params in self.plans:
            if name == block:
                return params
        raise SrSearchError(f"block {block!r} is not in this space; its blocks: {', '.join(self.blocks)}")

    def fixed_value(self, field: str) -> Any:
        """The value every candidate has for a common `field` (None when the space lets it vary)."""
        values = set()
        for block, params in self.plans:
            entries = [p for p in params if p.field == field]
            if not entries:
                values.add(_current(block, {})[field])
            elif len(entries) == 1 and entries[0].kind == "fixed" and not entries[0].when:
                values.add(entries[0].choices[0])
            else:
                return None
        return values.pop() if len(values) == 1 else None

    def with_fixed(self, fixed: Mapping[str, Any]) -> SearchSpace:
        """A copy with common fields pinned (a study's `fixed: {scale: 2}`); raises if that breaks the space."""
        problems, pins = [], []
        for name, value in fixed.items():
            if name not in COMMON_FIELDS or name == "block":
                problems.append(f"{name!r} cannot be fixed by a study; allowed: "
                                f"{', '.join(f for f in COMMON_FIELDS if f != 'block')}")
                continue
            value, why = FIELD_TYPES[name].check(value)
            if why:
                problems.append(why)
            pins.append(Param(name=name, field=name, kind="fixed", choices=(value,)))
        if problems:
            raise SrSearchError("; ".join(problems))
        names = {p.field for p in pins}
        plans = tuple((b, tuple(pins) + tuple(p for p in params if p.field not in names)) for b, params in self.plans)
        space = self.model_copy(update={"plans": plans})
        problems = _probe(space)
        if problems:
            raise SrSearchError(f"with {dict(fixed)}: " + "; ".join(problems))
        return space

    # sampling

    def sample(self, trial: Any) -> ArchSpec:
        """Define-by-run: suggest the block, then only the parameters that exist for it and whose conditions hold."""
        block = self.block.suggest(trial)
        values: dict[str, Any] = {}
        for param in self.params_for(block):
            if param.active(_current(block, values)):
                values[param.field] = param.suggest(trial)
        return self._spec(block, values)

    def _spec(self, block: str, values: dict[str, Any]) -> ArchSpec:
        try:
            return ArchSpec(block=block, **values)
        except SrSearchError as exc:
            where = f" ({self.path})" if self.path else ""
            raise SrSearchError(f"search space{where} produced an invalid candidate "
                                f"{ {'block': block, **values} }: {exc}") from None

    def assignments(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """Every (block, field values) combination of a discrete space, in a stable order."""
        for block in self.block.choices:
            yield from ((block, values) for values in _enumerate(self.params_for(block), 0, block, {}))

    def size(self) -> int | float:
        """Number of distinct parameter combinations (conditions honoured), or `math.inf` for continuous ranges."""
        total = sum(_count(self.params_for(b), 0, b, {}) for b in self.block.choices)
        return total if math.isinf(total) else int(total)

    # membership

    def contains(self, spec: ArchSpec, *, strict: bool = False) -> list[str]:
        """Why `spec` is outside the space (empty list: inside). Non-strict checks only the fields the space
        names; strict also requires every other field to hold the value sampling would give it."""
        if spec.block not in self.blocks:
            return [f"block={spec.block} is not in the space's blocks: {', '.join(self.blocks)}"]
        values = spec.model_dump()
        problems, active = [], {}
        for param in self.params_for(spec.block):
            if not param.active(values):
                continue
            active[param.field] = values[param.field]
            if not param.contains(values[param.field]):
                problems.append(f"{param.field}={_show(values[param.field])} is outside the space "
                                f"({param.text()})")
        if strict and not problems:
            expected = ArchSpec(block=spec.block, **active)
            problems += [f"{k}={_show(v)} differs from {_show(expected.model_dump()[k])}, the value this space "
                         f"gives it" for k, v in values.items() if expected.model_dump()[k] != v]
        return problems

    def params_of(self, spec: ArchSpec) -> dict[str, Any]:
        """The Optuna parameters that make `sample` return `spec` (to enqueue baselines); raises if outside."""
        problems = self.contains(spec, strict=True)
        if problems:
            raise SrSearchError(f"spec is outside the search space {self.path or ''}: {'; '.join(problems)}")
        values = spec.model_dump()
        out = {"block": spec.block} if self.block.kind == "choices" else {}
        for param in self.params_for(spec.block):
            if param.kind != "fixed" and param.active(values):
                out[param.name] = values[param.field]
        return out

    # ablation grids

    def grid(self, base: ArchSpec, factors: Mapping[str, Sequence[Any]], *,
             mode: Literal["one_at_a_time", "factorial"] = "one_at_a_time") -> list[GridPoint]:
        """Enumerate an ablation: `base` first, then each factor's levels in order (one at a time) or every
        combination (factorial, first factor slowest). A level is a value or a mapping of fields that includes the
        factor (for levels that must change another field too). Variants equal to one already listed (such as a
        level equal to the base's value) are not repeated. Raises `SrSearchError` listing every problem."""
        points, problems = self.grid_problems(base, factors, mode)
        if problems:
            raise SrSearchError("ablation grid problems:\n" + "\n".join(f"  {key_text(k)}: {m}" for k, m in problems))
        return points

    def grid_problems(self, base: ArchSpec, factors: Mapping[str, Sequence[Any]],
                      mode: str) -> tuple[list[GridPoint], list[tuple[KeyPath, str]]]:
        """`grid` without raising: the points and the (key path under `factors`, message) problems."""
        problems: list[tuple[KeyPath, str]] = []
        if mode not in ("one_at_a_time", "factorial"):
            return [], [(("design",), f"unknown design {mode!r}; allowed: one_at_a_time, factorial")]
        outside = self.contains(base)
        problems += [(("base",), f"base spec is outside the space: {m}") for m in outside]
        levels: dict[str, list[tuple[int, Any, dict[str, Any]]]] = {}
        for factor, raw_levels in factors.items():
            levels[factor] = _parse_levels(factor, raw_levels, problems)
        if problems and mode == "factorial":
            return [], problems
        points = [GridPoint("base", None, base)]
        seen = {base.arch_key()}
        if mode == "one_at_a_time":
            cells = [((factor,), (i,), level, over) for factor, lv in levels.items() for i, level, over in lv]
        else:
            names = tuple(levels)
            cells = []
            for combo in itertools.product(*(levels[n] for n in names)):
                over: dict[str, Any] = {}
                for name, (i, _, o) in zip(names, combo):
                    for k, v in o.items():
                        if k in over and over[k] != v:
                            problems.append(((name, i), f"sets {k}={_show(v)} while another factor's level sets "
                                                        f"{k}={_show(over[k])} in the same cell"))
                        over[k] = v
                cells.append((names, tuple(i for i, _, _ in combo),
                              tuple((n, level) for n, (_, level, _) in zip(names, combo)), over))
        for names, index, level, over in cells:
            key = (names[0], index[0]) if len(names) == 1 else ()
            try:
                spec = base.replace(**over)
            except SrSearchError as exc:
                problems.append((key, f"level {_show(level)} gives an invalid spec: {exc} (a level may change "
                                      f"other fields too: {{{names[0]}: ..., OTHER_FIELD: ...}})"))
                continue
            problems += [(key, f"level {_show(level)} is outside the space: {m}") for m in self.contains(spec)
                         if m not in outside]
            if spec.arch_key() not in seen:
                seen.add(spec.arch_key())
                points.append(GridPoint("factorial" if mode == "factorial" else names[0], level, spec))
        return points, problems


def _parse_levels(factor: str, raw: Any, problems: list[tuple[KeyPath, str]]) -> list[tuple[int, Any, dict[str, Any]]]:
    """(index in the file, level, field overrides) for every valid level; problems for the others."""
    if factor not in FIELD_TYPES:
        problems.append(((factor,), f"unknown factor {factor!r}{did_you_mean(factor, FIELD_TYPES)}: factors are "
                                    f"ArchSpec fields ({', '.join(FIELD_TYPES)})"))
        return []
    if not isinstance(raw, (list, tuple)) or not raw:
        problems.append(((factor,), f"levels must be a non-empty list, got {_show(raw)}"))
        return []
    out, seen = [], []
    for i, level in enumerate(raw):
        over = dict(level) if isinstance(level, Mapping) else {factor: level}
        if factor not in over:
            problems.append(((factor, i), f"a mapping level must set the factor itself ({factor}: ...)"))
            continue
        before = len(problems)
        for name, value in over.items():
            if name not in FIELD_TYPES:
                problems.append(((factor, i), f"unknown field {name!r}{did_you_mean(name, FIELD_TYPES)}; "
                                              f"ArchSpec fields: {', '.join(FIELD_TYPES)}"))
                continue
            over[name], why = FIELD_TYPES[name].check(value)
            if why:
                problems.append(((factor, i), why))
        if over[factor] in seen:
            problems.append(((factor, i), f"level {_show(over[factor])} listed twice"))
        seen.append(over[factor])
        if len(problems) == before:
            out.append((i, over[factor], over))
    return out


# --- defaults, enumeration, counting ------------------------------------------------------------------------

_SPEC_DEFAULTS = {name: info.default for name, info in ArchSpec.model_fields.items()}


def _current(block: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """Field values as sampled so far, defaults (ArchSpec's, then the family's) for the rest."""
    data = {**_SPEC_DEFAULTS, "block": block, **values}
    family = family_of(block)
    for name, default in family.defaults(data).items():
        if values.get(name) is None:
            data[name] = default
    return data


def _enumerate(params: tuple[Param, ...], i: int, block: str, values: dict[str, Any]) -> Iterator[dict[str, Any]]:
    if i == len(params):
        yield dict(values)
        return
    param = params[i]
    if not param.active(_current(block, values)):
        yield from _enumerate(params, i + 1, block, values)
        return
    for value in param.values() or ():
        yield from _enumerate(params, i + 1, block, {**values, param.field: value})


def _count(params: tuple[Param, ...], i: int, block: str, values: dict[str, Any]) -> float:
    if i == len(params):
        return 1.0
    param = params[i]
    if not param.active(_current(block, values)):
        return _count(params, i + 1, block, values)
    domain = param.values()
    if domain is None:
        return math.inf
    if any(param.field == name for later in params[i + 1:] for name, _ in later.when):
        return sum(_count(params, i + 1, block, {**values, param.field: v}) for v in domain)
    return len(domain) * _count(params, i + 1, block, values)


class RandomTrial:
    """A dependency-free stand-in for an Optuna trial: uniform draws from Python's `random` with a fixed seed.
    Repeated names return the first value, as Optuna does."""

    def __init__(self, seed: int = 0) -> None:
        self._rng = random.Random(seed)
        self.params: dict[str, Any] = {}

    def _draw(self, name: str, draw: Any) -> Any:
        if name not in self.params:
            self.params[name] = draw()
        return self.params[name]

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        return self._draw(name, lambda: self._rng.choice(list(choices)))

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int:
        if log:
            return self._draw(name, lambda: min(high, int(math.exp(self._rng.uniform(math.log(low),
                                                                                  math.log(high + 1))))))
        return self._draw(name, lambda: self._rng.randrange(low, high + 1, step))

    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None,
                      log: bool = False) -> float:
        if step:
            return self._draw(name, lambda: low + step * self._rng.randint(0, round((high - low) / step)))
        if log:
            return self._draw(name, lambda: math.exp(self._rng.uniform(math.log(low), math.log(high))))
        return self._draw(name, lambda: self._rng.uniform(low, high))


# --- loading ----------------------------------------------------------------------------------------------


def load_space(path: str | Path) -> SearchSpace:
    """Load and check a search-space file; raises `SrSearchError` listing every problem with file:line."""
    doc = read_yaml(path, "search space")
    space = parse_space(doc) if not doc.problems else None
    raise_problems(doc.problems)
    assert space is not None
    return space


def parse_space(doc: Doc) -> SearchSpace | None:
    """Build a space from a parsed file, recording problems in `doc` (None when there are any)."""
    data = doc.data
    for key in data:
        if key not in SPACE_KEYS:
            doc.problem((key,), f"unknown key {key!r}{did_you_mean(key, SPACE_KEYS)}; allowed: {', '.join(SPACE_KEYS)}")
    if "params" not in data and "blocks" not in data:
        doc.problem((), "a search space needs `params` (and/or per-block `blocks` sections); see the format at "
                        "the top of sr_search/space.py")
    raw_params = _mapping(doc, ("params",), data.get("params"))
    raw_blocks = _mapping(doc, ("blocks",), data.get("blocks"))
    common = {f: p for f, v in raw_params.items() if (p := _parse_param(doc, ("params", f), f, v, f))}

    block = common.pop("block", None)
    if block is None:
        names = tuple(raw_blocks) or (_SPEC_DEFAULTS["block"],)
        block = Param(name="block", field="block", kind="choices" if len(names) > 1 else "fixed", choices=names)
    elif block.kind in ("int", "float") or block.when:
        doc.problem(("params", "block"), "block must be a fixed name or a list of names, never a range or "
                                         "conditional")
        block = None
    blocks = [b for b in (block.choices if block else ()) if b in REGISTRY]
    for name in raw_blocks:
        if name not in REGISTRY:
            doc.problem(("blocks", name), f"unknown block {name!r}{did_you_mean(name, REGISTRY)}; allowed: "
                                          f"{', '.join(sorted(REGISTRY))}")
        elif block and name not in block.choices:
            doc.problem(("blocks", name), f"section for block {name!r}, which params.block never picks "
                                          f"({', '.join(block.choices)})")

    plans, non_users = [], {}
    for name in blocks:
        family = family_of(name)
        raw = _mapping(doc, ("blocks", name), raw_blocks.get(name))
        section = {}
        for f, v in raw.items():
            path = ("blocks", name, f)
            if f == "block":
                doc.problem(path, "a block section cannot set `block`")
            elif f in BLOCK_FIELDS and f in FIELD_TYPES and f not in family.fields:
                doc.problem(path, f"block {name!r} has no field {f!r}; its fields: "
                                  f"{', '.join(family.fields) or '(none)'}")
            elif p := _parse_param(doc, path, f, v, f"{name}.{f}"):
                section[f] = p
        merged = [p for f, p in common.items() if f not in section] + list(section.values())
        for p in merged:
            if p.name == p.field and p.field in BLOCK_FIELDS and p.field not in family.fields:
                if not any(n == "block" and name not in allowed for n, allowed in p.when):
                    non_users.setdefault(p.field, []).append(name)
        plans.append((name, _order(doc, name, merged)))
    for field, names in non_users.items():
        users = sorted(b for b, fam in REGISTRY.items() if field in fam.fields)
        doc.problem(("params", field), f"field {field!r} is used only by blocks {', '.join(users)}, but this space "
                                       f"also picks {', '.join(names)}; move it under blocks.<name>")
    constraints = _parse_constraints(doc, data.get("constraints"))
    description = data.get("description", "")
    if not isinstance(description, str):
        doc.problem(("description",), "description must be text")
    if doc.problems or block is None:
        return None
    space = SearchSpace(path=doc.path, description=description or "", block=block, plans=tuple(plans),
                        constraints=constraints or Constraints())
    for message in _probe(space):
        doc.problem(("params",), message)
    return None if doc.problems else space


def _mapping(doc: Doc, path: KeyPath, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        doc.problem(path, f"must be a mapping of field: domain, got {_show(value)}")
        return {}
    return value


def _parse_param(doc: Doc, path: KeyPath, field: str, raw: Any, name: str) -> Param | None:
    if field not in FIELD_TYPES:
        doc.problem(path, f"unknown ArchSpec field {field!r}{did_you_mean(field, FIELD_TYPES)}; allowed: "
                          f"{', '.join(FIELD_TYPES)}")
        return None
    ftype = FIELD_TYPES[field]
    n_before = len(doc.problems)
    spec = raw if isinstance(raw, dict) else ({"choices": raw} if isinstance(raw, list) else {"value": raw})
    for key in spec:
        if key not in PARAM_KEYS:
            doc.problem(path + (key,), f"unknown key {key!r}{did_you_mean(key, PARAM_KEYS)}; allowed: "
                                       f"{', '.join(PARAM_KEYS)}")
    forms = [f for f in ("value", "choices", "low") if f in spec] or (["low"] if "high" in spec else [])
    if len(forms) != 1:
        doc.problem(path, "give exactly one of: a value, a list of choices, or a range {low, high}")
        return None
    when = _parse_when(doc, path + ("when",), field, spec.get("when"))
    kwargs: dict[str, Any] = {"name": name, "field": field, "when": when}
    if forms == ["value"]:
        value, why = ftype.check(spec["value"])
        if why:
            doc.problem(path, why)
        kwargs.update(kind="fixed", choices=(value,))
    elif forms == ["choices"]:
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            doc.problem(path, "choices must be a non-empty list")
            return None
        checked = []
        for i, c in enumerate(choices):
            value, why = ftype.check(c)
            if why:
                doc.problem(path + (i,), why)
            elif value in checked:
                doc.problem(path + (i,), f"choice {_show(value)} listed twice")
            checked.append(value)
        kwargs.update(kind="choices" if len(checked) > 1 else "fixed", choices=tuple(checked))
    else:
        kwargs.update(_parse_range(doc, path, ftype, spec))
    if len(doc.problems) > n_before:
        return None
    return Param(**kwargs)


def _parse_range(doc: Doc, path: KeyPath, ftype: FieldType, spec: dict[str, Any]) -> dict[str, Any]:
    if ftype.kind not in ("int", "float"):
        doc.problem(path, f"{ftype.name} takes {ftype.text()}: give a value or a list of choices, not a range")
        return {}
    n_before = len(doc.problems)
    low, high, step, log = spec.get("low"), spec.get("high"), spec.get("step"), spec.get("log", False)
    if low is None or high is None:
        doc.problem(path, "a range needs both low and high")
        return {}
    for key, value in (("low", low), ("high", high)):
        if ftype.kind == "int" and not (isinstance(value, int) and not isinstance(value, bool)):
            doc.problem(path + (key,), f"{ftype.name} is an integer field; {key}={_show(value)} is not an integer")
        elif not is_number(value):
            doc.problem(path + (key,), f"{key} must be a number, got {_show(value)}")
    if step is not None and (not is_number(step) or step <= 0 or (ftype.kind == "int" and step != int(step))):
        doc.problem(path + ("step",), f"step must be a positive {'integer' if ftype.kind == 'int' else 'number'}, "
                                      f"got {_show(step)}")
        step = None
    if not isinstance(log, bool):
        doc.problem(path + ("log",), f"log must be true or false, got {_show(log)}")
        log = False
    if len(doc.problems) > n_before:
        return {}
    if low >= high:
        doc.problem(path, f"low ({_show(low)}) must be below high ({_show(high)}); for one value write it alone")
    if log and step is not None:
        doc.problem(path, "log and step cannot be combined (Optuna rejects it)")
    if log and low <= 0:
        doc.problem(path + ("low",), "a log range needs low > 0")
    if step is not None and low < high and abs((high - low) / step - round((high - low) / step)) > 1e-9:
        doc.problem(path + ("step",), f"high - low ({_show(high - low)}) is not a multiple of step {_show(step)}")
    kind = ftype.kind
    out = {"kind": kind, "low": low, "high": high, "step": step, "log": log}
    for value in (Param(name="-", field=ftype.name, **out).values() or (low, high)) if low < high else ():
        _, why = ftype.check(value)
        if why:
            doc.problem(path, f"the range includes {_show(value)}: {why}")
            break
    return out


def _parse_when(doc: Doc, path: KeyPath, field: str, raw: Any) -> tuple[tuple[str, tuple[Any, ...]], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, dict) or not raw:
        doc.problem(path, f"when must be a mapping of FIELD: value or [values], got {_show(raw)}")
        return ()
    out = []
    for name, wanted in raw.items():
        if name not in FIELD_TYPES:
            doc.problem(path + (name,), f"condition on {name!r}, which is not an ArchSpec field"
                                        f"{did_you_mean(name, FIELD_TYPES)}; fields: {', '.join(FIELD_TYPES)}")
            continue
        if name == field:
            doc.problem(path + (name,), "a field cannot be conditional on itself")
            continue
        values = []
        for value in wanted if isinstance(wanted, list) else [wanted]:
            value, why = FIELD_TYPES[name].check(value)
            if why:
                doc.problem(path + (name,), f"condition value: {why}")
            values.append(value)
        out.append((name, tuple(values)))
    return tuple(out)


def _order(doc: Doc, block: str, params: list[Param]) -> tuple[Param, ...]:
    """File order, except that a conditional field comes after the fields its condition names."""
    by_field = {p.field: p for p in params}
    done: list[Param] = []
    pending = list(params)
    while pending:
        ready = [p for p in pending
                 if all(n not in by_field or by_field[n] in done for n, _ in p.when)]
        if not ready:
            cycle = ", ".join(p.field for p in pending)
            doc.problem(("blocks", block) if any("." in p.name for p in pending) else ("params",),
                        f"conditions form a cycle among {cycle} (for block {block}); each must name only "
                        f"fields that do not depend on it")
            return tuple(done + pending)
        done.append(ready[0])
        pending.remove(ready[0])
    return tuple(done)


def _parse_constraints(doc: Doc, raw: Any) -> Constraints | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        doc.problem(("constraints",), f"must be a mapping, got {_show(raw)}; keys: {', '.join(Constraints.model_fields)}")
        return None
    try:
        return Constraints(**raw)
    except ValidationError as exc:
        for err in exc.errors():
            loc = ("constraints", *err["loc"])
            if err["type"] == "extra_forbidden":
                doc.problem(loc, f"unknown constraint; allowed: {', '.join(Constraints.model_fields)}")
            else:
                doc.problem(loc, f"{err['msg']}; got {_show(err.get('input'))}")
        return None


def _probe(space: SearchSpace) -> list[str]:
    """Combinations ArchSpec rejects, found now rather than in trial 137 (at most three kinds, one example each)."""
    if space.size() <= PROBE_ENUMERATE:
        candidates = space.assignments()
    else:
        def draw() -> Iterator[tuple[str, dict[str, Any]]]:
            for seed in range(PROBE_SAMPLES):
                trial = RandomTrial(seed)
                block = space.block.suggest(trial)
                values: dict[str, Any] = {}
                for p in space.params_for(block):
                    if p.active(_current(block, values)):
                        values[p.field] = p.suggest(trial)
                yield block, values
        candidates = draw()
    messages: dict[str, dict[str, Any]] = {}
    for block, values in candidates:
        try:
            ArchSpec(block=block, **values)
        except SrSearchError as exc:
            messages.setdefault(str(exc).splitlines()[0], {"block": block, **values})
            if len(messages) >= 3:
                break
    return [f"the space can produce candidates ArchSpec rejects, e.g. {example}: {message}. Narrow the choices "
            f"or add a `when:` condition" for message, example in messages.items()]


def describe_space(space: SearchSpace, n_samples: int = 3, seed: int = 0) -> str:
    """Human summary: size, parameters per block, constraints and a few sampled specs (for `validate --show`)."""
    size = space.size()
    lines = [f"search space {space.path or ''}".rstrip(),
             f"  size: {'continuous (infinite)' if math.isinf(size) else f'{int(size):,} combinations'}"]
    if space.description:
        lines.append(f"  {space.description.strip()}")
    lines.append(f"  {space.block.text()}")
    shared = [p for p in space.plans[0][1] if all(p in params for _, params in space.plans)]
    lines += [f"  {p.text()}" for p in shared]
    for block, params in space.plans:
        own = [f"    {p.text()}" for p in params if p not in shared]
        if own and len(space.plans) > 1:
            lines += [f"  [{block}]", *own]
    limits = {k: v for k, v in space.constraints.model_dump().items() if v is not None}
    lines.append("  constraints: " + (", ".join(f"{k}={_show(v)}" for k, v in limits.items()) or "none"))
    for i in range(n_samples):
        spec = space.sample(RandomTrial(seed + i))
        fields = [p.field for p in space.params_for(spec.block)] + list(family_of(spec.block).fields)
        shown = {"block": spec.block, **{f: getattr(spec, f) for f in dict.fromkeys(fields)}}
        lines.append(f"  sample {i}: " + ", ".join(f"{k}={_show(v)}" for k, v in shown.items()))
    return "\n".join(lines)
