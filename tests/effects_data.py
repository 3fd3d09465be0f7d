"""Synthetic ablation results with known effects and known noise (shared by the effects tests).

A trial's PSNR-Y is base + true effect + a seed's shared shift (what the same data order does to every variant)
+ its own noise, so the truth every interval should cover is known exactly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

#: the base's value of every factor the tests vary (RepSR-M4C16-like)
BASE = {"branch_form": "c3_bn_c1", "bn": True, "width_mult": 2.0, "branches": 2, "residual": "clean",
        "frozen_bn": 0.9, "channels": 16}
BASE_PSNR = 27.5


def row(trial: int, factor: str, level: Any, over: Mapping[str, Any], seed: int, psnr: float,
        status: str = "complete", deploy_key: str = "d-base", params: int = 11840) -> dict[str, Any]:
    """One trial's row as the runner writes it (level as text, the spec's fields as their own columns)."""
    done = status == "complete"
    return {
        "study": "synthetic", "trial_id": f"{trial:04d}", "status": status,
        "error": None if done else "RuntimeError: diverged", **BASE, **over, "scale": 4,
        "arch_key": f"a-{factor}-{level}", "deploy_key": deploy_key, "baseline": None, "factor": factor,
        "level": None if factor == "base" else str(level), "seed": seed,
        "psnr_y": psnr if done else np.nan, "bicubic_psnr_y": 27.155,
        "throughput": 76.0 if done else np.nan, "latency_ms": 13.1 if done else np.nan,
        "latency_ms_p90": 13.4 if done else np.nan, "params_deploy": params, "train_seconds": 30.0,
        "timing_exclusive": True,
    }


def one_at_a_time(effects: Mapping[str, Mapping[Any, float]], *, seeds: Sequence[int] = (0, 1, 2),
                  base_seeds: Sequence[int] | None = None, sd: float = 0.03, seed_sd: float = 0.0,
                  rng: np.random.Generator | None = None) -> pd.DataFrame:
    """The base at `base_seeds` (default `seeds`), then every (factor, level) at every seed, in the runner's
    order; `effects[factor][level]` is the true effect in dB."""
    rng = rng if rng is not None else np.random.default_rng(0)
    base_seeds = tuple(base_seeds if base_seeds is not None else seeds)
    shift = {s: rng.normal(0, seed_sd) for s in sorted({*seeds, *base_seeds})}
    rows = []
    for s in base_seeds:
        rows.append(row(len(rows), "base", None, {}, s, BASE_PSNR + shift[s] + rng.normal(0, sd)))
    for factor, levels in effects.items():
        for level, true in levels.items():
            for s in seeds:
                rows.append(row(len(rows), factor, level, {factor: level}, s,
                                BASE_PSNR + true + shift[s] + rng.normal(0, sd)))
    return pd.DataFrame(rows)


def factorial(levels: Mapping[str, Sequence[Any]], truth: Mapping[tuple[Any, ...], float], *,
              seeds: Sequence[int] = (0, 1, 2), sd: float = 0.03, seed_sd: float = 0.0,
              rng: np.random.Generator | None = None) -> pd.DataFrame:
    """A full factorial: every combination of `levels` (the first combination of BASE's values is the base);
    `truth[combo]` is each cell's true mean minus the base's."""
    rng = rng if rng is not None else np.random.default_rng(0)
    names = list(levels)
    shift = {s: rng.normal(0, seed_sd) for s in seeds}
    combos = [()]
    for name in names:
        combos = [(*c, v) for c in combos for v in levels[name]]
    base = tuple(BASE[n] for n in names)
    combos = [base] + [c for c in combos if c != base]
    rows = []
    for combo in combos:
        factor = "base" if combo == base else "factorial"
        level = tuple(zip(names, combo, strict=True))
        for s in seeds:
            psnr = BASE_PSNR + truth.get(combo, 0.0) + shift[s] + rng.normal(0, sd)
            rows.append(row(len(rows), factor, level, dict(zip(names, combo, strict=True)), s, psnr))
    return pd.DataFrame(rows)
