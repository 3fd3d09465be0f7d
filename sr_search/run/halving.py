"""Pareto-safe successive halving: which candidates continue at a rung, decided on (quality so far, exact cost).

Every cost objective (throughput, latency, params, MACs) depends only on the deployed network, so it is known
exactly before training; only quality (PSNR, SSIM, their gains) depends on the budget. At a rung, the candidates that
reached it are ranked by non-dominated sorting on the study's objectives, quality at this rung and cost exact, and
the top 1/reduction_factor continue (asynchronously, as ASHA: a candidate that is in the top share of what has
reached its rung so far continues at once; the others wait, and are promoted when enough candidates arrive behind
them). Once the rung is complete (nothing more will arrive), every waiting candidate on its first front continues
too, however many that is: a candidate that nothing beats on every objective at its rung is never stopped. The
quota alone keeps 1 in reduction_factor**k to the full budget, too few for a front in a study of tens of candidates
(bench/search_efficiency.py, replayed on 18 candidates with rungs at 1/27, 1/9 and 1/3 of the budget: the quota
alone, with either ASHA's or MO-ASHA's order, kept 0.90 of the hypervolume; with the front kept, 0.95 for 0.26 of
the iterations).

Order within a front: crowding distance (NSGA-II), largest first, each objective's extremes infinite; so the fastest
candidate of the first front, and the best one, always come first: a candidate that owns a fast corner of the front
is never stopped because slower ones have more PSNR at the first rung. Ties: the earlier trial first. A candidate with
a missing value (failed evaluation) comes last.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ..results.pareto import crowding_distance, nondominated_ranks


Point = Sequence[float]


def promotion_order(points: Mapping[str, Point], directions: Sequence[str]) -> list[str]:
    """Candidate ids best first: by non-dominated front, then crowding distance (largest first), then id."""
    return [trial_id for trial_id, _ in _ranked(points, directions)]


def promotable(points: Mapping[str, Point], directions: Sequence[str], reduction_factor: int,
               *, complete: bool = False) -> list[str]:
    """The candidates at a rung that may continue: the top floor(n / rf) of the n that reached it so far (ASHA), or,
    once the rung is complete (nothing more will arrive), at least one and the whole first front."""
    ranked = _ranked(points, directions)
    keep = len(points) // reduction_factor
    if complete:
        keep = max(1, keep, sum(front == 0 for _, front in ranked))
    return [trial_id for trial_id, _ in ranked[:keep]]


def _ranked(points: Mapping[str, Point], directions: Sequence[str]) -> list[tuple[str, float]]:
    """(id, front index) best first; a candidate with a missing value has front inf and comes last."""
    ids = sorted(points)
    if not ids:
        return []
    signs = np.array([-1.0 if d == "max" else 1.0 for d in directions])
    values = np.array([[float(v) for v in points[i]] for i in ids], dtype=float) * signs  # minimise all
    finite = np.isfinite(values).all(axis=1)
    ranks = np.full(len(ids), np.inf)
    crowd = np.zeros(len(ids))
    if finite.any():
        sub = values[finite]
        sub_ranks = nondominated_ranks(sub)
        ranks[finite] = sub_ranks
        crowd[finite] = crowding_distance(sub, sub_ranks)
    order = sorted(range(len(ids)), key=lambda k: (ranks[k], -crowd[k], ids[k]))
    return [(ids[k], float(ranks[k])) for k in order]
