"""Where effects land: the figure (every case renders, one shared axis, readable at its HTML size), the report
(figures only where they mean something), `sr-search effects`, typed `load_results`, and the `base_seeds` key."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from effects_data import factorial, one_at_a_time
from matplotlib.image import imread
from matplotlib.text import Text
from typer.testing import CliRunner

from sr_search import ablation_effects, load_results
from sr_search.cli import app
from sr_search.results.effects_figure import plot_effects
from sr_search.results.report import write_report
from sr_search.results.store import consolidate, write_trial_row
from sr_search.results.study_dir import StudyDir

ROOT = Path(__file__).resolve().parents[1]
#: the report's text column: body max-width 1100 px less 1em padding each side; wider images are scaled down
REPORT_PX = 1068
DPI = 110  # what the report saves figures at
RUNNER = CliRunner()


def png_width(fig) -> int:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    return imread(io.BytesIO(buffer.getvalue()), format="png").shape[1]


def smallest_font(fig) -> float:
    return min(t.get_fontsize() for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip())


def ablation_cases() -> dict[str, pd.DataFrame]:
    truth = {"branch_form": {"c3_bn+c1_bn": -0.86, "c1_bn_c3": -0.1}, "branches": {1: 0.0, 3: 0.02, 4: -0.05}}
    failed_level = one_at_a_time(truth)
    failed_level.loc[failed_level["level"] == "4", "status"] = "failed"
    failed_base = one_at_a_time(truth)
    failed_base.loc[failed_base["factor"] == "base", "status"] = "failed"
    return {
        "paired": one_at_a_time(truth),
        "one seed, base seeds": one_at_a_time(truth, seeds=(0,), base_seeds=(0, 1, 2)),
        "one seed, no noise estimate": one_at_a_time(truth, seeds=(0,)),
        "missing seeds": one_at_a_time(truth).drop(index=[1, 5]),
        "failed level": failed_level,
        "failed base": failed_base,
        "factorial": factorial({"branches": [1, 2, 4], "residual": ["clean", "none"]}, {(4, "none"): 0.3}),
    }


# --- the figure -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", list(ablation_cases()))
def test_effects_figure_renders_every_case_on_one_shared_axis(case: str) -> None:
    table = ablation_effects(ablation_cases()[case], ["psnr_y", "throughput"])
    fig = plot_effects(table, "psnr_y")
    assert len(fig.axes) == 1  # one shared axis for every factor
    ax = fig.axes[0]
    assert ax.get_xlabel() == "Δ PSNR-Y vs the base (dB)"
    rows = table[table["objective"] == "psnr_y"]
    ticks = [t.get_text() for t in ax.get_yticklabels()]
    assert len(ticks) == len(rows)
    assert sum(t.endswith("(base)") for t in ticks) == rows["is_base"].sum() > 0
    assert png_width(fig) <= REPORT_PX and smallest_font(fig) >= 8
    band = [p for p in ax.patches if p.get_facecolor()[:3] != (1.0, 1.0, 1.0)]
    assert bool(band) == (rows["base_seeds"].max() >= 2 and not case.startswith("failed base"))


def test_effects_figure_puts_levels_in_file_order_and_marks_verdicts() -> None:
    df = ablation_cases()["one seed, base seeds"]
    table = ablation_effects(df, ["psnr_y"], factors={"branches": [4, 2, 1, 3], "branch_form": [
        "c1_bn_c3", "c3_bn+c1_bn", "c3_bn_c1"]})
    ax = plot_effects(table).axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == [
        "branches = 4", "branches = 2  (base)", "branches = 1", "branches = 3",
        "branch_form = c1_bn_c3", "branch_form = c3_bn+c1_bn", "branch_form = c3_bn_c1  (base)"]
    right = [t.get_text() for t in ax.texts]
    assert any(t.endswith("worse") and t.startswith("-0.8") for t in right)  # the RepVGG-style form
    assert right.count("base") == 2
    assert plot_effects(table, "ssim_y") is None


# --- the report -----------------------------------------------------------------------------------------------


def report_pngs(page: str) -> list[np.ndarray]:
    found = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    return [imread(io.BytesIO(base64.b64decode(b)), format="png") for b in found]


def test_ablation_on_one_deployed_network_gets_effects_not_a_degenerate_front(tmp_path: Path) -> None:
    df = one_at_a_time({"branch_form": {"c3_bn+c1_bn": -0.86}, "branches": {1: 0.0, 4: 0.01}}, seeds=(0,),
                       base_seeds=(0, 1, 2))
    (tmp_path / "study.yaml").write_text(yaml.safe_dump({"name": "abl", "mode": "ablation", "factors": {
        "branches": [1, 2, 4], "branch_form": ["c3_bn_c1", "c3_bn+c1_bn"]}}))
    page = write_report(tmp_path, df).read_text(encoding="utf-8")
    out = tmp_path / "report"
    assert not (out / "front.png").exists() and not (out / "hypervolume.png").exists()
    assert "Not drawn: all 6 complete trials deploy to the same network" in page
    assert (out / "effects.png").exists() and len(report_pngs(page)) == 1
    assert "against the noise floor" in page and "Budget hint" in page and "seeds per variant" in page
    assert "every level deploys to the base&#x27;s network" in page  # throughput: said once, no column
    assert "worse" in page and "not distinguishable" in page
    assert all(img.shape[1] <= REPORT_PX for img in report_pngs(page))


def test_a_search_whose_trials_all_deploy_to_one_network_gets_no_front_either(tmp_path: Path) -> None:
    df = search_results().assign(deploy_key="same", throughput=76.0)
    page = write_report(tmp_path, df).read_text(encoding="utf-8")
    assert "Not drawn: all 12 complete trials deploy to the same network" in page and "effects below" not in page
    assert report_pngs(page) == []


def search_results() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(12):
        channels = int(rng.choice([8, 16, 32, 48]))
        rows.append({"study": "search", "trial_id": f"{i:04d}", "status": "complete", "error": None, "block": "rep",
                     "channels": channels, "depth": 4, "scale": 4, "deploy_key": f"d{i}", "baseline": None,
                     "factor": None, "level": None, "seed": i, "psnr_y": 27.3 + 0.01 * channels + rng.normal(0, 0.02),
                     "bicubic_psnr_y": 27.155, "throughput": 4000.0 / channels, "latency_ms": channels / 4.0,
                     "params_deploy": channels * channels * 36, "timing_exclusive": True})
    rows[0].update(baseline="ecbsr-m4c16-x4")
    rows[1].update(baseline="rlfn-x4")
    return pd.DataFrame(rows)


def test_search_front_shows_bicubic_and_the_named_baselines_and_every_figure_fits(tmp_path: Path) -> None:
    from sr_search.results.figures import plot_front

    df = search_results()
    ax = plot_front(df).axes[0]
    dashed = [line for line in ax.lines if line.get_linestyle() == "--"]
    assert len(dashed) == 1 and dashed[0].get_ydata()[0] == pytest.approx(27.155)
    labels = [t.get_text() for t in ax.texts]
    assert "ecbsr-m4c16-x4" in labels and "rlfn-x4" in labels and "bicubic 27.155 dB" in labels
    assert "bicubic (reference)" in [t.get_text() for t in ax.get_legend().get_texts()]
    page = write_report(tmp_path, df).read_text(encoding="utf-8")
    images = report_pngs(page)
    assert len(images) == 2  # front and hypervolume: a search has both, no effects
    assert all(img.shape[1] <= REPORT_PX for img in images)
    assert not (tmp_path / "report" / "effects.png").exists()
    fig = plot_front(df)
    assert smallest_font(fig) >= 8


# --- sr-search effects ------------------------------------------------------------------------------------------


def write_study_dir(folder: Path, df: pd.DataFrame, factors: dict | None = None) -> Path:
    for record in df.to_dict("records"):
        write_trial_row(folder, {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in record.items()})
    study = {"name": "abl", "mode": "ablation", "objectives": {"psnr_y": "max", "throughput": "max"}}
    if factors:
        study["factors"] = factors
    StudyDir(folder).study_file.write_text(yaml.safe_dump(study, sort_keys=False))  # as Study.to_yaml
    return folder


def test_cli_effects_prints_the_table_rules_and_hint_and_csv(tmp_path: Path) -> None:
    df = one_at_a_time({"branch_form": {"c3_bn+c1_bn": -0.86}, "branches": {1: 0.0, 4: 0.0}}, seeds=(0,),
                       base_seeds=(0, 1, 2))
    folder = write_study_dir(tmp_path / "study", df, {"branches": [4, 2, 1], "branch_form": ["c3_bn_c1",
                                                                                               "c3_bn+c1_bn"]})
    result = RUNNER.invoke(app, ["effects", str(folder)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split()[:3] == ["factor", "level", "seeds"]
    assert "branches" in lines[1] and " 4 " in lines[1]  # the study file's order
    assert "worse" in result.output and "against the noise floor" in result.output
    assert "Budget hint" in result.output and "0.05 dB" in result.output
    csv = RUNNER.invoke(app, ["effects", str(folder), "--csv", "--resolve", "0.1"])
    assert csv.exit_code == 0, csv.output
    table = pd.read_csv(io.StringIO(csv.output))
    assert list(table.columns)[:6] == ["factor", "level", "level_text", "is_base", "kind", "objective"]
    assert len(table) == 2 * 5  # (3 branches + 2 branch_form levels) x (psnr_y, throughput)
    assert RUNNER.invoke(app, ["effects", str(tmp_path / "nothing")]).exit_code == 1


def test_cli_effects_only_calls_the_library(monkeypatch, tmp_path: Path) -> None:
    from sr_search.results import effects

    seen = {}

    def fake(study_dir, resolve):
        seen.update(study_dir=study_dir, resolve=resolve)
        return pd.DataFrame({"a": [1]}), pd.DataFrame()

    monkeypatch.setattr(effects, "study_effects", fake)
    result = RUNNER.invoke(app, ["effects", str(tmp_path), "--csv", "--resolve", "0.02"])
    assert result.exit_code == 0 and result.output == "a\n1\n"
    assert seen == {"study_dir": tmp_path, "resolve": 0.02}


# --- load_results -----------------------------------------------------------------------------------------------


def test_load_results_types_scale_unshuffle_and_levels_and_leaves_the_parquet_as_it_was(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    numeric = one_at_a_time({"width_mult": {1.0: 0.0, 4.0: 0.0}, "branches": {1: 0.0}}, seeds=(0,))
    numeric["unshuffle"] = 1
    folder = write_study_dir(tmp_path / "numeric", numeric)
    df = load_results(folder)
    assert df["scale"].dtype == "int64" and df["unshuffle"].dtype == "int64"
    assert df["level"].dtype == "float64"
    assert df.loc[df["factor"] == "width_mult", "level"].tolist() == [1.0, 4.0]
    levels = df[df["factor"] != "base"].groupby("factor")["level"]
    assert levels.max().to_dict() == {"branches": 1.0, "width_mult": 4.0}
    mixed = one_at_a_time({"bn": {False: 0.0}, "frozen_bn": {None: 0.0}, "residual": {"none": 0.0}}, seeds=(0,))
    df = load_results(write_study_dir(tmp_path / "mixed", mixed))
    levels = dict(zip(df["factor"], df["level"], strict=True))
    assert levels["bn"] is False and levels["frozen_bn"] is None and levels["residual"] == "none"
    assert levels["base"] is None
    consolidate(folder)
    text = {"string", "large_string"}  # the column types on disk are what they were: text
    stored = pq.read_schema(StudyDir(folder).results)
    assert str(stored.field("scale").type) in text and str(stored.field("level").type) in text
    assert str(pq.read_schema(StudyDir(folder).trial_file("0001")).field("level").type) in text


# --- base_seeds -------------------------------------------------------------------------------------------------


STUDY = f"""\
name: abl
space: {ROOT / 'searchspace' / 'repsr.yaml'}
mode: ablation
base: repsr-m4c16-x4
factors: {{branches: [1, 3]}}
"""


def test_base_seeds_runs_only_the_base_with_extra_seeds(tmp_path: Path) -> None:
    from sr_search.run.plan import make_plan, plan_session
    from sr_search.study.config import describe, load_study

    path = tmp_path / "abl.yaml"
    path.write_text(STUDY + "base_seeds: 3\n")
    study = load_study(path)
    plan = make_plan(study)
    assert [(p.factor, p.seed) for p in plan] == [("base", 0), ("base", 1), ("base", 2), ("branches", 0),
                                                   ("branches", 0)]
    assert "3 variants x 1 seed(s) + 2 more base seed(s) = 5 runs" in describe(path)
    # grown from a finished study without base_seeds: only the base's new seeds run
    done = [{"trial_id": f"{i:04d}", "arch_json": p.spec.to_json(), "seed": p.seed, "baseline": None}
            for i, p in enumerate(plan) if p.seed == 0]
    session = plan_session(study, done, asked={})
    assert [(p.factor, p.seed) for p in session.new] == [("base", 1), ("base", 2)]
    path.write_text(STUDY + "seeds: [0, 1, 2]\nbase_seeds: 5\n")
    assert load_study(path).base_seed_list() == (0, 1, 2, 3, 4)


@pytest.mark.parametrize("extra, message", [
    ("seeds: [0, 1, 2]\nbase_seeds: 2\n", "base_seeds: base_seeds=2 is fewer than the 3 seeds"),
    ("base_seeds: 0\n", "base_seeds: Input should be greater than or equal to 1"),
    ("base_seeds: many\n", "base_seeds"),
])
def test_base_seeds_is_validated_like_other_keys(tmp_path: Path, extra: str, message: str) -> None:
    from sr_search.study.config import validate_files

    path = tmp_path / "abl.yaml"
    path.write_text(STUDY + extra)
    problems = [str(p) for p in validate_files([path])]
    assert any(message in p for p in problems), problems
    search = tmp_path / "search.yaml"
    search.write_text(f"name: s\nspace: {ROOT / 'searchspace' / 'repsr.yaml'}\nfixed: {{scale: 4, colors: 1}}\n"
                      "base_seeds: 3\n")
    assert any("'base_seeds' is only used with mode: ablation" in str(p) for p in validate_files([search]))
