"""Wall time of a study through the real orchestrator (local Ray cluster, Optuna SQLite storage, Tune trials)
vs the very same trials run in a plain loop in one process, measured side by side in one run.

    python bench/orchestration_overhead.py [--study studies/smoke.yaml]

Rows: launch with concurrency 1 and with concurrency 2 (2 trials at once on this machine's cores), each against
the plain loop over the same candidates and seeds (taken from the launched study's rows, same budgets); first with
the Ray instance that `launch` starts and stops (what `sr-search launch` does), then joined to a Ray instance that
is already running (what a cluster user sees), which separates Ray's start-up and shutdown from the per-trial cost.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import ray
import torch

from sr_search import ArchSpec, launch, load_results, load_study
from sr_search.run.trial import TrialTask, run_trial
from sr_search.study.config import with_overrides


def _launch(study, out: Path) -> float:
    start = time.perf_counter()
    launch(study, out_dir=out, echo=lambda _: None)
    return time.perf_counter() - start


def _plain_loop(study, rows, out: Path) -> float:
    torch.set_num_threads(max(1, int(study.resources.cpus_per_trial)))
    start = time.perf_counter()
    for row in rows:
        task = TrialTask(trial_id=row["trial_id"], spec=ArchSpec.from_json(row["arch_json"]), seed=int(row["seed"]))
        run_trial(task, study, device=torch.device("cpu"), exclusive_timing=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default="studies/smoke.yaml")
    args = parser.parse_args()
    base = load_study(args.study)
    print(f"study {base.name}: {base.n_trials if base.mode == 'search' else 'grid'} trials, "
          f"{base.train.iterations} iterations each, CPU")
    print(f"{'Ray':>16s} {'concurrency':>11s} {'launch s':>9s} {'plain loop s':>13s} {'ratio':>6s}  statuses")
    launched: dict[tuple[str, int], float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for ray_mode in ("started by launch", "already running"):
            if ray_mode == "already running":
                ray.init(num_cpus=os.cpu_count(), include_dashboard=False, configure_logging=False,
                         log_to_driver=False)
            for concurrency in (1, 2):
                study = with_overrides(base, resources={"concurrency": concurrency})
                run_dir = Path(tmp) / f"launch{concurrency}-{len(launched)}"
                t_launch = launched[ray_mode, concurrency] = _launch(study, run_dir)
                rows = load_results(run_dir).to_dict("records")
                t_plain = _plain_loop(study, rows, Path(tmp) / f"plain{concurrency}")
                statuses = ",".join(sorted({r["status"] for r in rows}))
                print(f"{ray_mode:>16s} {concurrency:11d} {t_launch:9.1f} {t_plain:13.1f} "
                      f"{t_launch / t_plain:6.2f}  {statuses}")
        ray.shutdown()
    fixed = [launched["started by launch", c] - launched["already running", c] for c in (1, 2)]
    print(f"Ray start-up and shutdown in a launch: {fixed[0]:.1f} s (concurrency 1), {fixed[1]:.1f} s (concurrency 2)")

if __name__ == "__main__":
    main()
