"""The study-file side of a confirmation: a source study's candidates trained again with another budget.

A confirmation is an ordinary search study whose file holds `confirms: SOURCE_DIR` and an explicit `candidates`
list (sr_search.study.model.Candidate). Everything else - space, fixed fields, constraints, data, training recipe,
timing protocol and placement, objectives, checkpoints, resources - is the source's as frozen in its folder; only
`train.iterations` and the candidates are the confirmation's own. So it runs, resumes, grows and reports through the
same runner as any study, and its timings are the source's (same deployed networks, same protocol).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import SrSearchError
from .config import validate_study
from .identity import resolved
from .model import ABLATION_KEYS, SEARCH_KEYS, Candidate, Study
from .yamlfile import Doc, raise_problems

__all__ = ["confirmation_study", "confirmation_name", "inheritance_changes"]

#: keys a confirmation sets itself; every other key of the study file is the source's
OWN = ("name", "mode", "train", "out_dir", "storage", "confirms", "candidates", "n_trials", "fixed")


def confirmation_name(source_name: str, iterations: int) -> str:
    """`<source>.confirm-<iterations>`: the default name (and folder, next to the source's) of a confirmation."""
    suffix = f".confirm-{iterations}"
    return source_name[: 100 - len(suffix)] + suffix


def confirmation_study(source: Study, source_dir: str | Path, candidates: Sequence[Candidate | dict[str, Any]],
                       iterations: int, *, name: str | None = None, out_dir: str | Path | None = None) -> Study:
    """The confirmation of `source` (frozen in `source_dir`): its candidates at `iterations`, validated as any study
    file is (a problem names its key). The default folder is `<source_dir>/../<name>`."""
    if source.confirms is not None:
        raise SrSearchError(f"{source_dir} is itself a confirmation (of {source.confirms}); confirm its source "
                            f"instead, with the budget you want")
    source_dir = Path(source_dir).resolve()
    name = name or confirmation_name(source.name, iterations)
    data = {k: v for k, v in source.dump().items() if k not in (*ABLATION_KEYS, *SEARCH_KEYS, *OWN)}
    fixed = dict(source.fixed)
    if source.mode == "ablation":  # the base pinned the task; a list of candidates pins it here
        space = source.search_space()
        first = _spec(candidates[0]) if candidates else None
        for field in ("scale", "colors"):
            if space.fixed_value(field) is None and first is not None:
                fixed[field] = getattr(first, field)
    data.update(
        name=name, mode="search", fixed=fixed, train={**source.train.model_dump(mode="json"), "iterations": iterations},
        confirms=str(source_dir), out_dir=str(out_dir if out_dir is not None else source_dir.parent / name),
        candidates=[c.model_dump(mode="json") if isinstance(c, Candidate) else dict(c) for c in candidates],
    )
    if source.storage is not None:  # Tune's checkpoints where the source kept them, in a folder of their own
        data["storage"] = f"{source.storage.rstrip('/')}/{name}"
    doc = Doc(Path(f"confirmation of {source_dir}"), data)
    study = validate_study(doc, base_dir=None)
    raise_problems(doc.problems)
    assert study is not None
    return study


def inheritance_changes(source: Study, source_resolved: dict[str, Any] | None, confirmation: Study) -> list[str]:
    """'key: source -> confirmation' for every inherited setting the confirmation does not share with its source
    (empty: it confirms what the source measured). `source_resolved` is the source's frozen resolved.yaml (the
    space's content and the timing protocol when it ran)."""
    mine = confirmation.dump()
    theirs = source.dump()
    out = [f"{key}: {theirs.get(key)!r} -> {mine.get(key)!r}" for key in theirs
           if key not in (*ABLATION_KEYS, *SEARCH_KEYS, *OWN, "resources", "keep_checkpoints")
           and theirs.get(key) != mine.get(key)]
    train_theirs = {k: v for k, v in theirs["train"].items() if k != "iterations"}
    train_mine = {k: v for k, v in mine["train"].items() if k != "iterations"}
    out += [f"train.{k}: {train_theirs.get(k)!r} -> {train_mine.get(k)!r}" for k in train_theirs
            if train_theirs.get(k) != train_mine.get(k)]
    if source_resolved is not None:
        now = resolved(confirmation)
        if source_resolved.get("protocol") != now["protocol"]:
            out.append("timing protocol (as resolved when the source ran) differs")
        if source_resolved.get("space") != now["space"] and source.mode == "search":
            out.append(f"search space {confirmation.space} changed since the source ran")
    return out


def _spec(candidate: Candidate | dict[str, Any]) -> Any:
    return (candidate if isinstance(candidate, Candidate) else Candidate.model_validate(candidate)).spec()
