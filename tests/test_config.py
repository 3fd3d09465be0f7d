"""Study files: the shipped ones, every kind of malformed one, paths, overrides and the RepSR ablation grid."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from pydantic import BaseModel

from sr_search import ArchSpec, PRESETS
from sr_search.study.config import describe, load_study, validate_files, with_overrides
from sr_search.study.model import Study
from sr_search.errors import SrSearchError
from sr_search.study.space import RandomTrial
from study_files import SPACE, write

ROOT = Path(__file__).resolve().parents[1]
STUDIES = sorted((ROOT / "studies").glob("*.yaml"))
SPACES = sorted((ROOT / "searchspace").glob("*.yaml"))

@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "space.yaml").write_text(SPACE)
    return tmp_path


def problems_of(folder: Path, text: str) -> list[str]:
    return [str(p) for p in validate_files([write(folder, text)])]


# --- the shipped files --------------------------------------------------------------------------------------


def test_shipped_studies_and_spaces_validate():
    assert {p.name for p in STUDIES} >= {"repsr_ablation.yaml", "rtsr_pareto.yaml", "smoke.yaml"}
    assert {p.name for p in SPACES} >= {"repsr.yaml", "efficient_sr.yaml"}
    assert validate_files([*STUDIES, *SPACES]) == []


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.name)
def test_shipped_studies_write_no_default_twice(path):
    raw = yaml.safe_load(path.read_text())
    fields = {info.alias or name: info for name, info in Study.model_fields.items()}
    for key, value in raw.items():
        default = fields[key].get_default(call_default_factory=True)
        if isinstance(value, dict) and isinstance(default, BaseModel):
            for sub, sub_value in value.items():
                assert sub_value != getattr(default, sub), f"{path.name}: {key}.{sub} repeats its default"
        else:
            assert value != default, f"{path.name}: {key} repeats its default"


def test_repsr_ablation_grid_is_tables_5_to_7_plus_frozen_bn():
    study = load_study(ROOT / "studies" / "repsr_ablation.yaml")
    # RepSR-M4C16 x4, written out independently of the preset module
    base = dict(block="rep", scale=4, colors=1, channels=16, depth=4, activation="prelu", global_skip="nearest",
                width_mult=2.0, branches=2, residual="clean", branch_form="c3_bn_c1", bn=True, frozen_bn=0.9)
    expected = [
        ("base", None, {}),
        ("branch_form", "c3_bn+c1_bn", {"branch_form": "c3_bn+c1_bn"}),  # Table 5
        ("branch_form", "c3_bn_c1_bn", {"branch_form": "c3_bn_c1_bn"}),
        ("branch_form", "c1_bn_c3", {"branch_form": "c1_bn_c3"}),
        ("bn", False, {"bn": False, "frozen_bn": None}),
        ("width_mult", 1.0, {"width_mult": 1.0}),  # Table 6
        ("width_mult", 4.0, {"width_mult": 4.0}),
        ("branches", 1, {"branches": 1}),  # Table 7
        ("branches", 3, {"branches": 3}),
        ("branches", 4, {"branches": 4}),
        ("residual", "bn", {"residual": "bn"}),
        ("residual", "none", {"residual": "none"}),
        ("frozen_bn", None, {"frozen_bn": None}),  # Frozen BN off
    ]
    points = study.ablation_grid()
    assert [(p.factor, p.level) for p in points] == [(f, lv) for f, lv, _ in expected]
    for point, (_, _, changes) in zip(points, expected):
        assert point.spec == ArchSpec(**{**base, **changes})
    assert len({p.spec.arch_key() for p in points}) == len(points) == 13
    assert study.seeds == (0,)
    assert study.base_seeds == 4 and study.base_seed_list() == (0, 1, 2, 3)
    assert "13 variants x 1 seed(s) + 3 more base seed(s) = 16 runs" in describe(ROOT / "studies" / "repsr_ablation.yaml")


def test_rtsr_pareto_is_an_x2_latency_constrained_search_over_all_families():
    study = load_study(ROOT / "studies" / "rtsr_pareto.yaml")
    space = study.search_space()
    assert study.mode == "search" and study.protocol.name == "ntire23-x2"
    assert space.constraints.max_latency_ms == 30.0 and space.constraints.max_params == 1_000_000
    assert study.constraints() == space.constraints
    assert set(space.blocks) == {"rep", "ecb", "rlfb", "esdb", "eresidual", "span", "plain"}
    assert all(space.sample(RandomTrial(s)).scale == 2 for s in range(20))
    assert "rtsrn-x2" in study.baselines and all(PRESETS[b].scale == 2 for b in study.baselines)


def test_smoke_study_is_small():
    study = load_study(ROOT / "studies" / "smoke.yaml")
    assert 2 <= study.n_trials <= 4
    specs = [study.search_space().sample(RandomTrial(s)) for s in range(10)]
    assert all(s.channels <= 32 and s.depth <= 2 and s.scale == 2 for s in specs)  # fast x2 candidates


# --- malformed study files ----------------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("name: t\nspace: space.yaml\ntrials: 5\n", "study.yaml:3: trials: unknown key 'trials' (did you mean 'n_trials'?)"),
    ("name: t\nspace: space.yaml\ntrain:\n  iteratons: 5\n",
     "study.yaml:4: train.iteratons: unknown key 'iteratons' (did you mean 'iterations'?); allowed: iterations"),
    ("name: t\nspace: space.yaml\nn_trials: many\n", "study.yaml:3: n_trials: Input should be a valid integer"),
    ("name: t\nspace: space.yaml\ntrain: {iterations: -5}\n",
     "study.yaml:3: train.iterations: Input should be greater than or equal to 1; got -5"),
    ("name: t\nspace: space.yaml\nresources: {gpus_per_trial: -1}\n", "resources.gpus_per_trial: Input should be "
                                                                       "greater than or equal to 0"),
    ("name: t\nspace: nowhere.yaml\n", "study.yaml:2: space: search-space file not found:"),
    ("name: t\n", "study.yaml:1: space: required key is missing"),
    ("", "study.yaml: YAML file is empty"),
    ("- name\n- t\n", "must be a mapping of key: value"),
    ("name: t\nspace: space.yaml\nbaselines: [rtsrn-x4, rlfn-x5]\n",
     "study.yaml:3: baselines[1]: unknown preset 'rlfn-x5' (did you mean"),
    ("name: t\nspace: space.yaml\nbaselines: [rtsrn-x2]\n", "baselines[0]: rtsrn-x2 is a x2 model but this study's "
                                                            "candidates are x4"),
    ("name: t\nspace: space.yaml\nseeds: [1, 2]\n", "seeds: 'seeds' is only used with mode: ablation"),
    ("name: t\nspace: space.yaml\nmode: ablation\nfactors: {depth: [1, 2]}\n", "mode: ablation needs `base`"),
    ("name: t\nspace: space.yaml\nmode: grid\n", "study.yaml:3: mode: Input should be 'search' or 'ablation'"),
    ("name: t\nspace: space.yaml\nsampler: cmaes\n", "sampler: Input should be 'tpe', 'nsga2', 'random' or 'gp'"),
    ("name: t\nspace: space.yaml\nobjectives: {latency_ms: max}\n", "latency_ms should be minimised, not maximised"),
    ("name: t\nspace: space.yaml\nobjectives: {psnr: max}\n", "unknown metric 'psnr' (did you mean 'psnr_y'?)"),
    ("name: t\nspace: space.yaml\ntiming: ntire24\n", "timing: unknown timing protocol 'ntire24'; allowed: auto, repsr"),
    ("name: t\nspace: space.yaml\ntiming: ntire23-x2\n", "timing: protocol 'ntire23-x2' times x2 models, but this "
                                                         "study's candidates are x4"),
    ("name: t\nspace: space.yaml\nprotocols:\n  mine: {device: cpu, lr_size: [64, 64], warmup: -1}\n",
     "protocols.mine.warmup: Input should be greater than or equal to 0"),
    ("name: t\nspace: space.yaml\ndata: {train: DIV2K_train_HR}\n", "data.train: image folder not found:"),
    ("name: t\nspace: space.yaml\ntrain: {warm_start: stage1.pt}\n", "train.warm_start: checkpoint not found:"),
    ("name: t\nspace: space.yaml\nfixed: {scale: 2, branches: 2}\n", "fixed: 'branches' cannot be fixed by a study"),
    ("name: t\nspace: space.yaml\nfixed: {unshuffle: 3}\ntrain: {lr_patch: 32}\n",
     "train.lr_patch: lr_patch=32 does not fit plain with unshuffle 3, rep with unshuffle 3"),
    ("name: my study\nspace: space.yaml\n", "name: name 'my study' becomes a folder name"),
    ("name: t\nspace: space.yaml\nname: u\n", "study.yaml:3: name: key written twice"),
])
def test_malformed_study_files_name_the_problem(folder, text, expected):
    found = problems_of(folder, text)
    assert any(expected in p for p in found), found
    with pytest.raises(SrSearchError):
        load_study(folder / "study.yaml")


def test_space_problems_are_reported_through_the_study(folder):
    write(folder, "params:\n  block: [rep, resnet]\n  frozen_bn: {value: 0.5, when: {batch_norm: true}}\n",
          "bad_space.yaml")
    found = problems_of(folder, "name: t\nspace: bad_space.yaml\n")
    assert any("bad_space.yaml:2: params.block[1]: block=resnet is not allowed" in p for p in found)
    assert any("bad_space.yaml:3: params.frozen_bn.when.batch_norm: condition on 'batch_norm', which is not an "
               "ArchSpec field" in p for p in found)


def test_search_study_needs_a_fixed_scale(folder):
    write(folder, "params: {scale: [2, 4], depth: [1, 2]}\n", "scales.yaml")
    found = problems_of(folder, "name: t\nspace: scales.yaml\n")
    assert any("the space lets 'scale' vary" in p for p in found)
    assert problems_of(folder, "name: t\nspace: scales.yaml\nfixed: {scale: 2}\n") == []


def test_every_problem_is_reported_at_once(folder):
    write(folder, "name: t\nspace: space.yaml\nn_trials: 0\nbaselines: [nope]\ntrain: {batch_size: 0}\n"
                  "objectives: {psnr_y: min}\n")
    with pytest.raises(SrSearchError) as info:
        load_study(folder / "study.yaml")
    lines = str(info.value).splitlines()
    assert lines[0].startswith("4 problems in ") and lines[0].endswith("study.yaml:")
    assert [line.split(": ")[1] for line in lines[1:]] == ["n_trials", "baselines[0]", "train.batch_size",
                                                           "objectives.psnr_y"]
    assert [line.split(":")[1] for line in lines[1:]] == ["3", "4", "5", "6"]


def test_ablation_grid_problems_point_at_the_factor(folder):
    text = ("name: t\nspace: space.yaml\nmode: ablation\nbase: {block: rep, channels: 8, depth: 1}\n"
            "factors:\n  depth: [1, 3]\n  width: [1, 2]\n")
    found = problems_of(folder, text)
    assert any("study.yaml:6: factors.depth[1]: level 3 is outside the space: depth=3" in p for p in found)
    assert any("study.yaml:7: factors.width: unknown factor 'width'" in p for p in found)


# --- paths, defaults, overrides -----------------------------------------------------------------------------


def test_relative_paths_resolve_against_the_study_file(tmp_path, monkeypatch):
    (tmp_path / "spaces").mkdir()
    (tmp_path / "spaces" / "s.yaml").write_text(SPACE)
    (tmp_path / "exp" / "imgs" / "val").mkdir(parents=True)
    from PIL import Image  # the folders must hold readable images (checked with the study)

    Image.new("RGB", (200, 200)).save(tmp_path / "exp" / "imgs" / "val" / "a.png")
    study_file = write(tmp_path / "exp", "name: rel\nspace: ../spaces/s.yaml\n"
                                         "data: {train: imgs, val: {mine: imgs/val, builtin: 'builtin:'}}\n")
    monkeypatch.chdir(ROOT)
    study = load_study(study_file)
    assert study.space == (tmp_path / "spaces" / "s.yaml").resolve()
    assert study.data.train == str((tmp_path / "exp" / "imgs").resolve())
    assert study.data.val == {"mine": str((tmp_path / "exp" / "imgs" / "val").resolve()), "builtin": "builtin:"}
    assert study.out_dir == Path("runs") / "rel"


def test_defaults_fill_what_the_file_leaves_out(folder):
    study = load_study(write(folder, "name: t\nspace: space.yaml\n"))
    assert (study.mode, study.sampler, study.n_trials, study.seed, study.baselines) == ("search", "tpe", 50, 0, ())
    assert study.objectives == {"psnr_y": "max", "throughput": "max"}
    assert study.data.train == "builtin:" and study.timing == "auto" and study.keep_checkpoints is False
    assert study.resources.gpus_per_trial == (1.0 if torch.cuda.is_available() else 0.0)
    assert study.resources.concurrency == 1


def test_with_overrides_makes_a_new_validated_study(folder):
    study = load_study(write(folder, "name: t\nspace: space.yaml\ntrain: {iterations: 100, batch_size: 4}\n"))
    other = with_overrides(study, n_trials=5, train={"iterations": 7})
    assert (other.n_trials, other.train.iterations, other.train.batch_size) == (5, 7, 4)
    assert (study.n_trials, study.train.iterations) == (50, 100)
    assert with_overrides(study, name="u").out_dir == Path("runs") / "u"
    with pytest.raises(SrSearchError, match="n_trials: Input should be greater than or equal to 1"):
        with_overrides(study, n_trials=0)
    with pytest.raises(SrSearchError, match="unknown study field 'trials'"):
        with_overrides(study, trials=3)


def test_to_yaml_round_trips(tmp_path):
    study = load_study(ROOT / "studies" / "repsr_ablation.yaml")
    frozen = write(tmp_path, study.to_yaml(), "frozen.yaml")
    assert load_study(frozen) == study
    assert "n_trials" not in yaml.safe_load(study.to_yaml())  # the other mode's keys are left out


def test_timing_protocols_by_name_custom_and_inline(folder):
    study = load_study(write(folder, "name: t\nspace: space.yaml\nprotocols:\n"
                                     "  tiny: {device: cpu, lr_size: [32, 32], reps: 3}\ntiming: tiny\n"))
    tiny = study.protocol
    assert (tiny.name, tiny.lr_size, tiny.reps) == ("tiny", (32, 32), 3)
    # 'auto' is resolved once, when the study is loaded: repsr for trials that get a GPU, else cpu
    auto = load_study(write(folder, "name: t\nspace: space.yaml\nresources: {gpus_per_trial: 0}\n", "auto.yaml"))
    assert auto.protocol.name == "cpu"
    gpu = load_study(write(folder, "name: t\nspace: space.yaml\nresources: {gpus_per_trial: 1}\n", "gpu.yaml"))
    assert gpu.protocol.name == "repsr"
    inline = load_study(write(folder, "name: t\nspace: space.yaml\ntiming: {device: cpu, lr_size: [16, 16]}\n",
                              "inline.yaml"))
    assert inline.protocol.lr_size == (16, 16)


def test_ablation_base_from_a_preset_with_changes_and_fixed(tmp_path):
    text = ("name: t\nspace: " + str(ROOT / "searchspace" / "repsr.yaml") + "\nmode: ablation\n"
            "base: {preset: repsr-m4c16-x4, channels: 32}\nfixed: {scale: 2}\nfactors: {branches: [1]}\nseeds: [3, 4]\n")
    study = load_study(write(tmp_path, text))
    base = study.base_spec()
    assert base == PRESETS["repsr-m4c16-x4"].replace(channels=32, scale=2)
    points = study.ablation_grid()
    assert [p.spec for p in points] == [base, base.replace(branches=1)]


def test_describe_a_space_and_a_search_study():
    text = describe(ROOT / "searchspace" / "efficient_sr.yaml")
    assert "combinations" in text and "sample 0:" in text
    text = describe(ROOT / "studies" / "smoke.yaml")
    assert "sampler random, 3 trials" in text and "sample 2:" in text


def test_cli_validate_exits_1_with_every_problem(folder):
    from typer.testing import CliRunner

    from sr_search.cli import app

    bad = write(folder, "name: t\nspace: space.yaml\nn_trials: -1\nsampler: annealing\n")
    result = CliRunner().invoke(app, ["validate", str(bad)])
    assert result.exit_code == 1
    assert "n_trials" in result.output and "sampler" in result.output
    good = write(folder, "name: t\nspace: space.yaml\n", "good.yaml")
    assert CliRunner().invoke(app, ["validate", str(good)]).exit_code == 0
