"""The report renders for one-trial, all-failed, mixed and ablation studies, and is honest about timing."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

from sr_search.errors import SrSearchError
from sr_search.results.pareto import pareto_front
from sr_search.results.report import (
    ablation_table,
    front_table,
    front_text,
    plot_ablation,
    plot_front,
    plot_hypervolume,
    write_report,
)

BLOCKS = ["rep", "ecb", "rlfb", "esdb", "eresidual", "plain"]
VERSIONS = json.dumps({"torch": "2.13.0", "sr_search": "0.1.0", "cuda": None})


def make_results(n: int = 40, seed: int = 0, **overrides) -> pd.DataFrame:
    """A results table with the result columns (docs/architecture.md, "Result columns"): a PSNR/throughput trade-off plus noise."""
    rng = np.random.default_rng(seed)
    channels = rng.choice([8, 16, 32, 48, 64], size=n)
    depth = rng.integers(2, 17, size=n)
    cost = channels.astype(float) ** 2 * depth
    throughput = 3e6 / cost * rng.uniform(0.6, 1.4, size=n)
    psnr = 27.0 + 0.9 * np.log10(cost) + rng.normal(0, 0.15, size=n)
    rows = {
        "study": "synthetic",
        "trial_id": [f"t{i:04d}" for i in range(n)],
        "status": "complete",
        "error": None,
        "block": rng.choice(BLOCKS, size=n),
        "channels": channels,
        "depth": depth,
        "scale": 4,
        "psnr_y": psnr,
        "ssim_y": 0.7 + 0.01 * np.log10(cost),
        "throughput": throughput,
        "latency_ms": 1000.0 / throughput,
        "params_deploy": (channels**2 * 9 * depth).astype(np.int64),
        "macs_deploy": (channels**2 * 9 * depth * 320 * 180).astype(np.int64),
        "timing_exclusive": True,
        "timing_device": "NVIDIA H100 80GB HBM3",
        "timing_protocol": "repsr",
        "timing_precision": "fp16",
        "baseline": None,
        "factor": None,
        "level": None,
        "seed": 0,
        "versions": VERSIONS,
    }
    df = pd.DataFrame(rows)
    for column, value in overrides.items():
        df[column] = value
    return df


def mixed_results() -> pd.DataFrame:
    df = make_results(40, seed=1)
    df["timing_exclusive"] = df["timing_exclusive"].astype(object)
    df.loc[[3, 7, 11], "status"] = "failed"
    df.loc[[3, 7], "error"] = "RuntimeError: CUDA out of memory"
    df.loc[11, "error"] = "ValueError: <script>alert(1)</script>"
    df.loc[[3, 7, 11], ["psnr_y", "ssim_y"]] = np.nan
    df.loc[[5, 9], "status"] = "infeasible"
    df.loc[[5, 9], "error"] = "latency 14.2 ms > budget 10 ms"
    df.loc[[5, 9], ["psnr_y", "ssim_y"]] = np.nan
    df.loc[13, "status"] = "pruned"
    df.loc[[20, 21], "baseline"] = ["rlfn-x4", "ecbsr-m4c16-x4"]
    return df


def front_ids(df: pd.DataFrame) -> set[str]:
    return set(pareto_front(df, {"psnr_y": "max", "throughput": "max"})["trial_id"])


def embedded_pngs(page: str) -> list[bytes]:
    return [base64.b64decode(b) for b in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]


def read_png(data: bytes) -> np.ndarray:
    import io

    return imread(io.BytesIO(data), format="png")


# --- whole report ----------------------------------------------------------------------------------


def test_mixed_study_report_is_self_contained(tmp_path: Path) -> None:
    df = mixed_results()
    df.loc[~df["trial_id"].isin(front_ids(df)), "timing_exclusive"] = False  # front itself stays exclusive
    (tmp_path / "study.yaml").write_text("name: synthetic\nobjectives: {psnr_y: max}\n", encoding="utf-8")
    path = write_report(tmp_path, df)

    assert path == tmp_path / "report" / "report.html"
    page = path.read_text(encoding="utf-8")
    for name in ("front.png", "hypervolume.png"):
        image = read_png((tmp_path / "report" / name).read_bytes())
        assert image.shape[0] > 200 and image.shape[1] > 300
    assert not (tmp_path / "report" / "ablation.png").exists()
    pngs = embedded_pngs(page)
    assert len(pngs) == 2
    assert pngs[0] == (tmp_path / "report" / "front.png").read_bytes()
    # Self-contained: nothing fetched from elsewhere.
    assert not re.search(r'(src|href)="(?!data:|#)', page)
    # Front table: every front trial listed; summary counts; failure reasons grouped and escaped.
    for trial_id in front_ids(df):
        assert f"<td>{trial_id}</td>" in page
    assert "34 complete" in page and "3 failed" in page and "2 infeasible" in page and "1 pruned" in page
    assert "RuntimeError: CUDA out of memory" in page and "t0003, t0007" in page
    assert "latency 14.2 ms &gt; budget 10 ms" in page
    assert "<script>" not in page and "&lt;script&gt;" in page
    # Settings from study.yaml, environment from the columns.
    assert "objectives: {psnr_y: max}" in page
    assert "NVIDIA H100 80GB HBM3" in page and "2.13.0" in page
    assert "No trial completed" not in page
    assert "(non-exclusive timings)" not in page
    csv = pd.read_csv(tmp_path / "report" / "front.csv")
    assert set(csv["trial_id"]) == front_ids(df)


def test_report_loads_results_parquet_and_rewrites_in_place(tmp_path: Path) -> None:
    df = make_results(12, seed=3)
    df.to_parquet(tmp_path / "results.parquet")
    first = write_report(tmp_path)
    assert "synthetic" in first.read_text(encoding="utf-8")
    # A second run after the study changed replaces the outputs, and no stale figure survives.
    (tmp_path / "report" / "ablation.png").write_bytes(b"stale")
    second = write_report(tmp_path, make_results(12, seed=4, study="renamed"))
    assert second == first
    assert "renamed" in second.read_text(encoding="utf-8")
    assert not (tmp_path / "report" / "ablation.png").exists()


def test_missing_results_file_names_the_directory(tmp_path: Path) -> None:
    with pytest.raises(SrSearchError, match=re.escape(str(tmp_path)) + ".*no results.parquet"):
        write_report(tmp_path)
    with pytest.raises(SrSearchError, match="does not exist"):
        write_report(tmp_path / "nope")
    with pytest.raises(SrSearchError, match="'status'"):
        write_report(tmp_path, make_results(3).drop(columns="status"))


def test_all_failed_study_gets_a_clear_page(tmp_path: Path) -> None:
    df = make_results(5, status="failed", psnr_y=np.nan, throughput=np.nan)
    df["error"] = ["RuntimeError: CUDA out of memory"] * 3 + ["AssertionError: reparam mismatch 3e-2", None]
    page = write_report(tmp_path, df).read_text(encoding="utf-8")
    assert "No trial completed" in page
    assert "RuntimeError: CUDA out of memory" in page and "AssertionError: reparam mismatch 3e-2" in page
    assert "(no error recorded)" in page
    assert "Traceback" not in page
    assert embedded_pngs(page) == []
    assert not any((tmp_path / "report" / n).exists() for n in ("front.png", "hypervolume.png", "front.csv"))


def test_empty_study_renders(tmp_path: Path) -> None:
    page = write_report(tmp_path, make_results(0)).read_text(encoding="utf-8")
    assert "no trials yet" in page


def test_one_trial_study(tmp_path: Path) -> None:
    df = make_results(1, seed=5)
    page = write_report(tmp_path, df).read_text(encoding="utf-8")
    assert len(embedded_pngs(page)) == 2
    assert "<td>t0000</td>" in page
    fig = plot_front(df)
    ax = fig.axes[0]
    assert ax.get_xscale() == "linear"
    assert "1 complete trial, 1 on the front" in ax.get_title()


def test_study_meta_names_objectives_and_stands_in_for_study_yaml(tmp_path: Path) -> None:
    df = make_results(30, seed=6)
    meta = {"name": "meta-study", "objectives": {"psnr_y": "max", "latency_ms": "min"}, "trials": np.int64(30)}
    page = write_report(tmp_path, df, study_meta=meta).read_text(encoding="utf-8")
    assert "sr-search report: meta-study" in page
    assert "From study metadata" in page and "trials: 30" in page
    csv = pd.read_csv(tmp_path / "report" / "front.csv")
    assert set(csv["trial_id"]) == set(pareto_front(df, meta["objectives"])["trial_id"])
    with pytest.raises(SrSearchError, match="'objectives'.*'fastest'"):
        write_report(tmp_path, df, study_meta={"objectives": {"throughput": "fastest"}})


# --- figures ---------------------------------------------------------------------------------------


def test_front_figure_axes_front_line_baselines_and_log_scale() -> None:
    df = mixed_results()
    fig = plot_front(df)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "throughput (images/s)"
    assert ax.get_ylabel() == "PSNR-Y (dB)"
    spread = df["throughput"].max() / df["throughput"].min()
    assert spread > 10**1.5
    assert ax.get_xscale() == "log"
    # The step line passes through the front points, in throughput order.
    front = pareto_front(df, {"psnr_y": "max", "throughput": "max"}).sort_values("throughput")
    line = ax.lines[0]
    np.testing.assert_allclose(line.get_xdata(), front["throughput"])
    np.testing.assert_allclose(line.get_ydata(), front["psnr_y"])
    assert line.get_drawstyle() == "steps-pre"
    labels = {t.get_text() for t in ax.texts}
    assert {"rlfn-x4", "ecbsr-m4c16-x4"} <= labels
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "Pareto front" in legend and "paper baseline" in legend
    assert set(df.loc[df.status == "complete", "block"]) <= set(legend)
    assert "non-exclusive timing" not in legend
    assert "timed on NVIDIA H100 80GB HBM3, repsr, fp16" in ax.get_title()


def test_front_figure_is_linear_when_throughput_spans_little() -> None:
    df = make_results(20, seed=2)
    df["throughput"] = np.linspace(100.0, 2000.0, len(df))  # 1.3 decades
    assert plot_front(df).axes[0].get_xscale() == "linear"


def test_non_exclusive_timings_are_marked_and_titled() -> None:
    df = make_results(30, seed=7)
    df["timing_exclusive"] = df["timing_exclusive"].astype(object)
    ids = sorted(front_ids(df))
    df.loc[df["trial_id"] == ids[0], "timing_exclusive"] = False
    ax = plot_front(df).axes[0]
    assert "(non-exclusive timings)" in ax.get_title()
    assert "non-exclusive timing" in [t.get_text() for t in ax.get_legend().get_texts()]
    # A non-exclusive trial off the front marks it in the legend but not in the title.
    df = make_results(30, seed=7)
    off_front = sorted(set(df["trial_id"]) - front_ids(df))[0]
    df.loc[df["trial_id"] == off_front, "timing_exclusive"] = False
    ax = plot_front(df).axes[0]
    assert "(non-exclusive timings)" not in ax.get_title()
    assert "non-exclusive timing" in [t.get_text() for t in ax.get_legend().get_texts()]
    # An unknown flag is not evidence of exclusivity.
    ax = plot_front(make_results(10, seed=8).drop(columns="timing_exclusive")).axes[0]
    assert "(non-exclusive timings)" in ax.get_title()


def test_front_figure_absent_without_complete_timed_trials() -> None:
    assert plot_front(make_results(4, throughput=np.nan)) is None
    assert plot_front(make_results(4, status="infeasible")) is None


def test_hypervolume_figure_states_reference_and_ends_at_the_front_volume() -> None:
    df = make_results(25, seed=9)
    reference = {"psnr_y": 28.0, "throughput": 10.0}
    fig = plot_hypervolume(df, {"psnr_y": "max", "throughput": "max"}, reference)
    ax = fig.axes[0]
    assert "reference point: psnr_y = 28 dB, throughput = 10 images/s" in ax.get_title()
    assert ax.get_ylabel() == "hypervolume (dB × images/s)"
    step = ax.lines[0]
    assert step.get_drawstyle() == "steps-post"  # changes at trials, flat in between
    y = step.get_ydata()
    assert len(y) == 26 and (np.diff(y) >= 0).all()  # one value per trial, the last step drawn to the edge
    # Independent final value: union of rectangles by a fine grid-free sweep in sorted order.
    front = pareto_front(df, {"psnr_y": "max", "throughput": "max"}).sort_values("throughput")
    area, prev = 0.0, reference["throughput"]
    for tp, ps in zip(front["throughput"], front["psnr_y"]):
        area += (tp - prev) * (ps - reference["psnr_y"])  # psnr falls as throughput rises along the front
        prev = tp
    assert y[-1] == pytest.approx(area)
    assert plot_hypervolume(df, {"psnr_y": "max"}) is None


def test_hypervolume_axis_shows_the_curve_whole_trials_and_not_counted_trials() -> None:
    """0.2 drew the curve on the top edge (the axis ended at its value) with ticks at 1.25, 1.5, ... trials, and
    counted a below-bicubic trial; now: the axis clears the curve, ticks are whole trials, and pruned and
    below-bicubic trials add nothing and are drawn open."""
    df = make_results(5, seed=2, bicubic_psnr_y=28.0)
    df["psnr_y"] = [29.0, 27.5, 29.5, 31.0, 30.0]  # trial 2 under bicubic, trial 5 pruned
    df["throughput"] = [100.0, 900.0, 50.0, 20.0, 800.0]
    df["below_bicubic"] = df["psnr_y"] < 28.0
    df["collapsed"] = False
    df.loc[4, "status"] = "pruned"
    fig = plot_hypervolume(df, {"psnr_y": "max", "throughput": "max"})
    ax = fig.axes[0]
    assert "reference point: psnr_y = 28 dB, throughput = 0 images/s" in ax.get_title()  # the one rule
    y = ax.lines[0].get_ydata()[:5]
    assert y[1] == y[0] and y[4] == y[3]  # the below-bicubic and the pruned trial change nothing
    assert ax.get_ylim()[0] == 0 and ax.get_ylim()[1] >= 1.1 * y.max()
    fig.canvas.draw()
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks)
    open_markers = ax.lines[2]  # the trials not counted
    assert list(open_markers.get_xdata()) == [2, 5]


def test_report_and_compare_print_one_hypervolume_for_a_study(tmp_path: Path) -> None:
    """0.2's report put the PSNR-Y reference at the worst point - 10% (18.91 dB on its smoke study) while compare
    used bicubic: one study, two hypervolumes. Now both take `pareto.hypervolume_reference` and print one number."""
    from typer.testing import CliRunner

    from sr_search.cli import app
    from sr_search.results.store import write_trial_row

    folders = {}
    for name, psnr in (("a", [27.5, 29.0, 30.0, 31.5]), ("b", [28.5, 29.5, 30.5, 27.0])):
        folder = tmp_path / name
        for i, (value, speed) in enumerate(zip(psnr, [400.0, 300.0, 120.0, 40.0], strict=True)):
            write_trial_row(folder, {
                "study": name, "trial_id": f"{i:04d}", "status": "complete", "block": "plain", "channels": 8 * (i + 1),
                "deploy_key": f"{name}{i}", "psnr_y": value, "bicubic_psnr_y": 28.0, "psnr_gain": value - 28.0,
                "below_bicubic": value < 28.0, "collapsed": False, "throughput": speed, "timing_exclusive": True})
        (folder / "study.yaml").write_text(f"name: {name}\nmode: search\n", encoding="utf-8")
        folders[name] = folder
    runner = CliRunner()
    report = runner.invoke(app, ["report", str(folders["a"])])
    assert report.exit_code == 0, report.output
    line = next(text for text in report.output.splitlines() if text.startswith("hypervolume "))
    number = line.split()[1]
    # (29 - 28) x 300 + (30 - 29) x 120 + (31.5 - 30) x 40 = 480; the 27.5 dB trial is below bicubic
    assert number == "480"
    assert "psnr_y 28.000 (bicubic PSNR-Y), throughput 0 (fixed at 0)" in line
    page = (folders["a"] / "report" / "report.html").read_text(encoding="utf-8")
    assert f"<b>Hypervolume {number}</b>" in page and "psnr_y 28.000 (bicubic PSNR-Y)" in page
    compared = runner.invoke(app, ["compare", str(folders["a"]), str(folders["b"])])
    assert compared.exit_code == 0, compared.output
    assert "hypervolume reference: psnr_y 28.000 (bicubic PSNR-Y), throughput 0 (fixed at 0)" in compared.output
    row = next(text.split() for text in compared.output.splitlines() if text.strip().startswith("a "))
    assert number in row
    # pinned: both commands take the same --reference; the below-bicubic trial stays out whatever the reference
    pinned = runner.invoke(app, ["report", str(folders["a"]), "--reference", "psnr_y=27"])
    assert "hypervolume 780 " in pinned.output and "psnr_y 27.000 (given (--reference))" in pinned.output


def test_bicubic_reference_survives_unshuffle_crops_but_not_other_data() -> None:
    """Rows of one study whose pixel-unshuffle crops the validation images differently have bicubic PSNR-Y a few
    thousandths apart (0.2's smoke study: 27.1599 and 27.1581): still the bicubic reference (0.2's report fell back
    to the worst point - 10%, 18.91 dB, there). Values that differ more come from other data: the fallback."""
    from sr_search.results.pareto import RULE_BICUBIC, RULE_WORST, hypervolume_reference

    objectives = {"psnr_y": "max", "throughput": "max"}
    df = make_results(4, seed=1)
    df["bicubic_psnr_y"] = [27.159923, 27.159923, 27.158062, 27.159923]
    ref = hypervolume_reference(df, objectives)
    assert ref.values == {"psnr_y": 27.159923, "throughput": 0.0} and ref.rules["psnr_y"] == RULE_BICUBIC
    df["bicubic_psnr_y"] = [27.16, 27.16, 30.2, 27.16]
    assert hypervolume_reference(df, objectives).rules["psnr_y"] == RULE_WORST


# --- ablation --------------------------------------------------------------------------------------


def ablation_results() -> pd.DataFrame:
    """RepSR-style grid: two factors, three seeds per level, hand-picked PSNRs."""
    psnr = {
        ("residual", "clean"): [30.0, 30.2, 30.1],
        ("residual", "bn"): [29.6, 29.8, 29.7],
        ("residual", "none"): [29.0, 29.0, 29.3],
        ("width_mult", "1"): [29.9, 30.0, 30.1],
        ("width_mult", "2"): [30.3, 30.4, 30.5],
        ("width_mult", "0.5"): [29.5, 29.4, 29.6],
    }
    records = []
    for (factor, level), values in psnr.items():
        for seed, value in enumerate(values):
            records.append({"factor": factor, "level": level, "seed": seed, "psnr_y": value})
    base = make_results(len(records), seed=10)
    for column in ("factor", "level", "seed", "psnr_y"):
        base[column] = [r[column] for r in records]
    base.loc[0, "status"] = "failed"  # a failed seed must not enter the mean
    base.loc[0, "psnr_y"] = np.nan
    return base


def test_ablation_table_means_and_spread_over_seeds() -> None:
    table = ablation_table(ablation_results()).set_index(["factor", "level"])
    assert list(table.loc["width_mult"].index) == ["0.5", "1", "2"]  # numeric levels in numeric order
    assert list(table.loc["residual"].index) == ["clean", "bn", "none"]  # grid order kept
    assert table.loc[("residual", "clean"), "n_seeds"] == 2
    assert table.loc[("residual", "clean"), "psnr_y_mean"] == pytest.approx(30.15)
    assert table.loc[("residual", "clean"), "psnr_y_std"] == pytest.approx(0.0707107, rel=1e-5)
    assert table.loc[("residual", "none"), "psnr_y_mean"] == pytest.approx(29.1)
    assert table.loc[("residual", "none"), "psnr_y_std"] == pytest.approx(0.1732051, rel=1e-5)
    assert table.loc[("width_mult", "2"), "psnr_y_mean"] == pytest.approx(30.4)
    assert ablation_table(make_results(5)).empty


def test_ablation_figure_has_one_panel_per_factor(tmp_path: Path) -> None:
    df = ablation_results()
    fig = plot_ablation(df)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_xlabel() for ax in visible] == ["residual", "width_mult"]
    assert all(ax.get_ylabel() == "PSNR-Y (dB)" for ax in visible)
    ticks = [t.get_text() for t in visible[1].get_xticklabels()]
    assert ticks == ["0.5", "1", "2"]
    # Plotted means and the first error bar (mean +- 1 s.d. of the two complete seeds 30.2, 30.1).
    np.testing.assert_allclose(visible[0].lines[0].get_ydata(), [30.15, 29.7, 29.1])
    np.testing.assert_allclose(visible[1].lines[0].get_ydata(), [29.5, 30.0, 30.4])
    bar = visible[0].lines[1].get_ydata()
    assert np.nanmin(bar) == pytest.approx(30.15 - 0.0707107) and np.nanmax(bar) == pytest.approx(30.15 + 0.0707107)
    # The report draws effects on one shared axis instead (tests/test_effects.py); the per-level values stay a table.
    page = write_report(tmp_path, df).read_text(encoding="utf-8")
    assert (tmp_path / "report" / "effects.png").exists() and not (tmp_path / "report" / "ablation.png").exists()
    assert len(embedded_pngs(page)) == 2  # front and effects; no hypervolume history for an ablation
    assert "30.150" in page  # the residual=clean mean in the ablation table


# --- front table -----------------------------------------------------------------------------------


def test_front_table_lists_the_front_best_first_with_the_knee() -> None:
    df = mixed_results()
    table = front_table(df)
    assert set(table["trial_id"]) == front_ids(df)
    assert (np.diff(table["psnr_y"]) <= 0).all()
    assert table["knee"].sum() == 1
    assert list(table.columns[:6]) == ["trial_id", "baseline", "block", "channels", "depth", "scale"]
    assert {"psnr_y", "throughput", "latency_ms", "params_deploy", "timing_exclusive"} <= set(table.columns)
    custom = front_table(df, {"psnr_y": "max", "params_deploy": "min"})
    assert set(custom["trial_id"]) == set(pareto_front(df, {"psnr_y": "max", "params_deploy": "min"})["trial_id"])
    three = front_table(df, {"psnr_y": "max", "params_deploy": "min", "latency_ms": "min"})
    assert "knee" not in three.columns


def test_front_text_for_the_terminal() -> None:
    df = make_results(15, seed=11)
    text = front_text(df)
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["trial_id", "baseline", "block"]
    assert len(lines) == 1 + len(front_ids(df))
    best = pareto_front(df, {"psnr_y": "max", "throughput": "max"}).iloc[0]
    assert best["trial_id"] in lines[1] and f"{best['psnr_y']:.3f}" in lines[1]
    assert front_text(make_results(3, status="failed")).startswith("No front: no complete trial")
