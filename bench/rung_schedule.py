"""The learning-rate schedule across successive-halving rungs (issue 15, item 3), measured side by side.

A candidate paused at a rung and promoted continues from its model and optimizer state. Two ways to run the cosine
schedule across rungs:
  budget   one cosine over the full budget; a promoted candidate continues where the schedule stands, so its
           final state is the one an unpaused full-budget run reaches (what sr-search does)
  segment  the cosine restarts in every segment and anneals to 0 at each rung (SGDR-style), so each rung's PSNR is
           measured on a converged-looking model
For the same candidates (the search-efficiency space, random draws with fixed seeds) this prints, per schedule and
rung, the Kendall tau between PSNR at the rung and the full-budget PSNR of an unpaused run (how well the rung ranks
what matters), and the mean full-budget PSNR each schedule reaches (what promoted candidates end with).

    python bench/rung_schedule.py                       # 8 candidates, 1620 iterations, rungs 60/180/540 (~10 min)
    python bench/rung_schedule.py --candidates 3 --iterations 180 --min-iterations 20   # a quick check
"""

from __future__ import annotations

import argparse
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from scipy.stats import kendalltau
from search_efficiency import SPACE

from sr_search import build
from sr_search.run import data as data_mod
from sr_search.run import metrics, train
from sr_search.study.settings import DataSpec, TrainBudget
from sr_search.study.space import RandomTrial
from sr_search.study.space_file import load_space


def rungs_of(min_iterations: int, factor: int, iterations: int) -> list[int]:
    rungs, budget = [], min_iterations
    while budget < iterations:
        rungs.append(budget)
        budget *= factor
    return rungs


def train_one(args: tuple) -> dict:
    """One candidate under one schedule: PSNR-Y at every rung and at the full budget."""
    spec, anneal, rungs, budget = args
    torch.set_num_threads(1)
    data_spec = DataSpec(val_max_size=128)
    train_data = data_mod.load_train(data_spec, spec.scale, spec.colors)
    val_sets = data_mod.load_val(data_spec, spec.scale, spec.colors)
    torch.manual_seed(0)
    model = build(spec)

    def psnr() -> float:
        model.eval()
        value = metrics.evaluate(model, val_sets, spec.scale, spec.colors, "cpu")["psnr_y"]
        model.train()
        return value

    trainer = train.Trainer(model, train_data, budget, seed=0, anneal=anneal)
    at = {}
    start = time.perf_counter()
    for rung in [*rungs, budget.iterations]:
        result = trainer.run_until(rung)
        at[rung] = psnr() if result.status == "complete" else float("nan")
    return {"anneal": anneal, "key": spec.arch_key(), "psnr": at, "seconds": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--candidates", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=1620)
    parser.add_argument("--min-iterations", type=int, default=60)
    parser.add_argument("--reduction-factor", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "space.yaml").write_text(SPACE)
        space = load_space(Path(tmp) / "space.yaml")
    specs, seed = [], 0
    while len(specs) < args.candidates:  # distinct candidates that train on 32-pixel patches
        spec = space.sample(RandomTrial(seed))
        seed += 1
        try:
            data_mod.check_patch(spec, 32)
        except Exception:  # noqa: BLE001 - a draw this budget cannot train; take the next one
            continue
        if spec.arch_key() not in {s.arch_key() for s in specs}:
            specs.append(spec)
    budget = TrainBudget(iterations=args.iterations, batch_size=8, lr_patch=32, lr=0.002)
    rungs = rungs_of(args.min_iterations, args.reduction_factor, args.iterations)
    jobs = [(spec, anneal, rungs, budget) for spec in specs for anneal in ("budget", "segment")]
    with ProcessPoolExecutor(args.workers) as pool:
        results = list(pool.map(train_one, jobs))
    by = {(r["anneal"], r["key"]): r for r in results}
    keys = [s.arch_key() for s in specs]
    truth = [by["budget", k]["psnr"][args.iterations] for k in keys]  # an unpaused full-budget run ends here
    print(f"{len(specs)} candidates ({', '.join(sorted({s.block for s in specs}))}), x2, {args.iterations} "
          f"iterations, rungs {', '.join(map(str, rungs))}; tau vs the full-budget PSNR of an unpaused run")
    print(f"{'schedule':>8s} " + " ".join(f"{'tau@' + str(r):>9s}" for r in rungs) + f" {'final dB':>9s} "
          f"{'vs budget':>10s} {'seconds':>8s}")
    for anneal in ("budget", "segment"):
        taus = [kendalltau([by[anneal, k]["psnr"][r] for k in keys], truth).statistic for r in rungs]
        final = [by[anneal, k]["psnr"][args.iterations] for k in keys]
        seconds = sum(by[anneal, k]["seconds"] for k in keys)
        print(f"{anneal:>8s} " + " ".join(f"{t:9.3f}" for t in taus) + f" {np.nanmean(final):9.3f} "
              f"{np.nanmean(np.subtract(final, truth)):+10.3f} {seconds:8.0f}")


if __name__ == "__main__":
    main()
