"""Challenge scores, computed exactly as the organisers do (their challenge reports and released scoring code).

- NTIRE 2023 real-time 4K SR (`ntire23`): 2 * 2^(PSNR - PSNR_bicubic) / (0.1 * sqrt(runtime_ms)), zero at or below
  bicubic; higher is better.
- NTIRE efficient SR 2025 / 2026 (`ntire25-esr`, `ntire26-esr`): weighted sum of exp(2 * value / reference) over
  runtime, FLOPs and parameters (2025: 0.7 / 0.15 / 0.15 against EFDN; 2026: 0.8 / 0.1 / 0.1 against SPAN C=28);
  lower is better; the reference model scores exp(2) = 7.389. FLOPs are fvcore's (one per multiply-accumulate) at
  1x3x256x256. Only models reaching the PSNR gate (26.90 dB on DIV2K_LSDIR valid, RGB, border 4) are ranked: a study
  records the gate as a constraint (`constraint_psnr_gate` = gate - PSNR, feasible <= 0), which is only meaningful when
  its validation set is the challenge's.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import SrSearchError


@dataclass(frozen=True)
class EsrReference:
    """A year's reference model and weights (runtime, FLOPs, parameters)."""

    model: str
    runtime_ms: float
    gflops: float
    mparams: float
    weights: tuple[float, float, float]


ESR = {
    "ntire25-esr": EsrReference("EFDN", 16.69, 16.70, 0.276, (0.7, 0.15, 0.15)),
    "ntire26-esr": EsrReference("SPAN (C=28)", 7.74, 9.83, 0.151, (0.8, 0.1, 0.1)),
}
#: the organisers' PSNR gate on DIV2K_LSDIR valid (RGB PSNR, border 4)
PSNR_GATE = 26.90
#: the input fvcore's FLOPs are counted at
FLOPS_INPUT = (1, 3, 256, 256)


def ntire23_score(psnr_value: float, psnr_bicubic: float, runtime_ms: float) -> float:
    """NTIRE 2023 RTSR score, 2 * 2^d / (0.1 * sqrt(runtime_ms)) with d = PSNR - PSNR_bicubic; 0 when d <= 0."""
    if not runtime_ms > 0:
        raise SrSearchError(f"ntire23_score: runtime_ms must be > 0; got {runtime_ms!r}")
    d = psnr_value - psnr_bicubic
    if not d > 0:
        return 0.0
    return 2.0 * 2.0**d / (0.1 * math.sqrt(runtime_ms))


def esr_score(score: str, runtime_ms: float, gflops: float, mparams: float) -> float:
    """The NTIRE efficient-SR score of one model (lower is better; the year's reference model scores e^2)."""
    ref = ESR[score]
    w_rt, w_flops, w_params = ref.weights
    return (w_rt * math.exp(2 * runtime_ms / ref.runtime_ms) + w_flops * math.exp(2 * gflops / ref.gflops)
            + w_params * math.exp(2 * mparams / ref.mparams))


def fvcore_gflops(deployed: nn.Module, colors: int) -> float:
    """FLOPs as the NTIRE ESR organisers count them: fvcore at 1x3x256x256 (one per multiply-accumulate), in G."""
    from fvcore.nn import FlopCountAnalysis

    param = next(deployed.parameters())
    x = torch.rand(FLOPS_INPUT[0], colors, *FLOPS_INPUT[2:], generator=torch.Generator().manual_seed(0)).to(param)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # fvcore traces with torch.jit, which warns on every call
        analysis = FlopCountAnalysis(deployed.eval(), x)
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        return float(analysis.total()) / 1e9


def score_columns(row: dict[str, Any], score: str | None, prefix: str = "") -> dict[str, Any]:
    """The columns a protocol's score adds to a row (`prefix` 'rung_' for a rung's quality); empty when the row
    lacks what the score needs."""
    psnr, runtime = row.get(f"{prefix}psnr_y"), row.get("latency_ms_mean")
    if score is None or psnr is None or runtime is None:
        return {}
    if score == "ntire23":
        return {f"{prefix}ntire_score": ntire23_score(psnr, row["bicubic_psnr_y"], runtime)}
    gflops, params = row.get("ntire_esr_gflops"), row.get("params_deploy")
    if gflops is None or params is None:
        return {}
    gated = row.get(f"{prefix}psnr_rgb", psnr)  # the challenge gates RGB PSNR; a Y-only model has only Y
    out = {f"{prefix}ntire_esr_score": esr_score(score, runtime, gflops, params / 1e6)}
    if not prefix:
        out["constraint_psnr_gate"] = PSNR_GATE - gated
    return out
