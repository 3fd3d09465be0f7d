"""Reading search-space files (format: the docstring of sr_search/study/space.py) into a `SearchSpace`.

Every problem in the file is recorded in its `Doc` with its line, so one run reports them all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..errors import SrSearchError
from ..model.blocks import REGISTRY, family_of, load_block_module, users_of
from ..model.spec import block_field_names
from ..records import field_problems
from .domain import FIELD_TYPES, SPEC_DEFAULTS, Constraints, FieldType, Param, family_field_type, show
from .space import SearchSpace
from .yamlfile import Doc, KeyPath, did_you_mean, is_number, raise_problems, read_yaml

#: most values one range may hold (channels 1..1024 is about 1,000)
MAX_RANGE_VALUES = 100_000
SPACE_KEYS = ("description", "block_modules", "params", "blocks", "constraints")
PARAM_KEYS = ("value", "choices", "low", "high", "step", "log", "when")


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
    modules = _load_block_modules(doc, data.get("block_modules"))
    block_fields = block_field_names()
    for key in data:
        if key not in SPACE_KEYS:
            doc.problem((key,), f"unknown key {key!r}{did_you_mean(key, SPACE_KEYS)}; allowed: {', '.join(SPACE_KEYS)}")
    if "params" not in data and "blocks" not in data:
        doc.problem((), "a search space needs `params` (and/or per-block `blocks` sections); see the format at "
                        "the top of sr_search/study/space.py")
    raw_params = _mapping(doc, ("params",), data.get("params"))
    raw_blocks = _mapping(doc, ("blocks",), data.get("blocks"))
    common = {f: p for f, v in raw_params.items() if (p := _parse_param(doc, ("params", f), f, v, f))}

    block = common.pop("block", None)
    if block is None:
        names = tuple(raw_blocks) or (SPEC_DEFAULTS["block"],)
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
            elif f in block_fields and f not in family.field_names:
                doc.problem(path, f"block {name!r} has no field {f!r}; its fields: "
                                  f"{', '.join(family.field_names) or '(none)'}")
            elif p := _parse_param(doc, path, f, v, f"{name}.{f}", block=name):
                section[f] = p
        merged = [p for f, p in common.items() if f not in section] + list(section.values())
        for p in merged:
            if p.name == p.field and p.field in block_fields and p.field not in family.field_names:
                if not any(n == "block" and name not in allowed for n, allowed in p.when):
                    non_users.setdefault(p.field, []).append(name)
        plans.append((name, _order(doc, name, merged)))
    for field, names in non_users.items():
        users = users_of(field)
        doc.problem(("params", field), f"field {field!r} is used only by blocks {', '.join(users)}, but this space "
                                       f"also picks {', '.join(names)}; move it under blocks.<name>")
    constraints = _parse_constraints(doc, data.get("constraints"))
    description = data.get("description", "")
    if not isinstance(description, str):
        doc.problem(("description",), "description must be text")
    if doc.problems or block is None:
        return None
    space = SearchSpace(path=doc.path, description=description or "", block=block, plans=tuple(plans),
                        constraints=constraints or Constraints(), block_modules=modules)
    for message in space.probe():
        doc.problem(("params",), message)
    return None if doc.problems else space


def _load_block_modules(doc: Doc, raw: Any) -> tuple[str, ...]:
    """Import the families the space's `block_modules` name (a module, or a .py file relative to the space file);
    the refs come back resolved, so any process (a Ray worker) can import them the same way."""
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(r, str) and r for r in raw):
        doc.problem(("block_modules",), f"must be a list of module names or .py files, got {show(raw)}")
        return ()
    refs = []
    for i, ref in enumerate(raw):
        if ref.endswith(".py"):
            ref = str((doc.path.parent / Path(ref).expanduser()).resolve())
        try:
            load_block_module(ref)
        except SrSearchError as exc:
            doc.problem(("block_modules", i), str(exc))
            continue
        refs.append(ref)
    return tuple(refs)


def _mapping(doc: Doc, path: KeyPath, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        doc.problem(path, f"must be a mapping of field: domain, got {show(value)}")
        return {}
    return value


def _parse_param(doc: Doc, path: KeyPath, field: str, raw: Any, name: str, block: str | None = None) -> Param | None:
    if field not in FIELD_TYPES:
        doc.problem(path, f"unknown ArchSpec field {field!r}{did_you_mean(field, FIELD_TYPES)}; allowed: "
                          f"{', '.join(FIELD_TYPES)}")
        return None
    ftype = family_field_type(block, field) if block is not None else FIELD_TYPES[field]
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
                doc.problem(path + (i,), f"choice {show(value)} listed twice")
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
            doc.problem(path + (key,), f"{ftype.name} is an integer field; {key}={show(value)} is not an integer")
        elif not is_number(value):
            doc.problem(path + (key,), f"{key} must be a number, got {show(value)}")
    if step is not None and (not is_number(step) or step <= 0 or (ftype.kind == "int" and step != int(step))):
        doc.problem(path + ("step",), f"step must be a positive {'integer' if ftype.kind == 'int' else 'number'}, "
                                      f"got {show(step)}")
        step = None
    if not isinstance(log, bool):
        doc.problem(path + ("log",), f"log must be true or false, got {show(log)}")
        log = False
    if len(doc.problems) > n_before:
        return {}
    if low >= high:
        doc.problem(path, f"low ({show(low)}) must be below high ({show(high)}); for one value write it alone")
    if log and step is not None:
        doc.problem(path, "log and step cannot be combined (Optuna rejects it)")
    if log and low <= 0:
        doc.problem(path + ("low",), "a log range needs low > 0")
    if step is not None and low < high and abs((high - low) / step - round((high - low) / step)) > 1e-9:
        doc.problem(path + ("step",), f"high - low ({show(high - low)}) is not a multiple of step {show(step)}")
    kind = ftype.kind
    out = {"kind": kind, "low": low, "high": high, "step": step, "log": log}
    for value in (low, high):  # the ends first: a range of 1e23 integers is never enumerated
        _, why = ftype.check(value)
        if why:
            doc.problem(path, f"the range includes {show(value)}: {why}")
            return out
    count = (high - low) // (step or 1) + 1 if kind == "int" else (round((high - low) / step) + 1 if step else 0)
    if count > MAX_RANGE_VALUES:
        doc.problem(path, f"the range holds {count:,} values, more than the {MAX_RANGE_VALUES:,} a search can tell "
                          f"apart; use a larger step{'' if kind == 'int' else ' or no step (a continuous range)'}")
        return out
    for value in (Param(name="-", field=ftype.name, **out).values() or (low, high)) if low < high else ():
        _, why = ftype.check(value)
        if why:
            doc.problem(path, f"the range includes {show(value)}: {why}")
            break
    return out


def _parse_when(doc: Doc, path: KeyPath, field: str, raw: Any) -> tuple[tuple[str, tuple[Any, ...]], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, dict) or not raw:
        doc.problem(path, f"when must be a mapping of FIELD: value or [values], got {show(raw)}")
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
        doc.problem(("constraints",), f"must be a mapping, got {show(raw)}; keys: "
                                      f"{', '.join(Constraints.model_fields)}")
        return None
    try:
        return Constraints(**raw)
    except ValidationError as exc:
        for problem in field_problems(exc, Constraints):
            loc = ("constraints", *problem.loc)
            if problem.message == "unknown field":
                doc.problem(loc, f"unknown constraint; allowed: {', '.join(Constraints.model_fields)}")
            else:
                doc.problem(loc, problem.text())
        return None
