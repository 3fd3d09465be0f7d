"""Search efficiency of Pareto-safe successive halving (issue 15), on this machine's CPU and the built-in images.

One fixed list of candidates (random sampler, fixed seed) from a small x2 space over every block family is run
(a) at the full budget and (b) with successive halving, both through `sr-search launch`; then (c) successive halving
with about (a)'s wall time and more candidates from the same sampler. Printed side by side: training iterations and
wall time, the hypervolume of each final front relative to (a)'s (full-budget PSNR-Y vs latency, one reference
from (a)'s rows by the rule the report and `compare` use, `pareto.hypervolume_reference`: bicubic PSNR-Y, and the
worst latency + 10% of the range), how many of (a)'s front members (b) kept, and the Kendall
tau between PSNR at each rung's budget and full-budget PSNR over (a)'s candidates. Then (d): from (a)'s recorded
validation curves, the stop/continue decisions of four rules replayed at the same rungs: ours (non-dominated rank,
crowding distance), single-objective ASHA on PSNR (Ray Tune's), Syne Tune's multi-objective ASHA (non-dominated rank,
epsilon-net order within a front, seeded at the first objective) and random stopping at the same budget.

    python bench/search_efficiency.py                    # the full run (36 min on 2 cores)
    python bench/search_efficiency.py --keep runs/bench --full-only     # (a) and the replayed settings only
    python bench/search_efficiency.py --keep runs/bench --min-iterations 180 --reduction-factor 2   # reuses (a)
    python bench/search_efficiency.py --keep runs/bench      # again: reuses every finished run, prints the tables
    python bench/search_efficiency.py --candidates 6 --iterations 180 --min-iterations 20   # a quick check
"""

from __future__ import annotations

import argparse
import json
import math
import random
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import kendalltau

from sr_search import launch, load_results, load_study
from sr_search.results.pareto import HypervolumeReference, hypervolume_reference, pareto_front, study_hypervolume
from sr_search.run.halving import promotable, promotion_order

OBJECTIVES = {"psnr_y": "max", "latency_ms": "min"}
#: (a) validates every gcd(min_iterations, SWEEP_STEP) iterations, so the replays can stop at the rungs of every
#: setting they try (min_iterations 60 to 540, multiples of 60, x reduction factor 2 and 3)
SWEEP_STEP = 60

SPACE = """\
description: a small x2 space over every block family (issue 15 benchmark)
params:
  scale: 2
  colors: 3
  channels: {low: 8, high: 32, step: 8}
  depth: {low: 2, high: 6}
  activation: [relu, prelu, lrelu, silu]
  global_skip: [nearest, none]
blocks:
  rep: {branches: [1, 2], width_mult: [1.0, 2.0]}
  ecb: {with_idt: [true, false]}
  rlfb: {esa_channels: [8, 16], long_skip: true}
  esdb: {esa_channels: [8], long_skip: true}
  eresidual: {groups: [1, 2, 4], fusion: [none, cascade]}
  plain: {}
  span: {depth: {low: 1, high: 4}}
"""


def study_text(name: str, n: int, iterations: int, val_every: int, concurrency: int, pruning: str) -> str:
    return (f"name: {name}\nspace: space.yaml\nsampler: random\nseed: 7\nn_trials: {n}\n"
            f"objectives: {{psnr_y: max, latency_ms: min}}\ntiming: cpu\n"
            f"train: {{iterations: {iterations}, batch_size: 8, lr_patch: 32, lr: 0.002, val_every: {val_every}}}\n"
            f"data: {{val_max_size: 128}}\nresources: {{concurrency: {concurrency}, gpus_per_trial: 0}}\n{pruning}")


def run(folder: Path, name: str, text: str) -> tuple[pd.DataFrame, float]:
    """Launch one study and time it; a finished run of the same study in `folder` (--keep) is reused."""
    seconds = folder / f"{name}.seconds"
    if seconds.exists() and (folder / f"{name}.yaml").read_text() == text:
        return load_results(folder / name), float(seconds.read_text())
    (folder / f"{name}.yaml").write_text(text)
    start = time.perf_counter()
    out = launch(load_study(folder / f"{name}.yaml"), out_dir=folder / name, echo=lambda _: None)
    seconds.write_text(str(time.perf_counter() - start))
    return load_results(out), float(seconds.read_text())


def ratio(a: float, b: float) -> float:
    return a / b if b > 0 else math.nan


