"""A block API that cannot lie: deploy_key honesty proved by the contract (the two declaration traps of 0.2),
deploy errors located (border band vs interior), the untrained check before training, failure reasons shown,
block files first-class (--block-module, sibling imports, hashes, refused resume), family fields in front tables,
fusion helpers and field conditions. Each test here fails on sr-search 0.2."""

from __future__ import annotations

import json
import random
import re
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from sr_search import load_study
from sr_search.cli import app
from sr_search.errors import SrSearchError
from sr_search.model.blocks import REGISTRY, fuse, load_block_module
from sr_search.model.spec import ArchSpec
from sr_search.model.testing import check_deploy_keys, check_family, option_specs, random_spec

ROOT = Path(__file__).resolve().parents[1]
MARKED = re.compile(r"<!-- readme-file: (?P<name>[\w.]+) -->\n```[a-z]*\n(?P<body>.*?)\n```\n", re.DOTALL)
RRRB = {m["name"]: m["body"] + "\n" for m in MARKED.finditer((ROOT / "README.md").read_text())}["rrrb_blocks.py"]

TWIN = '''
import copy
from torch import nn
from sr_search.model.blocks import BlockFamily, fuse, layers, register


class Twin(nn.Module):  # 3x3 + 1x1 branches, fused: deploys exactly to plain's conv + activation
    def __init__(self, channels, act):
        super().__init__()
        self.c3, self.c1 = nn.Conv2d(channels, channels, 3, padding=1), nn.Conv2d(channels, channels, 1)
        self.act = layers.make_act(act, channels)

    def forward(self, x):
        return self.act(self.c3(x) + self.c1(x))

    def to_deploy(self):
        kernel = fuse.add(fuse.conv_kernel(self.c3), fuse.pad_to(fuse.conv_kernel(self.c1), 3))
        return nn.Sequential(fuse.to_conv(kernel), copy.deepcopy(self.act))


@register
class TwinFamily(BlockFamily):
    name = "twin"
    deploys_as = "plain"
    VGG

    def block(self, spec):
        return Twin(spec.channels, spec.activation)
'''


@pytest.fixture
def family_file(tmp_path):
    """Write a block file (text, a name to register it under) into a folder of its own and load it; every family
    registered by the test is forgotten afterwards."""
    before = set(REGISTRY)

    def load(text: str, name: str, folder: str = "blocks") -> str:
        path = tmp_path / folder / f"{name}.py"
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
        load_block_module(path)
        return str(path)

    yield load
    for name in set(REGISTRY) - before:
        sys.modules.pop(type(REGISTRY.pop(name)).__module__, None)


def rrrb(name: str, text: str = RRRB) -> str:
    return text.replace('name = "rrrb"', f'name = "{name}"')


# --- 1. deploy_key honesty ----------------------------------------------------------------------------------------


def test_deploys_as_plain_without_vgg_style_is_refused_naming_the_declaration(family_file):
    family_file(TWIN.replace("VGG", ""), "twin_blocks")
    with pytest.raises(AssertionError) as caught:
        check_family("twin", random_specs=2)
    message = str(caught.value)
    assert "deploys_as='plain'" in message and "set vgg_style = True, or drop deploys_as" in message, message
    assert "deployed parameters" in message


def test_the_same_twin_with_vgg_style_shares_plain_timings_honestly(family_file):
    family_file(TWIN.replace("VGG", "vgg_style = True"), "twin_ok_blocks")
    assert check_family("twin", random_specs=2) <= 1e-4
    spec = ArchSpec(block="twin", scale=2, channels=8, depth=2)
    assert spec.deploy_key() == spec.replace(block="plain").deploy_key()


def test_a_field_that_changes_the_deployed_network_missing_from_deploy_fields_is_refused(family_file):
    family_file(rrrb("rrrb_lie", RRRB.replace('deploy_fields = ("erb",)', "deploy_fields = ()")), "rrrb_lie")
    a = ArchSpec(block="rrrb_lie", channels=8, depth=2)
    assert a.deploy_key() == a.replace(erb=True).deploy_key()  # the lie: one key for two deployed networks
    with pytest.raises(AssertionError) as caught:
        check_family("rrrb_lie", random_specs=2)
    message = str(caught.value)
    assert "field(s) erb change the deployed network but are not in deploy_fields" in message, message
    assert "add 'erb' to deploy_fields" in message


