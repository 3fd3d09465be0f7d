"""Hostile or careless study files and data (issue 12, cases 5-7): each is refused before anything heavy starts,
with a message that names the file, key, value and what is allowed; exit 1, never a hang or exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from sr_search.cli import app
from sr_search.errors import SrSearchError
from sr_search.study.config import load_study, validate_files
from study_files import SPACE, alias_bomb, write

runner = CliRunner()

@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "space.yaml").write_text(SPACE)
    return tmp_path


def problems_of(path: Path) -> list[str]:
    return [str(p) for p in validate_files([path])]


# --- case 6: YAML that would eat the machine ---------------------------------------------------------------


def test_yaml_alias_bomb_is_refused_before_it_expands(folder):
    path = write(folder, "name: bomb\nspace: space.yaml\n" + alias_bomb())
    found = problems_of(path)
    assert any("anchors and aliases" in p and "100,000 values" in p and "study.yaml:" in p for p in found), found
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 1 and "anchors and aliases" in result.output
    with pytest.raises(SrSearchError, match="anchors and aliases"):
        load_study(path)


def test_yaml_alias_bomb_in_the_space_file_is_refused_too(folder):
    write(folder, "params:\n  block: plain\n" + alias_bomb(), name="space.yaml")
    path = write(folder, "name: t\nspace: space.yaml\n")
    assert any("space.yaml" in p and "anchors and aliases" in p for p in problems_of(path))


def test_yaml_nested_20000_deep_is_refused_without_recursion(folder):
    path = write(folder, "name: deep\nspace: " + "[" * 20_000 + "]" * 20_000 + "\n")
    found = problems_of(path)
    assert any("study.yaml:2" in p and "nested more than 50 levels" in p for p in found), found
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 1 and "nested more than 50 levels" in result.output, result.output
    deep_map = "name: deep\nspace: space.yaml\nfixed:\n" + "".join("  " * (i + 1) + f"k{i}:\n" for i in range(60))
    assert any("nested more than 50 levels" in p for p in problems_of(write(folder, deep_map)))


def test_ordinary_anchors_and_aliases_still_work(folder):
    path = write(folder, "name: t\nspace: space.yaml\ntrain: &t {iterations: 10}\nmode: search\n"
                         "seed: 3\nn_trials: 2\n")
    assert problems_of(path) == []
    space = "params: &p\n  block: [rep, plain]\n  channels: &c [8, 16]\n  depth: [1, 2]\nconstraints: {}\n"
    write(folder, space, name="space.yaml")
    assert load_study(path).n_trials == 2


# --- case 7: values that must not be accepted -------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("n_trials: 99999999999999999999999999999\n", "study.yaml:3: n_trials: Input should be less than or equal to 100000"),
    ("n_trials: true\n", "study.yaml:3: n_trials: expected a number, got true (true/false is not a number)"),
    ("seed: 4294967296\n", "study.yaml:3: seed: Input should be less than or equal to 2147483647"),
    ("seed: false\n", "seed: expected a number, got false"),
    ("train: {lr: .inf}\n", "study.yaml:3: train.lr: Input should be a finite number"),
    ("train: {lr: .nan}\n", "train.lr: Input should be a finite number"),
    ("train: {iterations: true}\n", "train.iterations: expected a number, got true"),
    ("train: {iterations: 1000000000000}\n", "train.iterations: Input should be less than or equal to 100000000"),
    ("train: {batch_size: 10000000}\n", "train.batch_size: Input should be less than or equal to 65536"),
    ("train: {gamma: .nan}\n", "train.gamma: Input should be a finite number"),
    ("train: {milestones: [0.5, true]}\n", "train.milestones[1]: expected a number, got true"),
    ("resources: {concurrency: true}\n", "resources.concurrency: expected a number, got true"),
    ("resources: {cpus_per_trial: .inf}\n", "resources.cpus_per_trial: Input should be a finite number"),
    ("resources: {gpus_per_trial: 1000}\n", "resources.gpus_per_trial: Input should be less than or equal to 64"),
    ("data: {val_max_size: true}\n", "data.val_max_size: expected a number, got true"),
    ("constraints: {max_latency_ms: .inf}\n", "constraints.max_latency_ms: Input should be a finite number"),
    ("constraints: {max_params: true}\n", "constraints.max_params: expected a number, got true"),
    ("timing: {device: cpu, lr_size: [true, 64]}\n", "timing.lr_size[0]: expected a number, got true"),
    ("timing: {device: cpu, lr_size: [64, 10000000]}\n", "timing.lr_size[1]: Input should be less than or equal to 65536"),
    ('name: "x\\ny"\n', "name: name 'x\\ny' becomes a folder name"),
    ('name: "x\\n"\n', "name: name 'x\\n' becomes a folder name"),
    ('name: "x\\ty"\n', "becomes a folder name"),
    ('data: {val: {"set5\\n": "builtin:"}}\n', "validation set name 'set5\\n' must use only letters"),
])
def test_out_of_range_values_booleans_and_control_characters_are_refused(folder, text, expected):
    body = text if text.startswith("name:") else "name: t\n" + text
    body = body.replace("name: t\n", "name: t\nspace: space.yaml\n") if "space:" not in body else body
    if text.startswith("name:"):
        body = text + "space: space.yaml\n"
    found = problems_of(write(folder, body))
    assert any(expected in p for p in found), found
    with pytest.raises(SrSearchError):
        load_study(folder / "study.yaml")


def test_ablation_values_refuse_booleans_too(folder):
    study = ("name: t\nspace: space.yaml\nmode: ablation\nbase: {block: rep, channels: 8, depth: 1}\n"
             "factors: {depth: [2]}\nseeds: [0, true]\n")
    assert any("seeds[1]: expected a number, got true" in p for p in problems_of(write(folder, study)))
    study = ("name: t\nspace: space.yaml\nmode: ablation\nbase: {block: rep, channels: true, depth: 1}\n"
             "factors: {depth: [2]}\n")
    assert any("channels" in p and "got true" in p for p in problems_of(write(folder, study)))
    study = ("name: t\nspace: space.yaml\nmode: ablation\nbase: {block: rep, channels: 8, depth: 1, branches: true}\n"
             "factors: {depth: [2]}\n")
    assert any("branches" in p and "got true" in p for p in problems_of(write(folder, study)))


def test_cli_refuses_them_with_exit_1(folder):
    result = runner.invoke(app, ["launch", str(write(folder, "name: t\nspace: space.yaml\nn_trials: true\n")),
                                 "--dry-run"])
    assert result.exit_code == 1 and "n_trials: expected a number, got true" in result.output, result.output
    result = runner.invoke(app, ["launch", str(write(folder, 'name: "evil\\nname"\nspace: space.yaml\n')),
                                 "--dry-run", "--out", str(folder / "out")])
    assert result.exit_code == 1 and "becomes a folder name" in result.output, result.output
    assert not (folder / "out").exists()


def test_trial_ids_with_a_trailing_newline_are_refused():
    from sr_search.results.study_dir import check_trial_id

    assert check_trial_id("0007") == "0007"
    for bad in ("0007\n", "7", "../0007", "0007/..", "/abs/0007", "٠٠٠٧"):
        with pytest.raises(SrSearchError, match="not a trial id"):
            check_trial_id(bad)


# --- case 5: data checked before Ray starts -----------------------------------------------------------------


def image(path: Path, w: int, h: int, seed: int = 0) -> Path:
    import numpy as np
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    return path


def data_study(folder: Path, train: str = "train", val: str = "val", extra: str = "") -> Path:
    """An x4 search over rep/plain (lr_patch 32: 128 px HR patches) on local folders."""
    return write(folder, f"name: t\nspace: space.yaml\ndata: {{train: {train}, val: {{mine: {val}}}}}\n{extra}")


@pytest.fixture
def good_data(folder: Path) -> Path:
    for i in range(3):
        image(folder / "train" / f"t{i}.png", 160, 140, i)
    image(folder / "val" / "v.png", 64, 48)
    return folder


def test_good_local_data_passes(good_data):
    assert problems_of(data_study(good_data)) == []


def test_empty_image_folder_is_refused(good_data):
    (good_data / "empty").mkdir()
    (good_data / "empty" / "notes.txt").write_text("no images here")
    found = problems_of(data_study(good_data, train="empty"))
    assert any("data.train:" in p and "empty' contains no images" in p for p in found), found


def test_corrupt_pngs_and_a_text_file_named_png_name_their_paths(good_data):
    whole = (good_data / "train" / "t0.png").read_bytes()
    (good_data / "train" / "truncated.png").write_bytes(whole[: len(whole) // 2])
    flipped = bytearray(whole)
    flipped[len(flipped) // 2] ^= 0xFF
    (good_data / "train" / "flipped.png").write_bytes(bytes(flipped))
    (good_data / "val" / "notes.png").write_text("this is text, not a PNG")
    found = problems_of(data_study(good_data))
    for name, key in (("truncated.png", "data.train"), ("flipped.png", "data.train"), ("notes.png", "data.val.mine")):
        assert any(f"{key}: cannot read image {good_data}" in p and name in p for p in found), (name, found)


def test_a_1x1_image_and_images_smaller_than_the_patch_name_the_minimum_size(good_data):
    image(good_data / "train" / "dot.png", 1, 1)
    image(good_data / "train" / "small.png", 100, 300)
    image(good_data / "val" / "dot.png", 1, 1)
    found = problems_of(data_study(good_data))
    train = [p for p in found if "data.train:" in p]
    assert len(train) == 1 and "2 of 5 training images are smaller than the 128x128 px HR patch" in train[0], found
    assert "dot.png (1x1)" in train[0] and "small.png (100x300)" in train[0]
    assert any("data.val.mine:" in p and "dot.png is 1x1 px; the candidates need at least 4x4 px" in p
               for p in found), found


def test_validation_images_must_fit_the_largest_unshuffle_and_block_tile(good_data):
    (good_data / "space.yaml").write_text("params:\n  block: [plain, rlfb]\n  channels: 16\n  depth: 1\n"
                                          "  unshuffle: [1, 2]\n")
    study = data_study(good_data, extra="train: {lr_patch: 30}\n")  # ESA tile 15 px after unshuffle 2
    found = problems_of(study)
    assert any("data.val.mine:" in p and "v.png is 64x48 px; the candidates need at least 120x120 px "
               "(LR 30 px at x4, for rlfb with unshuffle 2)" in p for p in found), found


def test_lr_patch_larger_than_every_training_image(folder):
    found = problems_of(write(folder, "name: t\nspace: space.yaml\ntrain: {lr_patch: 2000}\n"))  # builtin data
    assert any("train.lr_patch: lr_patch=2000 at x4 needs training images of at least 8000x8000 px" in p
               and "coffee.png (600x400)" in p and "the largest patch every image holds is lr_patch=100" in p
               for p in found), found
    assert problems_of(write(folder, "name: t\nspace: space.yaml\ntrain: {lr_patch: 100}\n")) == []
    assert any("Input should be less than or equal to 4096" in p
               for p in problems_of(write(folder, "name: t\nspace: space.yaml\ntrain: {lr_patch: 96000}\n")))


def test_val_max_size_below_what_the_candidates_need(good_data):
    (good_data / "space.yaml").write_text("params:\n  block: rlfb\n  channels: 16\n  depth: 1\n  unshuffle: 2\n")
    image(good_data / "val" / "v.png", 300, 300)
    path = write(good_data, "name: t\nspace: space.yaml\ntrain: {lr_patch: 30}\n"
                            "data: {train: train, val: {mine: val}, val_max_size: 64}\n")
    found = problems_of(path)
    assert any("data.val_max_size: val_max_size=64 crops validation images below the 120x120 px the candidates "
               "need (LR 30 px at x4, for rlfb with unshuffle 2)" in p for p in found), found


def test_train_max_images_limits_what_is_checked(good_data):
    image(good_data / "train" / "zz_small.png", 10, 10)  # sorted last: not used with train_max_images: 3
    assert problems_of(write(good_data, "name: t\nspace: space.yaml\n"
                                        "data: {train: train, val: {mine: val}, train_max_images: 3}\n")) == []
    assert any("zz_small.png (10x10)" in p for p in problems_of(data_study(good_data)))


def test_launch_refuses_bad_data_before_ray_starts(good_data, monkeypatch):
    import sr_search.run.tune.launch

    (good_data / "train" / "t1.png").write_text("not an image")
    monkeypatch.setattr(sr_search.run.tune.launch, "launch",
                        lambda *a, **k: pytest.fail("launch must not start with unreadable data"))
    result = runner.invoke(app, ["launch", str(data_study(good_data)), "--out", str(good_data / "run")])
    assert result.exit_code == 1, result.output
    assert f"cannot read image {good_data / 'train' / 't1.png'}" in result.output
    assert not (good_data / "run").exists()
    result = runner.invoke(app, ["validate", str(good_data / "study.yaml")])
    assert result.exit_code == 1 and "t1.png" in result.output


@pytest.mark.parametrize("space, expected", [
    ("params:\n  block: rep\n  depth: {low: 1, high: 99999999999999999999999}\n",
     ("params.depth: the range includes 99999999999999999999999: depth=99999999999999999999999 is not allowed; "
      "allowed: an integer >= 0 and <= 128")),
    ("params:\n  block: rep\n  width_mult: {low: 0.5, high: 16.0, step: 0.0000001}\n",
     "params.width_mult: the range holds 155,000,001 values, more than the 100,000"),
    ("params:\n  block: rep\n  channels: [true, 8]\n", "params.channels[0]: channels=true is not allowed"),
    ("params:\n  block: rep\n  width_mult: {low: .nan, high: 2.0}\n", "params.width_mult.low: low must be a number"),
    ("params:\n  block: rep\nconstraints: {max_macs: true}\n",
     "space.yaml:3: constraints.max_macs: expected a number, got true (true/false is not a number)"),
    ("params:\n  block: rep\nconstraints: {max_params: .inf}\n", "constraints.max_params: Input should be a finite"),
])
def test_space_files_refuse_huge_ranges_booleans_and_infinities(folder, space, expected):
    path = write(folder, space, name="space.yaml")
    found = problems_of(path)
    assert any(expected in p for p in found), found
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 1, result.output


def test_ablation_grids_and_runs_are_bounded(folder):
    write(folder, "params:\n  block: rep\n  channels: {low: 1, high: 1024}\n  depth: [1, 2, 3, 4]\n"
                  "  activation: [relu, prelu, gelu, silu]\n  branches: [1, 2, 3, 4]\n  width_mult: [1.0, 2.0, 3.0, 4.0]\n"
                  "  branch_form: [c3_bn_c1, c3_bn+c1_bn, c3_bn_c1_bn, c1_bn_c3]\n  global_skip: [nearest, bilinear, bicubic, none]\n",
          name="space.yaml")
    base = "base: {block: rep, channels: 8, depth: 1, activation: relu, branches: 1, width_mult: 1.0}\n"
    factorial = ("name: t\nspace: space.yaml\nmode: ablation\ndesign: factorial\n" + base +
                 "factors:\n  channels: [8, 16, 24, 32]\n  depth: [1, 2, 3, 4]\n  activation: [relu, prelu, gelu, silu]\n"
                 "  branches: [1, 2, 3, 4]\n  width_mult: [1.0, 2.0, 3.0, 4.0]\n"
                 "  branch_form: [c3_bn_c1, c3_bn+c1_bn, c3_bn_c1_bn, c1_bn_c3]\n"
                 "  global_skip: [nearest, bilinear, bicubic, none]\n")
    found = problems_of(write(folder, factorial))
    assert any("factors: the factorial design has 16,384 cells (4 x 4 x 4 x 4 x 4 x 4 x 4 levels), more than the "
               "10,000" in p for p in found), found
    seeds = ("name: t\nspace: space.yaml\nmode: ablation\n" + base +
             f"factors: {{channels: {list(range(9, 160))}}}\nseeds: {list(range(1000))}\n")
    found = problems_of(write(folder, seeds))
    assert any("seeds: 152 variants x 1000 seeds = 152,000 runs, more than the 100,000" in p for p in found), found


def test_a_1x1_training_image_gives_no_impossible_advice(good_data):
    image(good_data / "train" / "dot.png", 1, 1)
    train = [p for p in problems_of(data_study(good_data)) if "data.train:" in p]
    assert len(train) == 1 and train[0].endswith("dot.png (1x1); drop them"), train
