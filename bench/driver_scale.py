"""A study of 1,000 to 50,000 trials: what the driver pays per finished trial and what readers pay to open the study,
with 0.2's code paths (kept in this file: the n x n matrix kernel, the per-file reader, the full progress snapshot,
the per-paused-trial halving rule, the rewriting timing cache, plain TPE) measured side by side with the current ones
in the same run, so the ratios hold on a loaded machine (absolute seconds do not).

    python bench/driver_scale.py                       # n = 1,000 and 10,000; 0.2's paths at 1,000 (~5-10 min)
    python bench/driver_scale.py --sizes 1000 10000 50000 --old-max 10000   # the whole table (~45 min loaded)

Study folders hold the real row format: the rows of a 0.2 study (tests/data/study_0.2) repeated with new ids and
values, 88% complete and the rest infeasible, pruned and failed. Each reader runs in its own process (time and peak
RSS of that process, imports excluded from the time, included in the RSS); `status` is timed as the whole command.
The driver is fed by a simulated stream through the real `StudyRecorder` (and `ParetoHalving` with 300 trials per
rung when pruning): its sustainable rate is 1 / (cost per finished trial). Old paths above --old-max rows are not run
(0.2's reader needed about 10 minutes for 50,000 rows).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = ROOT / "tests" / "data" / "study_0.2" / "trials"
OBJECTIVES = {"psnr_y": "max", "throughput": "max"}


# --- 0.2's code paths, verbatim where they were one function -------------------------------------------------------

def old_matrix_ranks(points: np.ndarray) -> np.ndarray:
    """0.2's nondominated_ranks: an n x n domination matrix, fronts peeled by decrementing counts."""
    n = len(points)
    dominates = np.zeros((n, n), dtype=bool)
    for start in range(0, n, 512):
        block = points[start : start + 512, None, :]
        no_worse = (block <= points[None, :, :]).all(axis=2)
        better = (block < points[None, :, :]).any(axis=2)
        dominates[start : start + 512] = no_worse & better
    counts = dominates.sum(axis=0)
    ranks = np.full(n, -1)
    current = np.flatnonzero(counts == 0)
    rank = 0
    while len(current):
        ranks[current] = rank
        counts = counts - dominates[current].sum(axis=0)
        counts[ranks >= 0] = -1
        current = np.flatnonzero(counts == 0)
        rank += 1
    return ranks


def old_front(df, objectives=OBJECTIVES):
    """0.2's pareto_front: eligible rows, then rank 0 of the matrix kernel."""
    from sr_search.results.pareto import _minimisation_points, eligible_mask

    mask = eligible_mask(df, objectives).to_numpy()
    ranks = np.full(len(df), np.nan)
    if mask.any():
        ranks[mask] = old_matrix_ranks(_minimisation_points(df, objectives)[mask])
    return df.loc[ranks == 0]


def old_read_table(folder: Path) -> pa.Table | None:
    """0.2's reader: one pq.read_table per trial file, then one concat."""
    files = sorted((folder / "trials").glob("*.parquet"))
    tables = [pq.read_table(f, page_checksum_verification=True) for f in files]
    return pa.concat_tables(tables, promote_options="default").sort_by("trial_id") if tables else None


def old_load_results(folder: Path):
    from sr_search.results.store import typed

    return typed(old_read_table(folder).to_pandas())


def old_snapshot(rows: dict) -> int:
    """0.2's ProgressState.snapshot front: a DataFrame of every complete row and its front, on every update."""
    import pandas as pd

    complete = [r for r in rows.values() if r.get("status") == "complete" and isinstance(r.get("psnr_y"), float)]
    return len(old_front(pd.DataFrame(complete))) if complete else 0


# --- study folders ------------------------------------------------------------------------------------------------