@pytest.mark.parametrize("block", sorted(REGISTRY))
def test_every_builtin_family_has_an_honest_deploy_key(block):
    options = list(option_specs(block))
    randoms = [random_spec(block, random.Random(f"{block}-keys-{i}")) for i in range(3)]
    compared = check_deploy_keys(block, [options[0], *randoms, *options[1:]], around=2)
    if block in ("rep", "ecb", "span"):  # families with training-only fields really share keys
        assert compared > 0


# --- 2. where a deploy error lies; the check before training ------------------------------------------------------


ZERO_PAD = "nn.functional.pad(y, (1, 1, 1, 1))"


def test_the_readme_rrrb_keeps_the_contract_and_its_erb_is_a_deploy_field(family_file):
    family_file(RRRB, "rrrb_blocks")
    assert check_family("rrrb", random_specs=2) <= 1e-4
    assert check_family("rrrb", random_specs=1, dtype=torch.float64) <= 1e-10
    from sr_search.model.cost import deploy_pair

    counts = [sum(p.numel() for p in deploy_pair(ArchSpec(block="rrrb", scale=2, channels=16, depth=2, erb=e))[1]
                  .parameters()) for e in (False, True)]
    assert counts == [6860, 11532]  # the README's figures


def test_zero_padding_instead_of_bias_padding_is_located_in_the_border_band(family_file):
    family_file(rrrb("rrrb_zero", RRRB.replace("fuse.pad_with(y, self.expand.bias)", ZERO_PAD)), "rrrb_zero")
    with pytest.raises(AssertionError) as caught:
        check_family("rrrb_zero", random_specs=0)
    message = str(caught.value)
    border, interior = (float(x) for x in re.search(r"border band \(outer \d+ LR px\) (\S+), interior (\S+):",
                                                     message).groups())
    assert border > 1e-3 and interior < 1e-5, message
    assert "padding problem" in message and "fuse.pad_with" in message


