"""`sr-search status` reads progress.json and a directory listing: it imports none of torch, pandas, pyarrow, Ray,
Optuna or matplotlib (it runs in a `watch` loop on a login node); a stale progress file makes it read the rows, with
pyarrow (whose dataset scanner loads pandas) and still without torch, Ray, Optuna or matplotlib."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from sr_search import PRESETS
from sr_search.results.progress import ProgressState, write_progress
from sr_search.results.store import load_results, spec_columns, write_trial_row
from sr_search.results.study_dir import StudyDir

HEAVY = ("torch", "pandas", "pyarrow", "ray", "optuna", "matplotlib", "numpy")
PROBE = """
import sys
sys.argv = ["sr-search", *sys.argv[1:]]
from sr_search.cli import app
try:
    app()
except SystemExit as done:
    code = done.code
heavy = sorted({m.split(".")[0] for m in sys.modules} & set(HEAVY_NAMES))
print("IMPORTED", ",".join(heavy), "EXIT", code)
"""


def run_status(*args: str) -> tuple[str, set[str], int]:
    result = subprocess.run([sys.executable, "-c", PROBE.replace("HEAVY_NAMES", repr(HEAVY)), "status", *args],
                            capture_output=True, text=True, timeout=120)
    last = result.stdout.strip().splitlines()[-1].split()
    return result.stdout, set(filter(None, last[1].split(","))) if last[1] != "EXIT" else set(), int(last[-1])


def make_study(tmp_path: Path) -> StudyDir:
    folder = StudyDir(tmp_path / "study")
    folder.root.mkdir()
    spec = spec_columns(PRESETS["rtsrn-x2"])
    for i, (psnr, speed) in enumerate([(30.1, 10.0), (29.5, 20.0), (28.0, 5.0)]):
        write_trial_row(folder, {"study": "s", "trial_id": f"{i:04d}", "status": "complete", **spec, "seed": 0,
                                 "psnr_y": psnr, "throughput": speed})
    state = ProgressState.start(3, load_results(folder), {"psnr_y": "max", "throughput": "max"}, None)
    state.end()
    write_progress(folder, state.snapshot())
    return folder


def test_status_imports_no_heavy_module(tmp_path: Path) -> None:
    folder = make_study(tmp_path)
    out, heavy, code = run_status(str(folder.root))
    assert code == 0 and "[3/3] complete 3" in out and "front 2" in out, out
    assert heavy == set(), heavy


def test_a_stale_progress_file_is_recounted_without_torch(tmp_path: Path) -> None:
    folder = make_study(tmp_path)
    snapshot = json.loads(folder.progress.read_text())
    snapshot.update(finished=2, complete=2, front_size=1, updated_at=time.time())  # the driver died before its write
    folder.progress.write_text(json.dumps(snapshot))
    out, heavy, code = run_status(str(folder.root))
    assert code == 0 and "[3/3] complete 3" in out and "front 2" in out, out
    assert heavy <= {"pyarrow", "numpy", "pandas"}, heavy
    out, heavy, code = run_status(str(folder.root), "--recount")
    assert code == 0 and "[3/3] complete 3" in out and heavy <= {"pyarrow", "numpy", "pandas"}, (out, heavy)