def rows_table(n: int, seed: int = 0) -> pa.Table:
    """n rows in the real row format: 0.2 rows repeated, new ids, new values; 88% complete."""
    templates = [pq.read_table(f) for f in sorted(TEMPLATES.glob("*.parquet"))]
    complete = next(t for t in templates if t.column("status")[0].as_py() == "complete")
    base = pa.concat_tables([complete] * 1).take(pa.array(np.zeros(n, dtype=np.int64)))
    rng = np.random.default_rng(seed)
    status = rng.choice(["complete", "infeasible", "pruned", "failed"], size=n, p=[0.88, 0.04, 0.05, 0.03])
    cost = rng.uniform(1, 4, n)
    columns = {
        "trial_id": pa.array([f"{i:04d}" for i in range(n)], pa.large_string()),
        "status": pa.array(status.tolist(), pa.large_string()),
        "psnr_y": pa.array(np.where(status == "complete", 26 + cost + rng.normal(0, 0.3, n), np.nan)),
        "throughput": pa.array(np.where(np.isin(status, ["complete", "pruned"]), 10 ** (5 - cost), np.nan)),
        "rung_psnr_y": pa.array(np.where(status == "pruned", 25 + cost, np.nan)),
        "seed": pa.array(np.arange(n, dtype=np.int64)),
    }
    for name, values in columns.items():
        if name in base.column_names:
            base = base.set_column(base.column_names.index(name), name, values.cast(base.schema.field(name).type))
    return base


def make_folder(path: Path, n: int, layout: str) -> Path:
    """layout 'loose': one file per trial, as 0.2 wrote them; 'parts': as the driver leaves it (compacted)."""
    from sr_search.results import parts
    from sr_search.results.progress import ProgressState, write_progress
    from sr_search.results.study_dir import StudyDir

    if path.exists():
        return path
    folder = StudyDir(path)
    folder.trials.mkdir(parents=True)
    table = rows_table(n)
    # a search (the 0.2 fixture is an ablation: its report would compute effects over every row)
    (path / "study.yaml").write_text("name: driver_scale\nmode: search\nobjectives: {psnr_y: max, throughput: max}\n")
    if layout == "loose":
        for i in range(n):
            pq.write_table(table.slice(i, 1), folder.trials / f"{i:04d}.parquet", write_page_checksum=True)
    else:
        manifest = parts.Manifest()
        for start in range(0, n, 1000):
            chunk = table.slice(start, 1000)
            name = manifest.next_name(folder)
            parts.parts_dir(folder).mkdir(exist_ok=True)
            pq.write_table(chunk, parts.parts_dir(folder) / name, write_page_checksum=True)
            manifest.parts.append({"file": name, "rows": chunk.num_rows,
                                   "trial_ids": chunk.column("trial_id").to_pylist()})
        parts.write_manifest(folder, manifest)
    state = ProgressState.start(n, table.select(["trial_id", "status", "psnr_y", "throughput"]).to_pandas(),
                                OBJECTIVES, None)
    state.end()
    write_progress(folder, state.snapshot())
    return path


# --- one reader per process ---------------------------------------------------------------------------------------

