"""Study progress that any process can read: `progress.json` in the study directory plus the rows.

The runner's recorder keeps a `ProgressState` (exact counts, every running trial with its iteration and last validation
PSNR, ETA) and writes it to `progress.json`; `sr-search status` reads it without importing Ray, so it works from a login
node that only sees the (shared) study directory. `progress_line` and `running_lines` are the text both show.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..columns import STATUSES, TrialStatus
from ..errors import SrSearchError, StudyDataWarning
from .study_dir import StudyDir, atomic_write

if TYPE_CHECKING:  # `status` imports neither pandas nor numpy; the driver's state imports the kernel on first use
    import pandas as pd

    from .kernel import IncrementalFront



@dataclass
class ProgressState:
    """Where a running study stands; rows are the truth for what finished, Tune's results for what runs."""

    total: int
    objectives: dict[str, str]
    dashboard: str | None
    rows: dict[str, dict[str, Any]]
    done_before: int
    started: float = field(default_factory=time.time)
    running: dict[str, dict[str, Any]] = field(default_factory=dict)
    phase: str = "running"
    last_failure: dict[str, Any] | None = None
    #: where the trials' time went, set by the driver when the study ends (so `status` need not read the rows)
    time_line: str | None = None

    def __post_init__(self) -> None:
        self._last: dict[str, Any] | None = None
        self._recount()

    @classmethod
    def start(cls, total: int, rows: pd.DataFrame, objectives: Mapping[str, str],
              dashboard: str | None) -> ProgressState:
        kept = [c for c in dict.fromkeys(("trial_id", "status", "psnr_y", *objectives)) if c in rows.columns]
        records = {r["trial_id"]: r for r in rows[kept].to_dict("records")} if len(rows) else {}
        return cls(total, dict(objectives), dashboard, records, len(records))

    def start_trial(self, trial_id: str | None, config: Mapping[str, Any], iterations: int) -> None:
        if trial_id is None:
            return
        self._last = None
        spec = json.loads(config["arch"]) if isinstance(config.get("arch"), str) else {}
        self.running[trial_id] = {"trial_id": trial_id, "block": spec.get("block"), "channels": spec.get("channels"),
                                  "depth": spec.get("depth"), "iteration": 0, "of": iterations, "psnr_y": None}

    def progress(self, trial_id: str | None, config: Mapping[str, Any], result: Mapping[str, Any],
                 iterations: int) -> None:
        if trial_id is None:
            return
        if trial_id not in self.running:
            self.start_trial(trial_id, config, iterations)
        self._last = None
        entry = self.running[trial_id]
        entry["iteration"] = int(result.get("iteration", entry["iteration"]))
        if isinstance(result.get("psnr_y"), float):
            entry["psnr_y"] = result["psnr_y"]

    def finish(self, trial_id: str, row: Mapping[str, Any]) -> None:
        self._last = None
        again = trial_id in self.rows
        self.rows[trial_id] = kept = {k: row.get(k) for k in ("trial_id", "status", "psnr_y", *self.objectives)}
        if again:  # a row written again (rare): its old values may have been the best or on the front
            self._recount()
        else:
            self._count(kept)
        self.running.pop(trial_id, None)
        if row.get("status") == "failed":  # what the progress line shows: the reason, not only a count
            self.last_failure = {"trial_id": trial_id, "block": row.get("block"), "error": row.get("error")}

    def stop(self, trial_id: str | None) -> None:
        self._last = None
        self.running.pop(trial_id, None)

    def end(self) -> None:
        self._last = None
        self.running.clear()
        self.phase = "finished" if len(self.rows) >= self.total else "stopped"

    def snapshot(self) -> dict[str, Any]:
        """The state as plain data (what `progress.json` holds). O(running trials): the counts, the best PSNR and the
        front are kept as rows finish (`finish`), not recomputed from every row."""
        best = self._best
        now = time.time()
        finished_here = len(self.rows) - self.done_before
        remaining = max(0, self.total - len(self.rows))
        eta = (now - self.started) / finished_here * remaining if finished_here > 0 else None
        self._last = {
            "total": self.total, "finished": len(self.rows), **self._counts, "running": len(self.running),
            "running_trials": sorted(self.running.values(), key=lambda e: e["trial_id"]),
            "best_psnr_y": None if best is None else round(float(best), 3),
            "front_size": 0 if self._front is None else len(self._front),
            "elapsed_s": round(now - self.started, 1), "eta_s": None if eta is None else round(eta, 1),
            "dashboard": self.dashboard, "updated_at": now, "state": self.phase,
            "last_failure": self.last_failure, "time_line": self.time_line}
        return self._last

    def latest(self) -> dict[str, Any]:
        """The last snapshot, if nothing changed since it was taken (one per update: the progress file and the
        progress line share it); else a new one."""
        return self._last if self._last is not None else self.snapshot()

    # --- kept as rows finish -------------------------------------------------------------------------------------

    def _recount(self) -> None:
        self._counts: dict[str, int] = {s: 0 for s in STATUSES}
        self._best: float | None = None
        self._front: IncrementalFront | None = None
        for row in self.rows.values():
            self._count(row)

    def _count(self, row: Mapping[str, Any]) -> None:
        """Add one row: its status count; the best PSNR and the front if it is complete with finite values (the
        rows a front takes: `pareto.eligible_mask`, and a finite PSNR, as the best needs)."""
        status = row.get("status")
        for name in self._counts:
            if status == name:
                self._counts[name] += 1
        if status != TrialStatus.COMPLETE or not _finite(row.get("psnr_y")):
            return
        self._best = row["psnr_y"] if self._best is None else max(self._best, row["psnr_y"])
        values = [_number(row.get(name)) for name in self.objectives]
        if any(v is None for v in values):
            return
        if self._front is None:
            from .kernel import IncrementalFront

            self._front = IncrementalFront(len(values))
        self._front.add([v if d == "min" else -v for v, d in zip(values, self.objectives.values(), strict=True)])


