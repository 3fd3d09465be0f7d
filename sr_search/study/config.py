"""Study files: load, validate at the edge, freeze.

A study file is a small delta over the defaults written in `sr_search.study.model` (the single place they live;
`sr-search validate --show STUDY` prints the resolved study, defaults included). Every problem in a file - and in
the search-space file it names - is collected and reported at once as `file:line: key: message`, before anything
heavy starts. Keys::

    name: str                  required; also the default output folder runs/<name>
    space: PATH                required; a search-space file, relative to this study file (see sr_search/study/space.py)
    mode: search | ablation    default search
    fixed: {FIELD: VALUE}      pins common ArchSpec fields of the space (e.g. {scale: 2}); applied to `base` too
    constraints: {max_params, max_macs, max_latency_ms}   added to (and overriding) the space's constraints
    # mode: search
    sampler: tpe|nsga2|random|gp   default tpe
    n_trials: int 1..100000        default 50
    seed: int 0..2**31-1           default 0 (sampler seed)
    baselines: [PRESET, ...]       default []; sr_search.presets names, evaluated (enqueued) first
    pruning: {method: successive_halving, min_iterations: INT, reduction_factor: INT >= 2}   default off
    # mode: ablation
    base: PRESET | {preset: PRESET, FIELD: VALUE...} | {FIELD: VALUE...}   required: the spec every variant changes
    factors: {FIELD: [LEVEL, ...]} required; a level is a value or {FIELD: VALUE...} that includes FIELD
    design: one_at_a_time | factorial   default one_at_a_time
    seeds: [int, ...]              default [0]; every variant runs once per seed (variants x seeds <= 100000)
    base_seeds: int                default len(seeds); the base runs with this many seeds in all (the noise floor)
    # both
    data: sr_search.study.settings.DataSpec          relative folders resolve against this file; `builtin:` as is;
                               every image is checked before anything starts (sr_search/study/data_check.py)
    train: sr_search.study.settings.TrainBudget
    timing: auto | repsr | ntire23-x2 | ntire23-x3 | ntire26-esr[-warm] | ntire25-esr[-warm] | cpu | ort-cpu
            | openvino-cpu | ort-cuda | trt-fp16 | NAME | {inline protocol}   default auto (runtime: torch)
    timing_on: {resources: {CUSTOM_RESOURCE: AMOUNT}}   time on the deployment node; default where trained
    protocols: {NAME: {protocol fields}}    custom protocols, usable by name in `timing` and `also_time`
    also_time: [PROTOCOL, ...]              also time each candidate under these (other runtimes): columns
                                            latency_ms@<protocol>, which objectives may name; default none
    objectives: {METRIC: max|min, ...}      ordered; default {psnr_y: max, throughput: max}
    resources: {cpus_per_trial, gpus_per_trial, concurrency, max_failures, autoscaling, wait_s}
    keep_checkpoints: bool                  default false
    out_dir: PATH                           default runs/<name>, relative to the current directory
    storage: PATH | URI                     where Tune keeps trial checkpoints (s3://...); default the study folder
    # a confirmation study (written by `sr-search confirm`, sr_search/run/confirm.py)
    confirms: DIR                           the source study folder (only read); everything else is the source's
                                            but `train` and the candidates
    candidates: [{trial: ID, arch: {FIELD: VALUE...}, seeds: [int...], baseline, warm_start, warm_iterations}]
                                            each source trial trained again once per seed (n_trials: their count)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from pydantic import ValidationError

from ..errors import SrSearchError
from .checks import (check_ablation, check_baselines, check_contracts, check_modes, check_patch, check_references,
                     check_space, report_validation, study_scale)
from .data_check import check_data
from .model import Study
from .space import describe_space
from .space_file import SPACE_KEYS, load_space, parse_space
from .yamlfile import Doc, Problem, raise_problems, read_yaml, sort_problems

__all__ = ["load_study", "validate_study", "validate_files", "describe", "detect_kind", "with_overrides"]


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
        report_validation(doc, exc)
    check_modes(doc, data)
    if any(p.key == "timing" for p in doc.problems):  # the protocol's own problem is the more precise one
        data = {k: v for k, v in data.items() if k != "timing"}
    check_references(doc, data, base_dir)
    space = check_space(doc, data, base_dir)
    if study is None or space is None:
        return None
    study = study.model_copy(update={"loaded_space": space})
    check_baselines(doc, study, space)
    check_contracts(doc, space)
    if study.mode == "ablation":
        check_ablation(doc, study, space)
    check_patch(doc, study, space)
    check_data(doc, study, space)  # the images: after the cheap checks, before anything heavy starts
    scale = study_scale(study, space)
    protocol = study.protocol
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
                space = parse_space(doc)
                if space is not None:
                    check_contracts(doc, space, ("block_modules",))
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
    if study.confirms is not None:
        lines.append(f"  confirms {study.confirms}: {len(study.candidates)} candidates, {study.n_trials} trainings")
        lines += [f"    {c.trial}{' (' + c.baseline + ')' if c.baseline else ''} seeds {list(c.seeds)}"
                  for c in study.candidates]
    elif study.mode == "search":
        lines.append(f"  sampler {study.sampler}, {study.n_trials} trials, seed {study.seed}"
                     + (f", baselines first: {', '.join(study.baselines)}" if study.baselines else ""))
    else:
        points = study.ablation_grid()
        extra = len(study.base_seed_list()) - len(study.seeds)
        lines.append(f"  {len(points)} variants x {len(study.seeds)} seed(s)"
                     + (f" + {extra} more base seed(s)" if extra else "")
                     + f" = {len(points) * len(study.seeds) + extra} runs ({study.design})")
        lines += [f"    {i:2d}. {p.label}" for i, p in enumerate(points)]
    lines.append(f"  train: {study.train.iterations} iterations, batch {study.train.batch_size}, "
                 f"LR patch {study.train.lr_patch}")
    if study.pruning is not None:
        p = study.pruning
        lines.append(f"  pruning: successive halving, rungs at {', '.join(map(str, p.rungs(study.train.iterations)))} "
                     f"iterations; the top 1/{p.reduction_factor} at each rung continue")
    lines.append(f"  timing: {study.protocol.name}; "
                 f"objectives: {', '.join(f'{k} ({v})' for k, v in study.objectives.items())}")
    lines.append(describe_space(study.search_space()))
    return "\n".join(lines)


def with_overrides(study: Study, **changes: Any) -> Study:
    """A new, re-validated study; a mapping for a record field (train, data, resources...) updates it."""
    data = study.dump()
    aliases = {name: (info.alias or name) for name, info in Study.model_fields.items() if name != "loaded_space"}
    allowed = sorted(set(aliases) | set(aliases.values()))
    for key, value in changes.items():
        if key not in allowed:
            raise SrSearchError(f"unknown study field {key!r}; allowed: {', '.join(allowed)}")
        key = aliases.get(key, key)
        if isinstance(value, dict) and isinstance(data.get(key), dict) and key not in ("factors", "objectives"):
            value = {**data[key], **value}
        data[key] = value
    if "name" in changes and "out_dir" not in changes and study.out_dir == Path("runs") / study.name:
        data["out_dir"] = None
    doc = Doc(Path(f"{study.name} (overrides)"), data)
    new = validate_study(doc, base_dir=None)
    raise_problems(doc.problems)
    assert new is not None
    return new