def hypervolume(df: pd.DataFrame, reference: HypervolumeReference) -> float:
    return study_hypervolume(df, OBJECTIVES, reference)


def curves(df: pd.DataFrame) -> dict[str, dict[int, float]]:
    """Each complete candidate's validation PSNR by iteration (recorded in its row)."""
    return {r.trial_id: {int(i): float(p) for i, p in json.loads(r.val_curve)}
            for r in df[df["status"] == "complete"].itertuples() if isinstance(r.val_curve, str)}


# --- the replayed rules: each orders the candidates at a rung, best first ----------------------------------------


def order_ours(points: dict[str, tuple[float, float]]) -> list[str]:
    return promotion_order(points, list(OBJECTIVES.values()))


def order_asha_psnr(points: dict[str, tuple[float, float]]) -> list[str]:
    return sorted(points, key=lambda k: (-points[k][0], k))


def order_moasha_epsnet(points: dict[str, tuple[float, float]]) -> list[str]:
    """Syne Tune's MO-ASHA sort, from its documentation: peel non-dominated fronts; within a front, start at the point
    best in the first objective, then repeatedly take the point farthest (Euclidean, raw values) from those taken."""
    ids = sorted(points)
    values = {k: np.array([-points[k][0], points[k][1]]) for k in ids}  # minimise both
    remaining, order = list(ids), []
    while remaining:
        front = [a for a in remaining
                 if not any((values[b] <= values[a]).all() and (values[b] < values[a]).any() for b in remaining)]
        chosen = [min(front, key=lambda k: (values[k][0], k))]
        rest = [k for k in front if k not in chosen]
        while rest:
            far = max(rest, key=lambda k: (min(np.linalg.norm(values[k] - values[c]) for c in chosen), k))
            chosen.append(far)
            rest.remove(far)
        order += chosen
        remaining = [k for k in remaining if k not in front]
    return order


