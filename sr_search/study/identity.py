"""What makes the trials of a study comparable, so a resumed or grown study never mixes incomparable ones.

A study folder freezes the study (`study.yaml`) and what it resolves to (`resolved.yaml`: the search space's
content, not its path, and the timing protocol 'auto' became) when it starts. Resuming compares them with the study
being launched: a study may grow (more trials, seeds, levels or baselines) and change how it runs (sampler,
resources, checkpoints), but not what a trial means (space, fixed fields, budgets, base, data, training, timing
protocol and the device it times on, objectives, pruning).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

import yaml

from ..errors import SrSearchError
from ..model.blocks import block_module_files, family_source
from .model import Study
from .yamlfile import load_bounded

#: keys whose change would make old and new trials incomparable
COMPARABLE = ("name", "mode", "fixed", "constraints", "base", "data", "train", "timing", "protocols", "timing_on",
              "objectives", "pruning", "confirms", "also_time")
#: keys under COMPARABLE ones that say how trials run, not what they mean (where prepared images are kept)
HOW_IT_RUNS = ("data.cache", "data.cache_max_gb", "data.on_gpu")


def resolved(study: Study) -> dict[str, Any]:
    """What the study resolves to, as plain data: its search space (fixed fields pinned, constraints merged; no
    file path), its timing protocol, and the code of its own block families: `block_files` (the SHA-256 of every
    block module file and of the helper modules next to it that it imported) and `block_packages` (the
    distribution and version of a family an installed package or a module name brings), each only when there is
    one."""
    space = study.search_space()
    out = {"space": space.model_dump(mode="json", exclude={"path"}), "protocol": study.protocol.model_dump(mode="json")}
    if study.also_time:  # the other runtimes' protocols, resolved (a redefined custom one is a change)
        out["also_protocols"] = [p.model_dump(mode="json") for p in study.also_protocols()]
    files = block_module_files(space.block_modules)
    if files:
        out["block_files"] = files
    packages = {}
    for block in space.blocks:
        source = family_source(block)
        if source != "sr_search" and not any(source.startswith(f"{path} ") for path in files):
            packages[block] = source
    if packages:
        out["block_packages"] = packages
    return out


def resolved_yaml(study: Study, previous: str | None = None, allowed: Sequence[str] = ()) -> str:
    """`resolved(study)` as YAML; with the `previous` resolved.yaml, its `block_changes` are kept and the changes
    `allowed` now (`--allow-block-change`) are added, dated: the study says which block files changed under it."""
    data = resolved(study)
    notes = []
    if previous is not None:
        old = load_bounded(previous, "resolved.yaml") or {}
        notes = list(old.get("block_changes") or []) if isinstance(old, Mapping) else []
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    notes += [{"at": stamp, "change": line, "allowed_by": "--allow-block-change"} for line in allowed]
    if notes:
        data["block_changes"] = notes
    return yaml.safe_dump(data, sort_keys=False)


def block_changes(frozen_resolved: Mapping[str, Any] | None, study: Study) -> list[str]:
    """A line per block module file (or package version) that differs from the one the study started with."""
    if frozen_resolved is None:
        return []
    current = resolved(study)
    # a study frozen before files were hashed (0.2) has no record to compare with: the space's paths still are
    if "block_files" not in frozen_resolved:
        current.pop("block_files", None)
    if "block_packages" not in frozen_resolved:
        current.pop("block_packages", None)
    out = []
    old_files, new_files = frozen_resolved.get("block_files") or {}, current.get("block_files") or {}
    for path in dict.fromkeys([*old_files, *new_files]):
        old, new = old_files.get(path), new_files.get(path)
        if old != new:
            out.append(f"block module file {path}: sha256 {_short(old)} -> {_short(new)}")
    old_packages, new_packages = frozen_resolved.get("block_packages") or {}, current.get("block_packages") or {}
    for block in dict.fromkeys([*old_packages, *new_packages]):
        if old_packages.get(block) != new_packages.get(block):
            out.append(f"block family {block!r}: {old_packages.get(block) or '(unset)'} -> "
                       f"{new_packages.get(block) or '(unset)'}")
    return out


def _short(digest: str | None) -> str:
    return "(none)" if digest is None else digest[:16]


def changes(frozen_study: Mapping[str, Any], frozen_resolved: Mapping[str, Any] | None, study: Study) -> list[str]:
    """'key: old -> new' for every change that would mix incomparable trials (empty: the study may resume)."""
    now = study.dump()
    out = [f"{key}: {_show(old)} -> {_show(new)}"
           for key in COMPARABLE
           for key, old, new in _diff(key, frozen_study.get(key), now.get(key)) if key not in HOW_IT_RUNS]
    if frozen_resolved is not None:
        current = resolved(study)
        out += [f"space ({study.space.name}) {key}: {_show(old)} -> {_show(new)}"
                for key, old, new in _diff("", frozen_resolved.get("space"), current["space"])]
        out += [f"timing protocol {key}: {_show(old)} -> {_show(new)}"
                for key, old, new in _diff("", frozen_resolved.get("protocol"), current["protocol"])]
        out += [f"timing protocols of {key}: {_show(old)} -> {_show(new)}"
                for key, old, new in _diff("also_time", frozen_resolved.get("also_protocols"),
                                           current.get("also_protocols"))]
    return out


def check_resumable(frozen_study_text: str, frozen_resolved_text: str | None, study: Study, folder: object,
                    allow_block_change: bool = False) -> list[str]:
    """Raise `SrSearchError` listing every incomparable change, with what to do instead. A changed block module
    file is such a change unless `allow_block_change` (the user says it is the same network); the changes so
    allowed are returned (for the study's notes)."""
    frozen = load_bounded(frozen_study_text, f"the study frozen in {folder}") or {}
    space = (load_bounded(frozen_resolved_text, f"the resolved space frozen in {folder}")
             if frozen_resolved_text is not None else None)
    found = changes(frozen, space, study)
    blocks = block_changes(space if isinstance(space, Mapping) else None, study)
    if blocks and not allow_block_change:
        found += [f"{line} (its candidates may be other networks now; if it is the same network - a comment, a "
                  f"refactor - resume with --allow-block-change, which notes the change in resolved.yaml)"
                  for line in blocks]
    if found:
        raise SrSearchError(
            f"{folder} holds study {frozen.get('name')!r} with other settings; these changes would mix incomparable "
            f"trials:\n" + "\n".join(f"  {line}" for line in found)
            + "\nStart a new study with another --out (a study may only grow: more n_trials, seeds, levels or "
              "baselines; resources, sampler and checkpoints may change)"
        )
    return blocks


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
