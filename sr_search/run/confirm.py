"""`confirm(source_dir, iterations)`: train a finished study's front (or its top K) again with a longer budget, as a
study of its own, and measure how well the short trainings ranked it.

    confirm(source_dir, iterations, top=K, include_baselines=True, seeds=S)
      -> the source is read (never written): finished, not running, with a front
      -> its candidates: the front members, or the top K by non-dominated rank then crowding distance, plus its named
         baselines; one candidate per architecture, each at S seeds (the source trial's seed, then the next ones)
      -> a confirmation study (sr_search.study.confirm): `confirms:` the source, the candidates, the new budget;
         everything else inherited
      -> the source's timings copied into the new folder's timing cache (same deploy keys, same protocol: nothing is
         timed again)
      -> `launch` runs it like any study (Ray, lock, resume: running `confirm` again continues or grows it)

The fidelity report (`sr_search.results.fidelity`) sets the two side by side.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import SrSearchError
from ..model.spec import ArchSpec
from ..results.fidelity import read_rows
from ..results.pareto import crowding_distance, eligible_mask, nondominated_ranks
from ..results.study_dir import StudyDir
from ..study.config import load_study
from ..study.confirm import confirmation_study, inheritance_changes
from ..study.model import Candidate, Study
from ..study.protocols import TimingProtocol
from ..study.yamlfile import load_bounded
from .plan import plan_session
from .timing.cache import TimingCache
from .timing.result import Timing

__all__ = ["confirm", "plan_confirmation", "open_source", "pick_candidates", "copy_timings", "Source"]

Echo = Callable[[str], None]


@dataclass
class Source:
    """A finished study, as read from its folder."""

    folder: StudyDir
    study: Study
    rows: pd.DataFrame
    resolved: dict[str, Any] | None


def open_source(source_dir: str | Path) -> Source:
    """The study frozen in `source_dir`, refused unless it is finished, not running and has a front. Reads only."""
    folder = StudyDir(Path(source_dir))
    if not folder.study_file.exists():
        raise SrSearchError(f"{source_dir} holds no study (no {folder.study_file.name}): name a study folder that "
                            f"`sr-search launch` wrote")
    if _is_running(folder):
        raise SrSearchError(f"{source_dir} is running (another sr-search holds it): confirm it once it has finished")
    study = load_study(folder.study_file)
    rows = read_rows(folder)
    session = plan_session(study, rows.to_dict("records"), asked={})
    if session.to_run:
        raise SrSearchError(f"{source_dir} is not finished: {len(session.done)} of {session.total} trials have a "
                            f"row; finish it first (sr-search launch {folder.study_file} --resume --out {source_dir})")
    if not eligible_mask(rows, study.objectives).any():
        raise SrSearchError(f"{source_dir} has no front: none of its {len(rows)} trials completed with every "
                            f"objective ({', '.join(study.objectives)}); there is nothing to confirm")
    resolved = load_bounded(folder.resolved.read_text(), folder.resolved) if folder.resolved.exists() else None
    return Source(folder, study, rows, resolved if isinstance(resolved, dict) else None)


def pick_candidates(rows: pd.DataFrame, objectives: dict[str, str], *, top: int | None = None,
                    include_baselines: bool = False) -> pd.DataFrame:
    """The rows to confirm, best first: the front (every rank-0 row), or the `top` best by non-dominated rank, then
    crowding distance (the NSGA-II order), then trial id; the named baselines after them with `include_baselines`.
    One row per architecture (the best-placed of duplicates)."""
    eligible = rows[eligible_mask(rows, objectives)].reset_index(drop=True)
    signs = np.array([1.0 if d == "min" else -1.0 for d in objectives.values()])
    points = eligible[list(objectives)].to_numpy(float) * signs
    ranks = nondominated_ranks(points) if len(points) else np.array([], dtype=int)
    crowding = crowding_distance(points, ranks) if len(points) else np.array([])
    order = sorted(range(len(eligible)), key=lambda i: (ranks[i], -crowding[i], str(eligible.at[i, "trial_id"])))
    ordered = eligible.assign(front_rank=ranks).iloc[order]
    ordered = ordered[~ordered["arch_key"].duplicated()]
    chosen = ordered[ordered["front_rank"] == 0] if top is None else ordered.head(top)
    if include_baselines and "baseline" in eligible.columns:
        named = ordered[ordered["baseline"].map(lambda v: isinstance(v, str) and bool(v))]
        chosen = pd.concat([chosen, named[~named["arch_key"].isin(chosen["arch_key"])]])
    return chosen


def candidates_of(source: Source, chosen: pd.DataFrame, seeds: int, warm: bool) -> list[Candidate]:
    """Each chosen row as a confirmation candidate: its architecture, its seed and the next `seeds - 1`, and with
    `warm` its kept weights to continue from."""
    out = []
    for row in chosen.to_dict("records"):
        warm_start = warm_iterations = None
        if warm:
            path = source.folder.checkpoint(row["trial_id"])
            if not path.exists():
                raise SrSearchError(f"--continue needs the source's kept weights, and {path} does not exist (the "
                                    f"source ran with keep_checkpoints: {source.study.keep_checkpoints})")
            warm_start, warm_iterations = str(path.resolve()), int(row["train_iterations"])
        seed = int(row["seed"])
        baseline = row.get("baseline")
        arch = json.loads(ArchSpec.from_json(row["arch_json"]).to_json())
        out.append(Candidate(trial=str(row["trial_id"]), arch=arch,
                             seeds=tuple(range(seed, seed + seeds)),
                             baseline=baseline if isinstance(baseline, str) and baseline else None,
                             warm_start=warm_start, warm_iterations=warm_iterations))
    return out


def plan_confirmation(source_dir: str | Path, iterations: int, *, top: int | None = None,
                      include_baselines: bool = False, seeds: int = 1, out_dir: str | Path | None = None,
                      warm: bool = False) -> tuple[Source, Study]:
    """The source (checked) and the confirmation study `confirm` would run; starts nothing, writes nothing."""
    if seeds < 1 or (top is not None and top < 1):
        raise SrSearchError(f"--seeds and --top count candidates and seeds: at least 1 (got seeds={seeds}, top={top})")
    source = open_source(source_dir)
    chosen = pick_candidates(source.rows, dict(source.study.objectives), top=top, include_baselines=include_baselines)
    study = confirmation_study(source.study, source.folder.root, candidates_of(source, chosen, seeds, warm),
                               iterations, out_dir=out_dir)
    changed = inheritance_changes(source.study, source.resolved, study)
    if changed:
        raise SrSearchError(f"the confirmation would not measure what {source.folder.root} measured:\n"
                            + "\n".join(f"  {line}" for line in changed))
    return source, study


def confirm(source_dir: str | Path, iterations: int, *, top: int | None = None, include_baselines: bool = False,
            seeds: int = 1, out_dir: str | Path | None = None, warm: bool = False, address: str | None = None,
            dashboard_host: str = "127.0.0.1", echo: Echo = print) -> Path:
    """Confirm the front of the finished study in `source_dir` at `iterations`; returns the confirmation's folder.

    Running it again with the same folder continues an interrupted confirmation, or grows it (more candidates with a
    larger `top`, more seeds). The source folder is only read. Raises `SrSearchError` for a source that is not
    finished, is running or has no front, and `StudyStopped` when stopped early (Ctrl-C).
    """
    from .tune.launch import launch

    source, study = plan_confirmation(source_dir, iterations, top=top, include_baselines=include_baselines,
                                      seeds=seeds, out_dir=out_dir, warm=warm)
    folder = StudyDir(study.out_dir)
    root, source_root = folder.root.resolve(), source.folder.root.resolve()
    if root == source_root or root.is_relative_to(source_root) or source_root.is_relative_to(root):
        raise SrSearchError(f"--out {folder.root} is (inside) the source study {source.folder.root}: a confirmation "
                            f"gets a folder of its own, and the source is only read")
    started = folder.study_file.exists()
    if started:
        frozen = load_bounded(folder.study_file.read_text(), folder.study_file) or {}
        if frozen.get("confirms") != str(source_root):
            raise SrSearchError(f"{folder.root} already holds study {frozen.get('name')!r}, which does not confirm "
                                f"{source_root}; choose another --out")
    with folder.owned():
        copied = copy_timings(source.folder, folder, study.protocol)
    n = len(study.candidates)
    echo(f"Confirming {n} candidate(s) of {source.folder.root} at {iterations:,} iterations "
         f"({study.n_trials} trainings); {copied} timing(s) reused from the source")
    return launch(study, out_dir=folder.root, resume=started, address=address, dashboard_host=dashboard_host,
                  study_file=folder.study_file, echo=echo)


def copy_timings(source: StudyDir, target: StudyDir, protocol: TimingProtocol) -> int:
    """Put the source's timings under `protocol` into `target`'s timing cache (those it lacks); returns how many.
    Timings are keyed by deployed network and protocol, so the confirmation's trials find them and time nothing."""
    if not source.timing_cache.exists():
        return 0
    try:
        rows = pq.read_table(source.timing_cache).to_pylist()
    except (pa.ArrowException, OSError) as exc:
        raise SrSearchError(f"{source.timing_cache} is unreadable ({exc}): the confirmation would time every "
                            f"candidate again; fix or delete it in the source first") from None
    cache = TimingCache(target.timing_cache)
    copied = 0
    for row in rows:
        if row.get("protocol") != protocol.name or row.get("protocol_key") != protocol.fingerprint():
            continue
        known = {e.get("device_name") for e in cache.entries(row["deploy_key"], protocol)}
        if row.get("device_name") in known:
            continue
        fields = {k: row[k] for k in Timing.model_fields if row.get(k) is not None and not _nan(row[k])}
        cache.put(row["deploy_key"], protocol, Timing(**fields))
        copied += 1
    return copied


def _nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _is_running(folder: StudyDir) -> bool:
    """Whether a launch holds the folder's lock now (probed read-only, with a shared lock taken and released)."""
    import fcntl

    if not folder.lock_file.exists():
        return False
    with open(folder.lock_file, encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False