def replay(rule, rung_psnr: dict[str, dict[int, float]], cost: dict[str, float], rungs: list[int], rf: int,
           rng: random.Random | None = None) -> tuple[list[str], int]:
    """Synchronous successive halving on recorded curves: at each rung the top 1/rf (at least one) by `rule` continue;
    ours adds the rung's whole first front (the rung is complete), random stopping keeps as many as ours. Returns the
    candidates that reach the full budget and the iterations spent."""
    alive, spent = sorted(rung_psnr), 0
    previous = 0
    for rung in rungs[:-1]:
        spent += (rung - previous) * len(alive)
        previous = rung
        points = {k: (rung_psnr[k][rung], cost[k]) for k in alive}
        keep = max(1, len(alive) // rf)
        if rule is order_ours:  # ours keeps the quota and, the rung being complete, its whole first front
            alive = promotable(points, list(OBJECTIVES.values()), rf, complete=True)
        elif rng is not None:  # random stopping keeps as many as ours at this rung
            alive = sorted(rng.sample(alive, len(promotable(points, list(OBJECTIVES.values()), rf, complete=True))))
        else:
            alive = rule(points)[:keep]
    spent += (rungs[-1] - previous) * len(alive)
    return alive, spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--candidates", type=int, default=18)
    parser.add_argument("--iterations", type=int, default=1620)
    parser.add_argument("--min-iterations", type=int, default=60)
    parser.add_argument("--reduction-factor", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--keep", type=Path, default=None,
                        help="keep the study folders here; a run this folder already holds (same study) is reused")
    parser.add_argument("--full-only", action="store_true", help="run (a) and the replays only")
    args = parser.parse_args()
    n, full, m, rf = args.candidates, args.iterations, args.min_iterations, args.reduction_factor
    pruning = f"pruning: {{min_iterations: {m}, reduction_factor: {rf}}}\n"
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "space.yaml").write_text(SPACE)
        every = math.gcd(m, SWEEP_STEP)
        full_df, full_s = run(folder, "a_full", study_text("a_full", n, full, every, args.concurrency, ""))
        if args.full_only:
            halved_df, halved_s, more_df, more_s = full_df[:0], math.nan, full_df[:0], math.nan
        else:
            setting = folder / f"m{m}_rf{rf}"  # (b) and (c) of each pruning setting in a folder of their own
            setting.mkdir(exist_ok=True)
            (setting / "space.yaml").write_text(SPACE)
            halved_df, halved_s = run(setting, "b_halving", study_text("b_halving", n, full, 0, args.concurrency,
                                                                       pruning))
            more = max(n + 1, int(n * full_s / max(halved_s, 1e-9)))
            more_df, more_s = run(setting, "c_halving_more", study_text("c_halving_more", more, full, 0,
                                                                        args.concurrency, pruning))
    rungs = load_study_rungs(m, rf, full)
    complete = full_df[full_df["status"] == "complete"]
    reference = hypervolume_reference(full_df, OBJECTIVES)  # (a)'s: one reference for every run
    hv_a = hypervolume(full_df, reference)
    front_a = set(pareto_front(full_df, OBJECTIVES)["trial_id"])
    kept = front_a & set(halved_df.loc[halved_df["status"] == "complete", "trial_id"])

    def iters(df: pd.DataFrame) -> int:
        return int(df["train_iterations"].fillna(0).sum())

    print(f"{n} candidates, full budget {full} iterations, rungs {rungs}, reduction factor {rf}, concurrency "
          f"{args.concurrency}; HV reference: {reference.text()}")
    print(f"{'run':28s} {'candidates':>10s} {'iterations':>11s} {'ratio':>6s} {'wall s':>8s} {'ratio':>6s} "
          f"{'HV / HV(a)':>10s}")
    for label, df, wall in (("(a) full budget", full_df, full_s), ("(b) successive halving", halved_df, halved_s),
                            ("(c) halving, (a)'s wall time", more_df, more_s)):
        if len(df):
            print(f"{label:28s} {len(df):10d} {iters(df):11d} {iters(df) / iters(full_df):6.2f} {wall:8.0f} "
                  f"{wall / full_s:6.2f} {ratio(hypervolume(df, reference), hv_a):10.3f}")
    if len(halved_df):
        print(f"(b) kept {len(kept)} of (a)'s {len(front_a)} front members")

    psnr_at = curves(full_df)
    final = {k: float(v) for k, v in zip(complete["trial_id"], complete["psnr_y"])}
    print("\nrank correlation of PSNR-Y at each rung with full-budget PSNR-Y, over (a)'s candidates")
    for rung in rungs[:-1]:
        ids = [k for k in final if rung in psnr_at.get(k, {})]
        tau = kendalltau([psnr_at[k][rung] for k in ids], [final[k] for k in ids]).statistic
        print(f"  rung {rung:5d} iterations: Kendall tau {tau:.3f} over {len(ids)} candidates")

    cost = {k: float(v) for k, v in zip(complete["trial_id"], complete["latency_ms"])}
    print("\nreplayed on (a)'s curves (synchronous halving): HV kept of (a)'s @ iterations as a share of (a)'s; "
          "target: HV >= 0.95 for <= 0.5 of the iterations")
    print(f"{'min_it':>6s} {'rf':>3s} {'rungs':16s} {'ours':>11s} {'ASHA (PSNR)':>11s} {'MO-ASHA':>11s} "
          f"{'random':>11s}")
    settings = sorted({(m, rf), *((mi, f) for mi in (60, 120, 180, 240, 360, 540) for f in (2, 3)
                                  if mi * f <= full)})
    for mi, f in settings:
        sweep = load_study_rungs(mi, f, full)
        usable = {k: psnr_at[k] for k in final if all(r in psnr_at.get(k, {}) for r in sweep[:-1])}
        points = complete.set_index("trial_id").loc[list(usable)]
        total = len(usable) * full

        def kept_hv(ids: list[str], points: pd.DataFrame = points) -> float:
            return ratio(hypervolume(points.loc[ids].reset_index(), reference), hv_a)

        cells = []
        for rule in (order_ours, order_asha_psnr, order_moasha_epsnet):
            survivors, spent = replay(rule, usable, cost, sweep, f)
            cells.append(f"{kept_hv(survivors):.3f}@{spent / total:.2f}")
        draws = [replay(None, usable, cost, sweep, f, random.Random(seed)) for seed in range(200)]
        cells.append(f"{np.mean([kept_hv(d) for d, _ in draws]):.3f}@{np.mean([s for _, s in draws]) / total:.2f}")
        print(f"{mi:6d} {f:3d} {','.join(map(str, sweep[:-1])):16s} " + " ".join(f"{c:>11s}" for c in cells))


def load_study_rungs(m: int, rf: int, full: int) -> list[int]:
    from sr_search.study.model import Pruning

    return Pruning(min_iterations=m, reduction_factor=rf).rungs(full)


if __name__ == "__main__":
    main()