def progress_line(state: Mapping[str, Any]) -> str:
    """One line: counts, best PSNR, front size, elapsed time and ETA."""
    eta = state.get("eta_s")
    eta_text = "?" if eta is None else f"{eta / 60:.1f} min"
    best = state.get("best_psnr_y")
    pruned = f", pruned {state['pruned']}" if state.get("pruned") else ""
    return (f"[{state['finished']}/{state['total'] or '?'}] complete {state['complete']}, "
            f"running {state.get('running', 0)}, "
            f"failed {state['failed']}, infeasible {state['infeasible']}{pruned} | best PSNR-Y "
            f"{'-' if best is None else f'{best:.3f} dB'} | front {state['front_size']} | "
            f"elapsed {state.get('elapsed_s', 0) / 60:.1f} min, ETA {eta_text}")


def running_lines(state: Mapping[str, Any]) -> list[str]:
    """One line per running trial: id, block, width/depth, iteration done / total, last validation PSNR."""
    lines = []
    for t in state.get("running_trials", ()):
        psnr = "-" if t.get("psnr_y") is None else f"{t['psnr_y']:.3f} dB"
        lines.append(f"  {t['trial_id']} {t.get('block') or '?':9s} C{t.get('channels')} D{t.get('depth')}  "
                     f"it {t.get('iteration', 0)}/{t.get('of', '?')}  last PSNR-Y {psnr}")
    return lines


def failure_lines(df: pd.DataFrame, width: int = 400) -> list[str]:
    """The failed trials of a study's rows with their reasons (what the end of a launch prints); a study in which
    every trial failed says so first."""
    if not len(df) or "status" not in df.columns:
        return []
    failed = df[df["status"] == "failed"]
    if failed.empty:
        return []
    lines = [f"Failed trials ({len(failed)} of {len(df)}):"]
    if len(failed) == len(df):
        lines.insert(0, f"Every trial failed ({len(df)} of {len(df)}): this study has no result. The study itself "
                        f"ran to the end (exit code 0); the reasons:")
    for row in failed.to_dict("records"):
        reason = " ".join(str(row.get("error") or "no reason recorded").split())
        reason = reason if len(reason) <= width else reason[:width - 3] + "..."
        lines.append(f"  {row.get('trial_id')} {row.get('block') or '?'}: {reason}")
    return lines


def write_progress(study_dir: Path | StudyDir, state: Mapping[str, Any]) -> None:
    text = json.dumps(state, indent=1)
    # not flushed to disk: status recounts the rows when it is stale, and at hundreds of trials a minute an fsync per
    # update was a third of the driver's cost per trial
    atomic_write(StudyDir(study_dir).progress, lambda tmp: tmp.write_text(text), durable=False)


