"""Study progress that any process can read: `progress.json` in the study directory plus the rows.

The runner's Tune callback writes it; `sr-search status` reads it without importing Ray, so it works from a login
node that only sees the (shared) study directory.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from ..errors import SrSearchError
from . import store as results_mod
from .study_dir import StudyDir
from .pareto import pareto_front


def summarize(study_dir: Path, objectives: dict[str, str], total: int) -> dict[str, Any]:
    df = results_mod.load_results(study_dir)
    counts = df["status"].value_counts().to_dict() if len(df) else {}
    complete = df[df["status"] == "complete"] if len(df) else df
    best = complete["psnr_y"].max() if len(complete) else None
    front = pareto_front(df, objectives) if len(complete) else complete
    return {
        "total": total, "finished": int(len(df)), "complete": int(counts.get("complete", 0)),
        "failed": int(counts.get("failed", 0)), "infeasible": int(counts.get("infeasible", 0)),
        "best_psnr_y": None if best is None or best != best else round(float(best), 3),
        "front_size": int(len(front)),
    }


def progress_line(state: dict[str, Any]) -> str:
    eta = state.get("eta_s")
    eta_text = "?" if eta is None else f"{eta / 60:.1f} min"
    best = state.get("best_psnr_y")
    return (f"[{state['finished']}/{state['total']}] complete {state['complete']}, running {state.get('running', 0)}, "
            f"failed {state['failed']}, infeasible {state['infeasible']} | best PSNR-Y "
            f"{'-' if best is None else f'{best:.3f} dB'} | front {state['front_size']} | "
            f"elapsed {state.get('elapsed_s', 0) / 60:.1f} min, ETA {eta_text}")


def write_progress(study_dir: Path | StudyDir, state: dict[str, Any]) -> None:
    path = StudyDir(study_dir).progress
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(state, indent=1))
    os.replace(tmp, path)


def status(study_dir: str | Path) -> str:
    """Progress of a running or finished study, from its directory (works from any machine that sees it)."""
    progress_file = StudyDir(study_dir).progress
    if not progress_file.exists():
        raise SrSearchError(f"{study_dir} is not a study directory (no progress.json); was it launched?")
    state = json.loads(progress_file.read_text())
    total = state.get("total", 0)
    state.update({k: v for k, v in summarize(study_dir, results_mod.study_objectives(study_dir), total).items()})
    age = time.time() - state.get("updated_at", time.time())
    lines = [progress_line(state), f"{state.get('state', 'running')}; last update {age:.0f} s ago"]
    if state.get("dashboard") and state.get("state") == "running":
        lines.append(f"Ray dashboard: {state['dashboard']}")
    return "\n".join(lines)
