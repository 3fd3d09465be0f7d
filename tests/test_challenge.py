"""Challenge scores as the organisers compute them (sr_search/run/challenge.py)."""

import math

import pytest

from sr_search import PRESETS, build, reparameterize
from sr_search.errors import SrSearchError
from sr_search.run.challenge import ESR, PSNR_GATE, esr_score, fvcore_gflops, ntire23_score, score_columns
from sr_search.study.protocols import PROTOCOLS

NTIRE23_PSNR_BICUBIC = 31.697655  # the challenge's default bicubic PSNR on its val/test set


def test_ntire23_score_matches_the_challenge_notebook():
    # values printed in NTIRE23-RTSR demo/calc_scoring.ipynb (bicubic PSNR 31.697655)
    b = 31.697655
    assert ntire23_score(32, b, 27.86) == pytest.approx(4.6726, abs=1e-3)
    assert ntire23_score(32, b, 10) == pytest.approx(7.799, abs=1e-3)
    assert ntire23_score(32.1, b, 10) == pytest.approx(8.359, abs=1e-3)
    assert ntire23_score(32, b, 9) == pytest.approx(8.221, abs=1e-3)
    assert ntire23_score(31.0, b, 10) == 0.0
    assert ntire23_score(b, b, 10) == 0.0
    with pytest.raises(SrSearchError, match="runtime_ms"):
        ntire23_score(32, b, 0)



@pytest.mark.parametrize("year", sorted(ESR))
def test_the_reference_model_scores_e_squared(year):
    ref = ESR[year]
    assert esr_score(year, ref.runtime_ms, ref.gflops, ref.mparams) == pytest.approx(math.exp(2))
    faster = esr_score(year, ref.runtime_ms / 2, ref.gflops, ref.mparams)
    assert faster < math.exp(2)  # lower is better


def test_span_c28_is_the_2026_reference_in_flops_and_parameters():
    deployed = reparameterize(build(PRESETS["span-ch28-x4"]))
    gflops = fvcore_gflops(deployed, 3)
    assert gflops == pytest.approx(ESR["ntire26-esr"].gflops, abs=0.01)  # the organisers' 9.83 G
    params = sum(p.numel() for p in deployed.parameters())
    assert params / 1e6 == pytest.approx(ESR["ntire26-esr"].mparams, abs=0.001)  # 0.151 M
    row = {"psnr_y": 27.0, "psnr_rgb": 26.5, "latency_ms_mean": 7.74, "ntire_esr_gflops": gflops,
           "params_deploy": params, "bicubic_psnr_y": 25.0}
    cols = score_columns(row, "ntire26-esr")
    assert cols["ntire_esr_score"] == pytest.approx(math.exp(2), rel=2e-3)
    assert cols["constraint_psnr_gate"] == pytest.approx(PSNR_GATE - 26.5)  # RGB PSNR under the gate: infeasible


def test_esr_protocols_time_as_the_organisers():
    cold, warm = PROTOCOLS["ntire26-esr"], PROTOCOLS["ntire26-esr-warm"]
    assert (cold.precision, cold.cudnn_benchmark, cold.warmup, cold.batch, cold.scale) == ("fp32", False, 0, 1, 4)
    assert warm.warmup == 20 and warm.score == cold.score == "ntire26-esr"
    assert PROTOCOLS["ntire25-esr"].score == "ntire25-esr"
    assert PROTOCOLS["ntire23-x2"].ntire and not cold.ntire
