"""The proxy-fidelity statistics (sr_search.results.fidelity) on synthetic pairs whose rank correlation is known."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from sr_search import SrSearchError
from sr_search.results.fidelity import (
    batch_kendall_tau, batch_spearman_rho, bootstrap_intervals, proxy_fidelity, rank_fidelity,
)
from sr_search.results.fidelity_figure import plot_fidelity

OBJECTIVES = {"psnr_y": "max", "throughput": "max"}


def test_vectorised_tau_and_rho_equal_scipy_with_ties():
    rng = np.random.default_rng(3)
    x = rng.integers(0, 4, size=(200, 9)).astype(float)  # many ties
    y = rng.integers(0, 4, size=(200, 9)).astype(float)
    tau, rho = batch_kendall_tau(x, y), batch_spearman_rho(x, y)
    for i in range(len(x)):
        assert np.isclose(tau[i], stats.kendalltau(x[i], y[i]).statistic, equal_nan=True)
        assert np.isclose(rho[i], stats.spearmanr(x[i], y[i]).statistic, equal_nan=True)


def test_identical_and_reversed_rankings():
    x = np.arange(10.0)
    same = rank_fidelity(x, x * 2 + 1)
    assert same["tau"] == pytest.approx(1) and same["rho"] == pytest.approx(1)
    assert same["tau_ci"] == pytest.approx((1, 1))
    reverse = rank_fidelity(x, -x)
    assert reverse["tau"] == pytest.approx(-1) and reverse["rho_ci"] == pytest.approx((-1, -1))
    few = rank_fidelity([1.0, 2.0, 3.0], [1.0, 3.0, 2.0])
    assert math.isnan(few["tau_ci"][0])  # three candidates: no interval worth printing
    with pytest.raises(SrSearchError, match="length"):
        rank_fidelity([1.0, 2.0], [1.0])


@pytest.mark.parametrize("n, r", [(12, 0.8), (8, 0.5)])
def test_bootstrap_intervals_cover_the_true_correlation(n, r):
    """Over simulated studies (bivariate normal proxy/confirmed values with correlation r, so the true tau is
    2/pi asin(r) and the true rho 6/pi asin(r/2)) the 95% intervals hold the truth 90-99% of the time."""
    rng = np.random.default_rng(n)
    true_tau, true_rho = 2 / np.pi * np.arcsin(r), 6 / np.pi * np.arcsin(r / 2)
    studies = rng.multivariate_normal([0, 0], [[1, r], [r, 1]], size=(300, n))
    hits_tau = hits_rho = 0
    for i, study in enumerate(studies):
        ci = bootstrap_intervals(study[:, 0], study[:, 1], n_boot=400, seed=i)
        hits_tau += ci["tau"][0] <= true_tau <= ci["tau"][1]
        hits_rho += ci["rho"][0] <= true_rho <= ci["rho"][1]
    assert 0.90 <= hits_tau / len(studies) <= 0.99, hits_tau
    assert 0.90 <= hits_rho / len(studies) <= 0.99, hits_rho


def _frames():
    """Six candidates: the proxy front is 0000, 0001, 0002; at the longer budget 0002 falls behind 0003 and 0003
    joins the front; two seeds each."""
    source = pd.DataFrame({
        "trial_id": ["0000", "0001", "0002", "0003", "0004", "0005"],
        "status": "complete", "block": "rep", "channels": 8, "depth": 2, "baseline": [None] * 5 + ["rtsrn-x2"],
        "psnr_y": [30.0, 29.0, 28.0, 27.5, 26.0, 25.0],
        "throughput": [100.0, 200.0, 300.0, 300.0, 50.0, 40.0],  # 0002 and 0003 deploy alike
        "train_iterations": 300, "seed": [0, 1, 2, 3, 4, 5],
    })
    confirmed_mean = {"0000": 31.0, "0001": 30.2, "0002": 28.9, "0003": 30.0, "0004": 27.0, "0005": 26.5}
    rows = []
    for n, (trial, mean) in enumerate(confirmed_mean.items()):
        tp = float(source.loc[source.trial_id == trial, "throughput"].iloc[0])
        for k, delta in enumerate((-0.05, 0.05)):
            rows.append({"trial_id": f"{2 * n + k:04d}", "status": "complete", "source_trial_id": trial,
                         "seed": n + k, "psnr_y": mean + delta, "throughput": tp, "train_iterations": 1500})
    rows.append({"trial_id": "0012", "status": "failed", "source_trial_id": "0004", "seed": 9, "psnr_y": np.nan,
                 "throughput": 50.0, "train_iterations": np.nan})
    return source, pd.DataFrame(rows)


def test_fidelity_of_synthetic_studies_names_fronts_ranks_and_verdict():
    source, confirmed = _frames()
    fid = proxy_fidelity(source, confirmed, OBJECTIVES, n_boot=500)
    assert fid.metric == "psnr_y" and fid.proxy_iterations == 300 and fid.confirmed_iterations == 1500
    pairs = fid.pairs.set_index("source_trial_id")
    assert pairs.loc["0003", "confirmed"] == pytest.approx(30.0)
    assert list(pairs["seeds"]) == [2] * 6  # the failed training is left out, not averaged in
    assert fid.kept == ["0000", "0001"] and fid.left == ["0002"] and fid.joined == ["0003"]
    assert int(pairs.loc["0003", "proxy_rank"]) == 4 and int(pairs.loc["0003", "confirmed_rank"]) == 3
    expected_tau = stats.kendalltau(source["psnr_y"], list(pairs["confirmed"])).statistic
    assert fid.stats["tau"] == pytest.approx(expected_tau)
    assert fid.largest_changes(1)["source_trial_id"].tolist() == ["0003"]
    assert len(fid.per_seed) == 12 and set(fid.per_seed.columns) >= {"source_trial_id", "seed", "proxy", "confirmed"}
    verdict = fid.verdict()
    assert f"tau {fid.stats['tau']:.2f} [" in verdict and "300-iteration" in verdict and "1,500 iterations" in verdict
    assert "2 of 3 proxy front members stay on the confirmed front and 1 join" in verdict
    text = fid.text()
    assert "Kendall tau" in text and "Spearman rho" in text and "joined 0003" in text

    fig = plot_fidelity(fid)
    ax = fig.axes[0]
    arrows = [t for t in ax.texts if getattr(t, "arrow_patch", None) is not None]
    assert len(arrows) == 6  # one move per candidate
    assert "rtsrn-x2" in " ".join(t.get_text() for t in ax.texts)


def test_rows_without_a_source_trial_are_not_a_confirmation():
    source, confirmed = _frames()
    with pytest.raises(SrSearchError, match="source_trial_id"):
        proxy_fidelity(source, confirmed.drop(columns="source_trial_id"), OBJECTIVES)