def test_a_broken_fusion_fails_the_trial_before_training(family_file, tmp_path, monkeypatch):
    """The untrained model (random BN statistics) is deployed and compared before the first iteration: the trial
    is a failed row naming the border band, and the trainer is never built."""
    from sr_search.run import trial as trial_mod
    from sr_search.run.plan import make_plan

    family_file(rrrb("rrrb_zero", RRRB.replace("fuse.pad_with(y, self.expand.bias)", ZERO_PAD)), "rrrb_zero")
    (tmp_path / "space.yaml").write_text("params: {block: rrrb_zero, scale: 2, colors: 3, channels: 8, depth: 1}\n")
    (tmp_path / "s.yaml").write_text(
        "name: zero\nspace: space.yaml\nmode: ablation\nbase: {block: rrrb_zero, scale: 2, channels: 8, depth: 1}\n"
        "factors: {channels: [8]}\ntiming: {device: cpu, precision: fp32, batch: 1, lr_size: [24, 24], warmup: 1, "
        "reps: 2, threads: 1}\ntrain: {iterations: 4, batch_size: 2, lr_patch: 16}\ndata: {val_max_size: 48}\n")
    with pytest.raises(SrSearchError, match="'rrrb_zero' breaks the block contract.*border band"):
        load_study(tmp_path / "s.yaml")  # validate (and launch) refuse it before anything starts ...
    from sr_search.study import checks

    monkeypatch.setattr(checks, "contract_problems", lambda blocks: [])  # ... a trial catches what slips through
    study = load_study(tmp_path / "s.yaml")

    def no_training(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(trial_mod.train, "Trainer", no_training)
    monkeypatch.setattr(trial_mod, "_train_data", no_training)  # before the data is even loaded
    task = make_plan(study)[0].task("0000", study)
    row = trial_mod.run_trial(task, study, device=torch.device("cpu"), exclusive_timing=True).row
    assert row["status"] == "failed", row
    assert row["error"].startswith("before training: deployed model differs"), row["error"]
    assert "border band" in row["error"] and "padding problem" in row["error"]
    assert row["reparam_max_abs_err"] > 1e-4 and "train_iterations" not in row
    assert "rrrb_zero.py sha256:" in json.loads(row["versions"])["block"]  # the block file that made the row


def test_the_untrained_check_passes_exact_families_on_their_dtype():
    from sr_search.model.deploy import check_untrained
    from sr_search.model.network import build
    from sr_search.model.testing import randomize_statistics

    model = build(ArchSpec(block="rep", scale=2, channels=8, depth=2))
    randomize_statistics(model, torch.Generator().manual_seed(0))
    err, problem = check_untrained(model.double(), tolerance=1e-10)
    assert problem is None and err <= 1e-10


def test_a_deep_exact_network_with_random_bn_statistics_is_not_failed_by_rounding():
    """An untrained 24-block RepSR with random BN statistics outputs values near 60; float32 rounding alone then
    exceeds 1e-4 (0.2's absolute tolerance): the check before training scales its tolerance with the output."""
    from sr_search.run.trial import _check_untrained

    spec = ArchSpec(block="rep", scale=4, channels=64, depth=24, branches=4, width_mult=3.0)
    assert _check_untrained(spec, torch.device("cpu"), 0) is None


# --- 3. failures are visible --------------------------------------------------------------------------------------


def test_the_progress_lines_show_each_new_failure_reason_once_and_the_end_lists_them():
    from sr_search.results.progress import ProgressState, failure_lines
    from sr_search.run.tune.launch import LinePrinter

    lines: list[str] = []
    printer = LinePrinter(lines.append)
    state = ProgressState.start(3, pd.DataFrame(), {"psnr_y": "max"}, None)
    for i, err in enumerate(["max abs error 0.037", "max abs error 0.041", "timing failed: x"]):
        state.finish(f"000{i}", {"trial_id": f"000{i}", "block": "rrrb", "status": "failed", "error": err})
        printer(state)
    shown = [line for line in lines if line.startswith("  failed")]
    assert shown == ["  failed 0000 rrrb: max abs error 0.037", "  failed 0002 rrrb: timing failed: x"], lines
    rows = pd.DataFrame([{"trial_id": "0000", "block": "rrrb", "status": "failed", "error": "max abs error 0.037"},
                         {"trial_id": "0001", "block": "plain", "status": "failed", "error": "boom"}])
    end = failure_lines(rows)
    assert end[0].startswith("Every trial failed (2 of 2)") and "  0000 rrrb: max abs error 0.037" in end
    assert failure_lines(rows.assign(status=["complete", "failed"]))[0] == "Failed trials (1 of 2):"


# --- 4. block files first-class -----------------------------------------------------------------------------------


def test_inspect_time_and_presets_take_block_module(tmp_path):
    path = tmp_path / "rrrb_cli.py"
    path.write_text(rrrb("rrrb_cli"))
    before = set(REGISTRY)
    try:
        spec = '{"block": "rrrb_cli", "scale": 2, "channels": 16, "depth": 2, "erb": true}'
        result = CliRunner().invoke(app, ["inspect", spec, "--block-module", str(path)])
        assert result.exit_code == 0, result.output
        assert "rrrb_cli" in result.output and "11,532" in result.output
        small = '{"block": "rrrb_cli", "scale": 2, "channels": 8, "depth": 1}'
        result = CliRunner().invoke(app, ["time", small, "--block-module", str(path), "--protocol", "cpu"])
        assert result.exit_code == 0 and "rrrb_cli" in result.output, result.output
        result = CliRunner().invoke(app, ["presets", "--block-module", str(path)])
        assert result.exit_code == 0 and re.search(r"rrrb_cli\s+ratio, erb\*", result.output), result.output
    finally:
        for name in set(REGISTRY) - before:
            sys.modules.pop(type(REGISTRY.pop(name)).__module__, None)


def test_block_files_share_a_helper_module_and_import_each_other_without_double_registration(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "my_helpers_23.py").write_text("from torch import nn\n\ndef conv3(c):\n    return nn.Conv2d(c, c, 3, "
                                             "padding=1)\n")
    family = ("from torch import nn\nfrom sr_search.model.blocks import BlockFamily, register\n"
              "from my_helpers_23 import conv3\n\n\n@register\nclass {cls}(BlockFamily):\n    name = '{name}'\n\n"
              "    def block(self, spec):\n        return nn.Sequential(conv3(spec.channels), nn.ReLU())\n")
    (folder / "first_blocks_23.py").write_text(family.format(cls="First", name="first23"))
    (folder / "second_blocks_23.py").write_text("import first_blocks_23  # noqa\n"
                                                + family.format(cls="Second", name="second23"))
    before = set(REGISTRY)
    try:
        load_block_module(folder / "second_blocks_23.py")  # imports the first file by name, as a sibling
        load_block_module(folder / "first_blocks_23.py")  # the same module: no "already registered"
        assert {"first23", "second23"} <= set(REGISTRY)
        assert type(REGISTRY["first23"]).__module__ == "first_blocks_23"
        assert check_family("second23", random_specs=0) == 0.0
        from sr_search.model.blocks import block_module_files

        hashed = block_module_files([str(folder / "second_blocks_23.py")])  # the helpers it imported shape it too
        assert set(hashed) == {str(folder / n) for n in ("first_blocks_23.py", "my_helpers_23.py",
                                                          "second_blocks_23.py")}
    finally:
        for name in set(REGISTRY) - before:
            sys.modules.pop(type(REGISTRY.pop(name)).__module__, None)
        for name in ("first_blocks_23", "my_helpers_23"):
            sys.modules.pop(name, None)


def test_block_files_are_hashed_and_a_resume_after_editing_one_is_refused(tmp_path, family_file):
    import yaml

    from sr_search.study.identity import check_resumable, resolved_yaml

    path = Path(family_file(rrrb("rrrb_hash"), "rrrb_hash"))
    (tmp_path / "space.yaml").write_text(f"block_modules: [{path}]\n"
                                         "params: {block: rrrb_hash, scale: 2, colors: 3, channels: 8, depth: 1}\n")
    (tmp_path / "s.yaml").write_text("name: h\nspace: space.yaml\nsampler: random\nn_trials: 2\n"
                                     "train: {iterations: 4, batch_size: 2, lr_patch: 16}\n")
    study = load_study(tmp_path / "s.yaml")
    frozen_study, frozen = study.to_yaml(), resolved_yaml(study)
    import hashlib

    assert yaml.safe_load(frozen)["block_files"] == {str(path): hashlib.sha256(path.read_bytes()).hexdigest()}
    assert check_resumable(frozen_study, frozen, study, tmp_path) == []

    path.write_text(path.read_text().replace("ratio: int = Field(2,", "ratio: int = Field(3,"))  # another network
    with pytest.raises(SrSearchError, match=re.escape(f"block module file {path}")) as caught:
        check_resumable(frozen_study, frozen, study, tmp_path)
    assert "--allow-block-change" in str(caught.value)
    allowed = check_resumable(frozen_study, frozen, study, tmp_path, allow_block_change=True)
    assert len(allowed) == 1 and str(path) in allowed[0]
    notes = yaml.safe_load(resolved_yaml(study, frozen, allowed))["block_changes"]
    assert notes[0]["change"] == allowed[0] and notes[0]["allowed_by"] == "--allow-block-change"
    # a study frozen by 0.2 recorded no hashes: it resumes (its space's paths are still compared)
    old = yaml.safe_load(frozen)
    del old["block_files"]
    assert check_resumable(frozen_study, yaml.safe_dump(old), study, tmp_path) == []


# --- 5. fusion algebra and field conditions -----------------------------------------------------------------------


def test_pad_with_and_avg_pool_kernel_are_exact_in_float64():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 5, 6, generator=g, dtype=torch.float64)
    bias = torch.rand(3, generator=g, dtype=torch.float64)
    conv = nn.Conv2d(3, 3, 1).double()
    # the bias-padding rule: a 1x1 conv, its output padded with its bias, then an unpadded 3x3 conv ...
    conv3 = nn.Conv2d(3, 4, 3).double()
    with torch.no_grad():
        conv.bias.copy_(bias)
        trained = conv3(fuse.pad_with(conv(x), conv.bias))
        fused = fuse.to_conv(fuse.after_1x1(fuse.conv_kernel(conv), fuse.conv_kernel(conv3)))(x)
    assert (trained - fused).abs().max() < 1e-12  # ... is one 3x3 conv, borders included
    padded = fuse.pad_with(x, bias, 2)
    assert padded.shape == (2, 3, 9, 10) and torch.equal(padded[:, :, 2:-2, 2:-2], x)
    assert torch.equal(padded[0, :, 0, 0], bias)
    w, b = fuse.avg_pool_kernel(3, 3, like=x)
    assert w.dtype == torch.float64 and not b.any()
    pooled = nn.AvgPool2d(3, 1, 1)(x)
    assert (torch.nn.functional.conv2d(x, w, b, padding=1) - pooled).abs().max() < 1e-12