def summarize(study_dir: Path | StudyDir, objectives: Mapping[str, str], total: int) -> dict[str, Any]:
    """Counts, best PSNR and front size from the rows on disk (what `status` trusts over a stale progress.json):
    only the columns they need, read with pyarrow (no pandas, no torch)."""
    import numpy as np

    from . import rows
    from .kernel import front_mask

    table = rows._read_table(StudyDir(study_dir), ["psnr_y", *objectives])
    data = {} if table is None else {name: table.column(name).to_pylist() for name in table.column_names}
    statuses = data.get("status", [])
    counts = {s: sum(v == s for v in statuses) for s in STATUSES}
    complete = [k for k, v in enumerate(statuses) if v == TrialStatus.COMPLETE]
    psnr = [data["psnr_y"][k] for k in complete if _finite(data["psnr_y"][k])] if "psnr_y" in data else []
    points = []
    for k in complete:
        values = [_number(data[name][k]) if name in data else None for name in objectives]
        if all(v is not None for v in values):
            points.append([v if d == "min" else -v for v, d in zip(values, objectives.values(), strict=True)])
    front = int(front_mask(np.array(points, dtype=float)).sum()) if points else 0
    return {"total": total, "finished": len(statuses), **counts,
            "best_psnr_y": round(float(max(psnr)), 3) if psnr else None, "front_size": front}


def status(study_dir: str | Path, recount: bool = False) -> str:
    """Progress of a running or finished study, from its directory (works from any machine that sees it).

    It trusts `progress.json` while the number of rows on disk (a directory listing and the compaction manifest; no
    row is opened) is the number it says finished; otherwise, or with `recount`, it counts the rows themselves."""
    progress_file = StudyDir(study_dir).progress
    if not progress_file.exists():
        raise SrSearchError(f"{study_dir} is not a study directory (no progress.json); was it launched?")
    try:
        state = json.loads(progress_file.read_text())
        if not isinstance(state, dict):
            raise ValueError(f"a JSON {type(state).__name__}, not an object")
    except (ValueError, UnicodeDecodeError) as exc:  # damaged: the rows still say what finished
        warnings.warn(StudyDataWarning(f"{progress_file} is unreadable ({exc}); counts below come from the trial "
                                       f"rows (the total is unknown until the driver writes it again)"), stacklevel=2)
        state = {"state": "unknown"}
    folder = StudyDir(study_dir)
    stale = state.get("finished") != _rows_on_disk(folder)
    if recount or stale:
        # stale (a driver that stopped without its last write, a row set aside since) or damaged: the rows decide
        state.update(summarize(folder, folder.frozen().objectives, state.get("total", 0)))
    age = time.time() - state.get("updated_at", time.time())
    lines = [progress_line(state), *running_lines(state),
             f"{state.get('state', 'running')}; last update {age:.0f} s ago"]
    if recount or state.get("state") not in (None, "running"):  # not every `watch`: a finished study's line
        # comes from progress.json (the driver wrote it at the end); the rows' time columns are read when it has none
        line = state["time_line"] if "time_line" in state and not recount and not stale else time_line(folder)
        lines += [line] if line else []
    if state.get("dashboard") and state.get("state") == "running":
        lines.append(f"Ray dashboard: {state['dashboard']}")
    return "\n".join(lines)


def time_line(folder: StudyDir) -> str | None:
    """Where the trials' time went (training, data, validation, ...), when the rows record it."""
    from . import rows
    from .time_shares import COLUMNS, shares_line, totals

    table = rows._read_table(folder, list(COLUMNS))
    if table is None:
        return None
    return shares_line(totals({name: table.column(name).to_pylist() for name in table.column_names}))


def _rows_on_disk(folder: StudyDir) -> int:
    from .parts import row_ids

    return len(row_ids(folder))


def _number(value: Any) -> float | None:
    """A finite objective value as a float (None: missing, NaN, infinite or not a number)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            value = float(value)  # numpy scalars, decimals
        except (TypeError, ValueError):
            return None
    value = float(value)
    return value if math.isfinite(value) else None


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
