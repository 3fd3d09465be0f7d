"""The column catalog (`sr_search.columns`): every landed column keeps its name and Arrow type, and the lists the
rest of the code uses are derived from it.

`tests/data/study_0.2/` is a study folder written by sr-search 0.2.0 (commit 780f260: two ablation trials run by
`run_trial`, a failed one, `results.parquet` consolidated); `tests/data/schema_0.2.json` is 0.2's `store.schema()`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from sr_search import columns
from sr_search.columns import CATALOG, STATUSES, TrialStatus
from sr_search.results.store import ARROW, COLUMNS, consolidate, load_results, read_trial_row, schema, write_trial_row

DATA = Path(__file__).parent / "data"
STUDY_02 = DATA / "study_0.2"


@pytest.fixture
def study_02(tmp_path: Path) -> Path:
    return Path(shutil.copytree(STUDY_02, tmp_path / "study_0.2"))


def test_every_column_of_0_2_keeps_its_name_and_arrow_type():
    landed = json.loads((DATA / "schema_0.2.json").read_text())
    now = {name: str(typ) for name, typ in schema().items()}
    changed = {name: (typ, now.get(name)) for name, typ in landed.items() if now.get(name) != typ}
    assert not changed, changed
    # and in the same order: the fixed columns, then the architecture's fields after `error`, as 0.2 wrote them
    assert [n for n in now if n in landed] == list(landed)


def test_a_row_rewritten_today_has_the_0_2_file_s_columns_and_types(study_02):
    """Read a 0.2 row file, write the same row with today's code: column for column the same Arrow schema (the
    per-set and RGB extras included)."""
    for trial in ("0000", "0009"):
        before = pq.read_schema(study_02 / "trials" / f"{trial}.parquet")
        write_trial_row(study_02, read_trial_row(study_02, trial))
        after = pq.read_schema(study_02 / "trials" / f"{trial}.parquet")
        old = {f.name: str(f.type) for f in before}
        new = {f.name: str(f.type) for f in after}
        assert {n: (t, new.get(n)) for n, t in old.items() if new.get(n) != t} == {}
        assert [n for n in new if n in old] == list(old)
    consolidate(study_02)
    old = {f.name: str(f.type) for f in pq.read_schema(STUDY_02 / "results.parquet")}
    new = {f.name: str(f.type) for f in pq.read_schema(study_02 / "results.parquet")}
    assert {n: (t, new.get(n)) for n, t in old.items() if new.get(n) != t} == {}


def test_a_0_2_study_folder_loads_with_its_rows(study_02):
    df = load_results(study_02)
    assert list(df["trial_id"]) == ["0000", "0001", "0002", "0009"]
    assert list(df["status"]) == ["complete", "complete", "complete", "failed"]
    assert df.loc[df["status"] == TrialStatus.COMPLETE, "psnr_y"].notna().all()


def test_the_fixed_schema_is_the_catalog_s_fixed_columns_in_order():
    fixed = [c for c in CATALOG if c.fixed]
    assert list(COLUMNS) == [c.name for c in fixed]
    assert all(str(COLUMNS[c.name]) == str(ARROW[c.arrow]) for c in fixed)
    assert set(ARROW) == set(columns.ARROW_TYPES)


def test_lists_derived_from_the_catalog_agree():
    from sr_search.results import compare, effects, tables
    from sr_search.study import model

    assert model.METRICS == columns.OBJECTIVES
    assert set(columns.TIMED) <= set(effects.COST_OBJECTIVES) and set(columns.TIMED) <= set(compare.TIMED)
    assert "latency_ms_mean" in compare.TIMED and "ntire_score" in compare.TIMED  # 0.2's two lists disagreed here
    assert "ntire_score" not in effects.COST_OBJECTIVES  # it depends on the training, not only the network
    assert tables.LABELS["psnr_y"] == "PSNR-Y (dB)" and tables.UNITS["throughput"] == "images/s"
    # every objective a study may name is a column of the schema, with a numeric type
    assert all(str(schema()[name]) in ("int64", "double") for name in columns.OBJECTIVES)
    assert columns.is_quality("psnr_y_DIV2K") and columns.is_quality("ntire_score")
    assert not columns.is_quality("throughput") and not columns.is_quality("bicubic_psnr_y")


def test_trial_status_is_the_text_parquet_holds():
    assert STATUSES == ("complete", "infeasible", "failed", "pruned")
    assert TrialStatus("pruned") is TrialStatus.PRUNED and TrialStatus.COMPLETE == "complete"
    assert f"{TrialStatus.FAILED}" == "failed" and json.dumps({"s": TrialStatus.FAILED}) == '{"s": "failed"}'


def test_a_bad_arrow_type_is_refused_naming_the_column():
    with pytest.raises(ValueError, match="'x'.*'float32'"):
        columns.Column("x", columns.Kind.QUALITY, "float32")


def test_the_catalog_loads_without_pyarrow_pandas_or_torch():
    code = ("import sys, sr_search.columns; heavy = {'pyarrow', 'pandas', 'torch'} & set(sys.modules); "
            "print(sorted(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_typed_row_of_each_stage_holds_exactly_its_kinds_columns_with_their_types():
    import typing
    from datetime import datetime

    python = {"large_string": str, "int64": int, "float64": float, "bool": bool, "timestamp[us, tz=UTC]": datetime}
    for kind in columns.Kind:
        stage = columns.STAGES[kind]
        hints = typing.get_type_hints(stage)
        mine = {c.name: c for c in CATALOG if c.kind is kind}
        missing = [n for n in mine if n not in hints]
        assert not missing, f"declare {missing} in {stage.__name__} (sr_search/columns.py), the typed row of {kind.value}"
        for name, c in mine.items():
            assert hints[name] == python[c.arrow] | None, (name, hints[name], c.arrow)
        kinds = {k for k, s in columns.STAGES.items() if s is stage}
        stray = [n for n in hints if columns.kind_of(n) not in kinds]
        assert not stray, f"{stage.__name__} declares {stray}, which the catalog does not give its kinds"
    row_keys = set(typing.get_type_hints(columns.TrialRow))
    assert row_keys == {c.name for c in CATALOG}
