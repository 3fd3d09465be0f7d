"""`SearchSpace`: what may vary, in which ranges, under which conditions; sampled define-by-run, or enumerated
as an ablation grid.

File format (YAML; every key but `params` optional)::

    description: free text
    block_modules: [my_blocks.py]    # families of your own: .py files (relative to this file) or module names
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

Where the parts live: this module holds the model (sampling, counting, membership, grids); `space_file` reads the
file format above (`load_space`); `domain` what each field accepts (`Param`, `Constraints`); `grid` how ablation
grids are enumerated.
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any, Iterator, Literal, Mapping, Sequence

from pydantic import BaseModel, ConfigDict

from ..errors import SrSearchError
from ..model.blocks import family_of
from ..model.spec import COMMON_FIELDS, ArchSpec
from .domain import FIELD_TYPES, Constraints, Param, current, show
from .grid import GridPoint, grid_problems
from .yamlfile import KeyPath, key_text

__all__ = ["SearchSpace", "RandomTrial", "describe_space", "PROBE_ENUMERATE", "PROBE_SAMPLES"]

#: spaces up to this many combinations are enumerated completely when loaded; larger ones are sampled
PROBE_ENUMERATE = 5000
PROBE_SAMPLES = 400


class SearchSpace(BaseModel):
    """A loaded, checked search space (see the module docstring for the file format)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: Path | None = None
    description: str = ""
    block: Param
    #: per block, its parameters in sampling order (conditions after the fields they name)
    plans: tuple[tuple[str, tuple[Param, ...]], ...]
    constraints: Constraints = Constraints()
    #: modules of block families the space uses beyond the built-ins (resolved: module names or absolute paths)
    block_modules: tuple[str, ...] = ()

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
                values.add(current(block, {})[field])
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
        problems = space.probe()
        if problems:
            raise SrSearchError(f"with {dict(fixed)}: " + "; ".join(problems))
        return space

    def probe(self) -> list[str]:
        """Combinations ArchSpec rejects, found now rather than in trial 137 (at most three kinds, one example each)."""
        candidates = self.assignments() if self.size() <= PROBE_ENUMERATE else self._draws(PROBE_SAMPLES)
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

    # sampling

    def sample(self, trial: Any) -> ArchSpec:
        """Define-by-run: suggest the block, then only the parameters that exist for it and whose conditions hold."""
        block, values = self._suggest(trial)
        try:
            return ArchSpec(block=block, **values)
        except SrSearchError as exc:
            where = f" ({self.path})" if self.path else ""
            raise SrSearchError(f"search space{where} produced an invalid candidate "
                                f"{ {'block': block, **values} }: {exc}") from None

    def _suggest(self, trial: Any) -> tuple[str, dict[str, Any]]:
        block = self.block.suggest(trial)
        values: dict[str, Any] = {}
        for param in self.params_for(block):
            if param.active(current(block, values)):
                values[param.field] = param.suggest(trial)
        return block, values

    def _draws(self, n: int) -> Iterator[tuple[str, dict[str, Any]]]:
        """(block, field values) of `n` seeded random samples, unchecked."""
        for seed in range(n):
            yield self._suggest(RandomTrial(seed))

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
                problems.append(f"{param.field}={show(values[param.field])} is outside the space "
                                f"({param.text()})")
        if strict and not problems:
            expected = ArchSpec(block=spec.block, **active)
            problems += [f"{k}={show(v)} differs from {show(expected.model_dump()[k])}, the value this space "
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
        return grid_problems(self.contains, base, factors, mode)


# --- enumeration and counting -------------------------------------------------------------------------------


def _enumerate(params: tuple[Param, ...], i: int, block: str, values: dict[str, Any]) -> Iterator[dict[str, Any]]:
    if i == len(params):
        yield dict(values)
        return
    param = params[i]
    if not param.active(current(block, values)):
        yield from _enumerate(params, i + 1, block, values)
        return
    for value in param.values() or ():
        yield from _enumerate(params, i + 1, block, {**values, param.field: value})


def _count(params: tuple[Param, ...], i: int, block: str, values: dict[str, Any]) -> float:
    if i == len(params):
        return 1.0
    param = params[i]
    if not param.active(current(block, values)):
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


# --- loading and describing ---------------------------------------------------------------------------------


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
    lines.append("  constraints: " + (", ".join(f"{k}={show(v)}" for k, v in limits.items()) or "none"))
    for i in range(n_samples):
        spec = space.sample(RandomTrial(seed + i))
        fields = [p.field for p in space.params_for(spec.block)] + list(family_of(spec.block).field_names)
        shown = {"block": spec.block, **{f: getattr(spec, f) for f in dict.fromkeys(fields)}}
        lines.append(f"  sample {i}: " + ", ".join(f"{k}={show(v)}" for k, v in shown.items()))
    return "\n".join(lines)