CONDITIONAL = '''
from typing import Literal
from pydantic import Field
from torch import nn
from sr_search.model.blocks import BlockFamily, FamilyFields, problem, register


class Fields(FamilyFields):
    seq: bool = True
    seq_mult: int = Field(1, ge=1, le=4)
    branch_1x1: bool = True
    branch_avg: bool = True


@register
class Cond(BlockFamily):
    name = "cond23"
    Fields = Fields
    applies_when = {"seq_mult": {"seq": True}}

    def validate(self, spec):
        if not (spec.seq or spec.branch_1x1 or spec.branch_avg):
            raise problem(("seq", "branch_1x1", "branch_avg"), "at least one branch must be on")

    def block(self, spec):
        return nn.Identity()
'''


def test_inactive_fields_leave_arch_key_and_a_rule_can_name_several_fields(family_file):
    family_file(CONDITIONAL, "cond_blocks")
    off = [ArchSpec(block="cond23", seq=False, seq_mult=m) for m in (1, 3)]
    assert off[0] == off[1] and off[0].arch_key() == off[1].arch_key() and off[1].seq_mult == 1
    on = [ArchSpec(block="cond23", seq=True, seq_mult=m) for m in (1, 3)]
    assert on[0].arch_key() != on[1].arch_key()
    with pytest.raises(SrSearchError) as caught:
        ArchSpec(block="cond23", seq=False, branch_1x1=False, branch_avg=False)
    message = str(caught.value)
    for field in ("seq", "branch_1x1", "branch_avg"):
        assert f"field '{field}': at least one branch must be on" in message, message


