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
from typing import Any

import pandas as pd

from ..columns import STATUSES, TrialStatus
from ..errors import SrSearchError, StudyDataWarning
from . import store
from .pareto import pareto_front
from .study_dir import StudyDir, atomic_write



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

    @classmethod
    def start(cls, total: int, rows: pd.DataFrame, objectives: Mapping[str, str],
              dashboard: str | None) -> ProgressState:
        kept = [c for c in dict.fromkeys(("trial_id", "status", "psnr_y", *objectives)) if c in rows.columns]
        records = {r["trial_id"]: r for r in rows[kept].to_dict("records")} if len(rows) else {}
        return cls(total, dict(objectives), dashboard, records, len(records))

    def start_trial(self, trial_id: str | None, config: Mapping[str, Any], iterations: int) -> None:
        if trial_id is None:
            return
        spec = json.loads(config["arch"]) if isinstance(config.get("arch"), str) else {}
        self.running[trial_id] = {"trial_id": trial_id, "block": spec.get("block"), "channels": spec.get("channels"),
                                  "depth": spec.get("depth"), "iteration": 0, "of": iterations, "psnr_y": None}

    def progress(self, trial_id: str | None, config: Mapping[str, Any], result: Mapping[str, Any],
                 iterations: int) -> None:
        if trial_id is None:
            return
        if trial_id not in self.running:
            self.start_trial(trial_id, config, iterations)
        entry = self.running[trial_id]
        entry["iteration"] = int(result.get("iteration", entry["iteration"]))
        if isinstance(result.get("psnr_y"), float):
            entry["psnr_y"] = result["psnr_y"]

    def finish(self, trial_id: str, row: Mapping[str, Any]) -> None:
        self.rows[trial_id] = {k: row.get(k) for k in ("trial_id", "status", "psnr_y", *self.objectives)}
        self.running.pop(trial_id, None)
        if row.get("status") == "failed":  # what the progress line shows: the reason, not only a count
            self.last_failure = {"trial_id": trial_id, "block": row.get("block"), "error": row.get("error")}

    def stop(self, trial_id: str | None) -> None:
        self.running.pop(trial_id, None)

    def end(self) -> None:
        self.running.clear()
        self.phase = "finished" if len(self.rows) >= self.total else "stopped"

    def snapshot(self) -> dict[str, Any]:
        """The state as plain data (what `progress.json` holds)."""
        counts = {s: sum(r.get("status") == s for r in self.rows.values()) for s in STATUSES}
        complete = [r for r in self.rows.values()
                    if r.get("status") == TrialStatus.COMPLETE and _finite(r.get("psnr_y"))]
        best = max((r["psnr_y"] for r in complete), default=None)
        front = 0
        if complete and all(m in complete[0] for m in self.objectives):
            front = len(pareto_front(pd.DataFrame(complete), self.objectives))
        now = time.time()
        finished_here = len(self.rows) - self.done_before
        remaining = max(0, self.total - len(self.rows))
        eta = (now - self.started) / finished_here * remaining if finished_here > 0 else None
        return {"total": self.total, "finished": len(self.rows), **counts, "running": len(self.running),
                "running_trials": sorted(self.running.values(), key=lambda e: e["trial_id"]),
                "best_psnr_y": None if best is None else round(float(best), 3), "front_size": front,
                "elapsed_s": round(now - self.started, 1), "eta_s": None if eta is None else round(eta, 1),
                "dashboard": self.dashboard, "updated_at": now, "state": self.phase,
                "last_failure": self.last_failure}


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
    atomic_write(StudyDir(study_dir).progress, lambda tmp: tmp.write_text(text))


def summarize(study_dir: Path | StudyDir, objectives: Mapping[str, str], total: int) -> dict[str, Any]:
    """Counts, best PSNR and front size from the rows on disk (what `status` trusts over a stale progress.json)."""
    df = store.load_results(study_dir)
    counts = df["status"].value_counts().to_dict() if len(df) else {}
    complete = df[df["status"] == TrialStatus.COMPLETE] if len(df) else df
    best = complete["psnr_y"].max() if len(complete) else None
    front = pareto_front(df, objectives) if len(complete) else complete
    return {"total": total, "finished": int(len(df)), **{s: int(counts.get(s, 0)) for s in STATUSES},
            "best_psnr_y": None if best is None or best != best else round(float(best), 3),
            "front_size": int(len(front))}


def status(study_dir: str | Path) -> str:
    """Progress of a running or finished study, from its directory (works from any machine that sees it)."""
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
    state.update(summarize(study_dir, store.study_objectives(study_dir), state.get("total", 0)))
    age = time.time() - state.get("updated_at", time.time())
    lines = [progress_line(state), *running_lines(state),
             f"{state.get('state', 'running')}; last update {age:.0f} s ago"]
    if state.get("dashboard") and state.get("state") == "running":
        lines.append(f"Ray dashboard: {state['dashboard']}")
    return "\n".join(lines)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
