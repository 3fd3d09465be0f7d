"""Wall time of a study through the real orchestrator (local Ray cluster, Optuna SQLite storage, Tune trials)
vs the very same trials run in a plain loop in one process, measured side by side in one run.

    python bench/orchestration_overhead.py [--study studies/smoke.yaml]

Rows: launch with concurrency 1 and with concurrency 2 (2 trials at once on this machine's cores), each against
the plain loop over the same candidates and seeds (taken from the launched study's rows, same budgets).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

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
    print(f"{'concurrency':>11s} {'launch s':>9s} {'plain loop s':>13s} {'ratio':>6s}  statuses")
    with tempfile.TemporaryDirectory() as tmp:
        for concurrency in (1, 2):
            study = with_overrides(base, resources={"concurrency": concurrency})
            run_dir = Path(tmp) / f"launch{concurrency}"
            t_launch = _launch(study, run_dir)
            rows = load_results(run_dir).to_dict("records")
            t_plain = _plain_loop(study, rows, Path(tmp) / f"plain{concurrency}")
            statuses = ",".join(sorted({r["status"] for r in rows}))
            print(f"{concurrency:11d} {t_launch:9.1f} {t_plain:13.1f} {t_launch / t_plain:6.2f}  {statuses}")


if __name__ == "__main__":
    main()