# --- 6. front tables show what differs ----------------------------------------------------------------------------


def test_front_tables_show_the_family_fields_that_vary_within_the_front(family_file):
    from sr_search.results.tables import front_table, front_text

    family_file(rrrb("rrrb_front"), "rrrb_front")
    specs = [ArchSpec(block="rrrb_front", scale=2, channels=16, depth=2, ratio=r, erb=e)
             for r, e in ((1, False), (2, True))] + [ArchSpec(block="plain", scale=2, channels=16, depth=2)]
    df = pd.DataFrame([{"trial_id": f"000{i}", "status": "complete", "block": s.block, "channels": 16, "depth": 2,
                        "scale": 2, "psnr_y": 30.0 + i, "throughput": 100.0 - 10 * i, "arch_json": s.to_json()}
                       for i, s in enumerate(specs)])
    table = front_table(df)
    assert list(table.columns[:6]) == ["trial_id", "block", "channels", "depth", "scale", "ratio"]
    assert list(table["ratio"]) == [None, 2, 1] and list(table["erb"]) == [None, True, False]
    assert "ratio" in front_text(df) and "erb" in front_text(df)
    same = df.assign(arch_json=[specs[0].to_json()] * 2 + [specs[2].to_json()])  # nothing varies: no column
    assert "ratio" not in front_table(same).columns


@pytest.mark.ray
def test_a_launch_of_a_broken_family_shows_the_reasons_and_says_every_trial_failed(family_file, tmp_path,
                                                                                   monkeypatch):
    """Through the real runner: the broken fusion fails each trial before training, the progress shows the reason
    once, and the end of the launch says every trial failed (the launch itself returns: exit code 0)."""
    import ray

    from sr_search.run.tune.launch import launch
    from sr_search.study import checks
    from sr_search.study.config import with_overrides

    path = family_file(rrrb("rrrb_zero", RRRB.replace("fuse.pad_with(y, self.expand.bias)", ZERO_PAD)), "rrrb_zero")
    (tmp_path / "space.yaml").write_text(f"block_modules: [{path}]\n"
                                         "params: {block: rrrb_zero, scale: 2, colors: 3, channels: [8, 12], "
                                         "depth: 1}\n")
    (tmp_path / "s.yaml").write_text("name: zero\nspace: space.yaml\nsampler: random\nn_trials: 2\n")
    monkeypatch.setattr(checks, "contract_problems", lambda blocks: [])  # as if validate had let it through
    study = with_overrides(load_study(tmp_path / "s.yaml"), train={"iterations": 4, "batch_size": 2, "lr_patch": 16},
                           data={"val_max_size": 48},
                           timing={"device": "cpu", "precision": "fp32", "batch": 1, "lr_size": [24, 24],
                                   "warmup": 1, "reps": 2, "threads": 1})
    lines: list[str] = []
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    try:
        launch(study, out_dir=tmp_path / "run", echo=lines.append)
    finally:
        ray.shutdown()
    text = "\n".join(lines)
    assert re.search(r"  failed 000[01] rrrb_zero: before training: deployed model differs .* border band", text), text
    assert len(re.findall(r"^  failed ", text, re.MULTILINE)) == 1, text  # the second is the same kind of reason
    assert "Every trial failed (2 of 2)" in text and re.search(r"  0001 rrrb_zero: before training", text), text
