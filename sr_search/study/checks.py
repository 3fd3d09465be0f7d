"""The checks a study gets beyond its types: keys of the other mode, the files and names it refers to, its
search space (read here, so its problems are reported with the study's), baselines, the ablation grid and the LR
patch. Each records problems in the study's `Doc` and goes on, so one run reports them all."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..errors import SrSearchError
from ..model.blocks import family_of, family_source
from ..model.presets import PRESETS
from ..records import field_problems
from .model import ABLATION_KEYS, MAX_TRIALS, SEARCH_KEYS, Study
from .protocols import PROTOCOLS
from .settings import BUILTIN
from .space import SearchSpace
from .space_file import parse_space
from .yamlfile import Doc, did_you_mean, read_yaml


def report_validation(doc: Doc, exc: ValidationError) -> None:
    """The study's type errors as problems at their key paths (unknown keys get the allowed ones)."""
    for problem in field_problems(exc, Study):
        message = problem.text()
        if problem.message == "required field is missing":
            message = "required key is missing"
        if problem.message == "unknown field":
            key = problem.loc[-1]
            allowed = [str(a) for a in problem.allowed or ()]
            message = f"unknown key {key!r}{did_you_mean(key, allowed)}; allowed: {', '.join(allowed)}"
        doc.problem(problem.loc, message)


def check_modes(doc: Doc, data: dict[str, Any]) -> None:
    """Keys of the other mode are errors rather than silently ignored; an ablation needs `base` and `factors`."""
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
                what = "a preset name or a spec" if key == "base" else "FIELD: [levels]"
                doc.problem((), f"mode: ablation needs `{key}` ({what})")


def check_space(doc: Doc, data: dict[str, Any], base_dir: Path | None) -> SearchSpace | None:
    """The named space with `fixed` pinned (its file's problems join the study's); a search needs one task."""
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


def check_references(doc: Doc, data: dict[str, Any], base_dir: Path | None) -> None:
    """Names and paths the study refers to: image folders, warm-start checkpoint, presets, timing protocol."""
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


def check_baselines(doc: Doc, study: Study, space: SearchSpace | None) -> None:
    """A baseline must solve the same task as the candidates it is compared with."""

    scale = study_scale(study, space)
    for i, name in enumerate(study.baselines):
        spec = PRESETS.get(name)
        if spec is not None and scale is not None and spec.scale != scale:
            doc.problem(("baselines", i), f"{name} is a x{spec.scale} model but this study's candidates are "
                                          f"x{scale}; pick its x{scale} variant")


def check_ablation(doc: Doc, study: Study, space: SearchSpace) -> None:
    """The base, factors and design make a grid inside the space; seeds are distinct."""
    try:
        base = study.base_spec()
    except SrSearchError as exc:
        doc.problem(("base",), str(exc))
        return
    points, problems = space.grid_problems(base, study.factors, study.design)
    for path, message in problems:
        doc.problem(path if path[:1] in (("base",), ("design",)) else ("factors", *path), message)
    if len(set(study.seeds)) != len(study.seeds):
        doc.problem(("seeds",), f"a seed is listed twice: {list(study.seeds)}")
    runs = len(points) * len(study.seeds)
    if runs > MAX_TRIALS:
        doc.problem(("seeds",), f"{len(points):,} variants x {len(study.seeds)} seeds = {runs:,} runs, more than the "
                                f"{MAX_TRIALS:,} a study may run; use fewer seeds or levels")


def candidate_cases(study: Study, space: SearchSpace) -> set[tuple[str, int]] | None:
    """(block, unshuffle) of every candidate the study can run; None when its ablation grid is broken."""
    if study.mode == "ablation":
        try:
            return {(p.spec.block, p.spec.unshuffle) for p in space.grid(study.base_spec(), study.factors,
                                                                         mode=study.design)}
        except SrSearchError:
            return None
    cases = set()
    for block, params in space.plans:
        entries = [p for p in params if p.field == "unshuffle"]
        cases |= {(block, u) for u in (entries[0].values() if entries else (1,))}
    return cases


def check_patch(doc: Doc, study: Study, space: SearchSpace) -> None:
    """Every candidate's LR patch must divide by its unshuffle and keep the block's minimum tile (ESA: 15 px)."""
    cases = candidate_cases(study, space)
    if cases is None:
        return
    patch = study.train.lr_patch
    bad = sorted((b, u) for b, u in cases if patch % u or patch // u < family_of(b).min_lr_size)
    if bad:
        need = math.lcm(*(u for _, u in cases))
        need *= math.ceil(max(family_of(b).min_lr_size * u for b, u in cases) / need)
        shown = ", ".join(f"{b} with unshuffle {u}" for b, u in bad)
        doc.problem(("train", "lr_patch"), f"lr_patch={patch} does not fit {shown} (a patch must divide by the "
                                           f"unshuffle and keep >= the block's minimum LR tile after it); "
                                           f"the smallest lr_patch that fits every candidate is {need}")


def study_scale(study: Study, space: SearchSpace | None) -> int | None:
    """The candidates' scale: the base's in an ablation, the space's (when pinned) in a search."""
    if study.mode == "ablation":
        try:
            return study.base_spec().scale
        except SrSearchError:
            return None
    return space.fixed_value("scale") if space is not None else None


#: contract results of this process, by family source (a family file's hash): a study loaded twice is checked once
_CONTRACTS: dict[tuple[str, str], str | None] = {}


def contract_problems(blocks: tuple[str, ...] | list[str]) -> list[tuple[str, str]]:
    """(block, problem) for each family of your own among `blocks` that breaks the block contract (a quick run of
    `sr_search.model.testing.check_family`: deployment exact, deploy_key honest). Built-in families are left out:
    sr-search's own tests run the full contract over them."""
    from ..model.testing import check_family

    out = []
    for block in dict.fromkeys(blocks):
        source = family_source(block)
        if source == "sr_search":
            continue
        key = (block, source)
        if key not in _CONTRACTS:
            try:
                check_family(block, quick=True)
                _CONTRACTS[key] = None
            except (AssertionError, SrSearchError) as exc:
                _CONTRACTS[key] = str(exc)
            except Exception as exc:  # the family's own code raised: the same verdict, with what it raised
                _CONTRACTS[key] = f"building or deploying it raised {type(exc).__name__}: {exc}"
        if _CONTRACTS[key] is not None:
            out.append((block, _CONTRACTS[key]))
    return out


def check_contracts(doc: Doc, space: SearchSpace, key: tuple[str, ...] = ("space",)) -> None:
    """Refuse a space whose own block families break the contract, before anything starts."""
    for block, problem in contract_problems(space.blocks):
        doc.problem(key, f"block family {block!r} breaks the block contract (sr_search.model.testing.check_family):"
                         f" {problem}")
