"""What makes the trials of a study comparable, so a resumed or grown study never mixes incomparable ones.

A study folder freezes the study (`study.yaml`) and what it resolves to (`resolved.yaml`: the search space's
content, not its path, and the timing protocol 'auto' became) when it starts. Resuming compares them with the study
being launched: a study may grow (more trials, seeds, levels or baselines) and change how it runs (sampler,
resources, checkpoints), but not what a trial means (space, fixed fields, budgets, base, data, training, timing
protocol and the device it times on, objectives, pruning).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

from ..errors import SrSearchError
from .model import Study
from .yamlfile import load_bounded

#: keys whose change would make old and new trials incomparable
COMPARABLE = ("name", "mode", "fixed", "constraints", "base", "data", "train", "timing", "protocols", "timing_on",
              "objectives", "pruning")


def resolved(study: Study) -> dict[str, Any]:
    """What the study resolves to, as plain data: its search space (fixed fields pinned, constraints merged; no
    file path) and its timing protocol."""
    return {"space": study.search_space().model_dump(mode="json", exclude={"path"}),
            "protocol": study.protocol.model_dump(mode="json")}


def resolved_yaml(study: Study) -> str:
    return yaml.safe_dump(resolved(study), sort_keys=False)


def changes(frozen_study: Mapping[str, Any], frozen_resolved: Mapping[str, Any] | None, study: Study) -> list[str]:
    """'key: old -> new' for every change that would mix incomparable trials (empty: the study may resume)."""
    now = study.dump()
    out = [f"{key}: {_show(old)} -> {_show(new)}"
           for key in COMPARABLE
           for key, old, new in _diff(key, frozen_study.get(key), now.get(key))]
    if frozen_resolved is not None:
        current = resolved(study)
        out += [f"space ({study.space.name}) {key}: {_show(old)} -> {_show(new)}"
                for key, old, new in _diff("", frozen_resolved.get("space"), current["space"])]
        out += [f"timing protocol {key}: {_show(old)} -> {_show(new)}"
                for key, old, new in _diff("", frozen_resolved.get("protocol"), current["protocol"])]
    return out


def check_resumable(frozen_study_text: str, frozen_resolved_text: str | None, study: Study, folder: object) -> None:
    """Raise `SrSearchError` listing every incomparable change, with what to do instead."""
    frozen = load_bounded(frozen_study_text, f"the study frozen in {folder}") or {}
    space = (load_bounded(frozen_resolved_text, f"the resolved space frozen in {folder}")
             if frozen_resolved_text is not None else None)
    found = changes(frozen, space, study)
    if found:
        raise SrSearchError(
            f"{folder} holds study {frozen.get('name')!r} with other settings; these changes would mix incomparable "
            f"trials:\n" + "\n".join(f"  {line}" for line in found)
            + "\nStart a new study with another --out (a study may only grow: more n_trials, seeds, levels or "
              "baselines; resources, sampler and checkpoints may change)"
        )


def _diff(prefix: str, old: Any, new: Any) -> list[tuple[str, Any, Any]]:
    """(key path, old, new) for every leaf that differs."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        out = []
        for key in dict.fromkeys([*old, *new]):
            out += _diff(f"{prefix}.{key}" if prefix else str(key), old.get(key), new.get(key))
        return out
    return [] if _same(old, new) else [(prefix, old, new)]


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _show(value: Any) -> str:
    if value is None:
        return "(unset)"
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    return text.removesuffix("\n...").removesuffix("...").strip()