def reader(op: str, folder: str) -> None:
    """Run one read in this process and print its seconds and this process's peak RSS (JSON)."""
    import warnings

    warnings.simplefilter("ignore")
    from sr_search.results.pareto import pareto_front
    from sr_search.results.store import load_results

    path = Path(folder)
    start = time.perf_counter()
    if op == "load_new":
        load_results(path)
    elif op == "load_old":
        old_load_results(path)
    elif op == "status_old":  # 0.2: the full load and the full front
        df = old_load_results(path)
        old_front(df)
    elif op == "pareto_new":
        from sr_search.results.tables import front_text

        front_text(load_results(path), OBJECTIVES)
    elif op == "pareto_old":
        df = old_load_results(path)
        old_front(df)
    elif op == "report_new":
        from sr_search.results.report import write_report

        write_report(path, load_results(path), study_meta={"objectives": OBJECTIVES})
    else:
        raise SystemExit(f"unknown op {op}")
    seconds = time.perf_counter() - start
    _ = pareto_front
    print(json.dumps({"s": seconds, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def timed_process(args: list[str], timeout: float) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"s": float("nan"), "rss_mb": float("nan"), "note": f"> {timeout:.0f} s"}
    wall = time.perf_counter() - start
    last = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""
    if out.returncode != 0:
        return {"s": float("nan"), "rss_mb": float("nan"), "note": out.stderr.strip().splitlines()[-1][:80]}
    try:
        return json.loads(last)
    except ValueError:
        return {"s": wall, "rss_mb": float("nan")}  # a whole command (status): its wall time


def read_op(op: str, folder: Path, timeout: float) -> dict:
    return timed_process([sys.executable, __file__, "_read", op, str(folder)], timeout)


# --- the driver ---------------------------------------------------------------------------------------------------

def driver_cost(folder: Path, n_new: int, prune: bool) -> dict:
    """Seconds per finished trial through the real StudyRecorder (and ParetoHalving), on a study of len(folder)."""
    from sr_search import PRESETS
    from sr_search.results.store import row_to_json, spec_columns
    from sr_search.results.study_dir import StudyDir
    from sr_search.run.timing.cache import TimingCache
    from sr_search.run.tune.halving import ParetoHalving, RungLedger
    from sr_search.run.tune.launch import LinePrinter
    from sr_search.run.tune.recorder import StudyRecorder
    from sr_search.study.config import load_study

    study = load_study(ROOT / "studies" / "smoke.yaml")
    where = StudyDir(folder)
    recorder = StudyRecorder(study, where, TimingCache(where.timing_cache), 10**7, None,
                             show=LinePrinter(lambda _: None))
    spec = PRESETS["rtsrn-x2"]
    arch = spec.to_json()
    template = {**spec_columns(spec), "study": "bench", "seed": 0, "train_iterations": 300, "psnr_y": 30.0,
                "throughput": 100.0, "latency_ms": 10.0, "params_deploy": 1000}
    rng = np.random.default_rng(1)
    first = 10**6  # new trial ids above the study's own
    scheduler = None
    if prune:
        ledger = RungLedger(where)
        scheduler = ParetoHalving(ledger, list(OBJECTIVES.values()), 3, concurrency=256, expected=10**7)
    from ray.tune.experiment import Trial

    trials = []
    controller = SimpleNamespace(get_trials=lambda: trials)
    start = time.perf_counter()
    for k in range(n_new):
        trial_id = f"{first + k:04d}"
        trial = SimpleNamespace(trial_id=f"t{k}", config={"trial_id": trial_id, "arch": arch}, checkpoint=None,
                                error_file=None, status=Trial.RUNNING)
        trials.append(trial)
        recorder.on_trial_start(0, trials, trial)
        for it in (100, 200):
            recorder.on_trial_result(0, trials, trial, {"iteration": it, "psnr_y": 29.0})
        psnr, speed = float(28 + rng.random() * 3), float(10 ** (2 + rng.random()))
        if scheduler is not None:
            decision = scheduler.on_trial_result(controller, trial, {"rung": 100, "rung_point": [psnr, speed]})
            if decision == "PAUSE":
                trial.status = Trial.PAUSED
                row = {**template, "trial_id": trial_id, "status": "pruned", "psnr_y": None, "rung_psnr_y": psnr,
                       "rung": 0, "rung_iterations": 100, "throughput": speed}
                recorder.on_trial_result(0, trials, trial, {"rung_row": row_to_json(row), "iteration": 100})
                chosen = scheduler.choose_trial_to_run(controller)  # a slot is free: the rule is asked
                if chosen is not None:
                    chosen.status = Trial.RUNNING
                recorder.on_trial_complete(0, trials, trial)
                trial.status = Trial.TERMINATED
                continue
        row = {**template, "trial_id": trial_id, "status": "complete", "psnr_y": psnr, "throughput": speed}
        recorder.on_trial_result(0, trials, trial, {"row": row_to_json(row), "iteration": 300})
        recorder.on_trial_complete(0, trials, trial)
        trial.status = Trial.TERMINATED
        if scheduler is not None:
            scheduler.choose_trial_to_run(controller)
    per_trial = (time.perf_counter() - start) / n_new
    return {"per_trial_s": per_trial}


def old_driver_snapshot_cost(folder: Path) -> float:
    """0.2's dominant per-trial cost: the front of every complete row, rebuilt at each of ~6 updates per trial."""
    from sr_search.results.progress import ProgressState
    from sr_search.results.store import load_results

    rows = load_results(folder, columns=["psnr_y", "throughput"])
    state = ProgressState.start(len(rows), rows, OBJECTIVES, None)
    start = time.perf_counter()
    old_snapshot(state.rows)
    return 6 * (time.perf_counter() - start)


def halving_decision(at_rung: int, old: bool) -> float:
    """One choose_trial_to_run with 2/3 of a rung of `at_rung` paused (new), or 0.2's cost for it (one ranking per
    paused trial: measured for one ranking, times the paused trials)."""
    from sr_search.run.halving import promotable

    rng = np.random.default_rng(2)
    table = {f"{i:05d}": [float(28 + rng.random() * 3), float(10 ** (2 + rng.random()))] for i in range(at_rung)}
    if old:
        import sr_search.run.halving as rule

        real = rule.nondominated_ranks
        rule.nondominated_ranks = old_matrix_ranks
        try:
            start = time.perf_counter()
            promotable(table, ["max", "max"], 3)
            one = time.perf_counter() - start
        finally:
            rule.nondominated_ranks = real
        return one * (2 * at_rung // 3)
    from ray.tune.experiment import Trial

    from sr_search.results.study_dir import StudyDir
    from sr_search.run.tune.halving import ParetoHalving, RungLedger

    with tempfile.TemporaryDirectory() as tmp:
        ledger = RungLedger(StudyDir(tmp))
        ledger.rungs[100] = dict(table)
        ledger.versions[100] = 1
        scheduler = ParetoHalving(ledger, ["max", "max"], 3, concurrency=10**6, expected=10**9)
        trials = []
        for k, trial_id in enumerate(table):
            trial = SimpleNamespace(trial_id=f"t{k}", config={"trial_id": trial_id},
                                    status=Trial.PAUSED if k % 3 else Trial.TERMINATED)
            if k % 3:
                scheduler.waiting[trial.trial_id] = 100
            trials.append(trial)
        ledger.promote = lambda trial_id, rung: None  # measure the decision, not the ledger's file writes
        controller = SimpleNamespace(get_trials=lambda: trials)
        scheduler.choose_trial_to_run(controller)  # the one ranking after the rung changed
        ledger.versions[100] += 1
        start = time.perf_counter()
        scheduler.choose_trial_to_run(controller)
        return time.perf_counter() - start


def timing_cache_put(n: int, old: bool) -> float:
    """Seconds for one put into a cache of n entries: 0.2 rewrote the file; now a journal line."""
    from sr_search.run.timing.cache import TimingCache
    from sr_search.run.timing.result import Timing
    from sr_search.study.protocols import PROTOCOLS

    protocol = PROTOCOLS["cpu"]
    timing = Timing(protocol="cpu", device_name="cpu", precision="fp32", batch=1, input_shape=(1, 3, 8, 8),
                    output_shape=(1, 3, 16, 16), exclusive=True, reps=3, latency_ms=1.0, latency_ms_p90=1.1,
                    latency_ms_mean=1.0, throughput=1000.0, mpix_per_s=0.3, peak_mem_mb=0.0)
    with tempfile.TemporaryDirectory() as tmp:
        cache = TimingCache(Path(tmp) / "timing_cache.parquet")
        row = {**timing.model_dump(), "deploy_key": "", "protocol_key": protocol.fingerprint(), "timed_at": ""}
        cache._rows = {(f"k{i}", "cpu", "cpu"): {**row, "deploy_key": f"k{i}"} for i in range(n)}
        cache._write()
        k, start = 20, time.perf_counter()
        for i in range(k):
            if old:
                cache._rows[(f"new{i}", "cpu", "cpu")] = {**row, "deploy_key": f"new{i}"}
                cache._write()
            else:
                cache.put(f"new{i}", protocol, timing)
        return (time.perf_counter() - start) / k


def tpe_ask(n: int, old: bool) -> float:
    import optuna

    from sr_search.run.tune.searcher import RecentTPESampler

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rng = np.random.default_rng(0)
    dists = {"block": optuna.distributions.CategoricalDistribution(["rep", "ecb", "rlfb", "esdb"]),
             "channels": optuna.distributions.IntDistribution(8, 64, step=8),
             "depth": optuna.distributions.IntDistribution(1, 16)}
    sampler = optuna.samplers.TPESampler(seed=0) if old else RecentTPESampler(seed=0)
    study = optuna.create_study(directions=["maximize", "maximize"], sampler=sampler)
    study.add_trials([optuna.trial.create_trial(
        params={"block": "rep", "channels": int(rng.integers(1, 9)) * 8, "depth": int(rng.integers(1, 17))},
        distributions=dists, values=[float(rng.normal(28, 1)), float(rng.normal(100, 30))]) for _ in range(n)])
    k, start = 3, time.perf_counter()
    for _ in range(k):
        trial = study.ask()
        trial.suggest_categorical("block", ["rep", "ecb", "rlfb", "esdb"])
        trial.suggest_int("channels", 8, 64, step=8)
        trial.suggest_int("depth", 1, 16)
        study.tell(trial, [28.0, 100.0])
    return (time.perf_counter() - start) / k


def kernel(n: int, old: bool) -> float:
    from sr_search.results.pareto import nondominated_ranks

    points = np.random.default_rng(3).integers(0, 200, size=(n, 2)).astype(float)
    start = time.perf_counter()
    (old_matrix_ranks if old else nondominated_ranks)(points)
    return time.perf_counter() - start


# --- the table ----------------------------------------------------------------------------------------------------

def fmt(value: float, unit: str = "s") -> str:
    if value is None or value != value:
        return "-"
    if unit == "s":
        return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"
    return f"{value:.0f} MB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--old-max", type=int, default=1000, help="run 0.2's paths only up to this many rows")
    parser.add_argument("--new-trials", type=int, default=300, help="simulated trials fed to the driver per size")
    parser.add_argument("--timeout", type=float, default=900.0, help="per reader process")
    parser.add_argument("--keep", type=Path, default=None, help="build study folders here and keep them")
    parser.add_argument("--skip-report", action="store_true")
    args = parser.parse_args()
    base = args.keep or Path(tempfile.mkdtemp(prefix="driver_scale_"))
    base.mkdir(parents=True, exist_ok=True)
    rows = []

    def line(what: str, n: int, old: float | None, new: float | None, unit: str = "s", note: str = "") -> None:
        ratio = f"{old / new:,.0f}x" if old and new and old == old and new == new and new > 0 else ""
        rows.append((what, n, fmt(old, unit), fmt(new, unit), ratio, note))
        print(f"| {what} | {n:,} | {fmt(old, unit)} | {fmt(new, unit)} | {ratio} | {note} |", flush=True)

    print("| operation | n | 0.2 | now | ratio | note |\n|---|---|---|---|---|---|", flush=True)
    for n in args.sizes:
        old_ok = n <= args.old_max
        loose = make_folder(base / f"loose_{n}", n, "loose") if old_ok else None
        compacted = make_folder(base / f"parts_{n}", n, "parts")
        new_load = read_op("load_new", compacted, args.timeout)
        old_load = read_op("load_old", loose, args.timeout) if old_ok else {}
        line("load_results", n, old_load.get("s"), new_load["s"])
        line("load_results peak RSS", n, old_load.get("rss_mb"), new_load["rss_mb"], unit="MB")
        if old_ok:
            line("load_results of a 0.2 folder (loose files)", n, old_load.get("s"),
                 read_op("load_new", loose, args.timeout)["s"])
        status_new = timed_process([str(Path(sys.executable).parent / "sr-search"), "status", str(compacted)],
                                   args.timeout)
        status_old = read_op("status_old", loose, args.timeout) if old_ok else {}
        line("status (0.2: load + front in-process; now: the whole command)", n, status_old.get("s"),
             status_new["s"])
        pareto_old = read_op("pareto_old", loose, args.timeout) if old_ok else {}
        line("pareto (load + front)", n, pareto_old.get("s"), read_op("pareto_new", compacted, args.timeout)["s"])
        if not args.skip_report:
            report = read_op("report_new", compacted, args.timeout)
            line("report (now only)", n, None, report["s"], note=f"peak {fmt(report['rss_mb'], 'MB')}")
        line("nondominated_ranks (2 objectives)", n, kernel(n, True) if old_ok else None, kernel(n, False))
        line("progress snapshots per finished trial (6 in 0.2)", n,
             old_driver_snapshot_cost(compacted) if old_ok else None, None, note="now O(running), kept per row")
        for prune in (False, True):
            work = base / f"driver_{n}_{int(prune)}"
            shutil.rmtree(work, ignore_errors=True)
            shutil.copytree(compacted, work)
            cost = driver_cost(work, args.new_trials, prune)["per_trial_s"]
            line(f"driver per finished trial{' (pruning, rung of 300+)' if prune else ''}", n, None, cost,
                 note=f"sustainable {1 / cost:,.0f} trials/s")
            shutil.rmtree(work, ignore_errors=True)
        line("halving decision, 2/3 of a rung paused", min(n, 1000), halving_decision(min(n, 1000), True),
             halving_decision(min(n, 1000), False), note="0.2: one ranking x paused trials")
        line("TimingCache.put", n, timing_cache_put(n, True), timing_cache_put(n, False))
        line("Optuna TPE ask+tell (in memory)", n, tpe_ask(n, True) if n <= 10000 else None, tpe_ask(n, False),
             note="now: last 1,000 trials")
    if args.keep is None:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "_read":
        reader(sys.argv[2], sys.argv[3])
    else:
        main()
