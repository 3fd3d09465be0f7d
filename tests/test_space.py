"""Search spaces: file checks, define-by-run sampling, sizes, membership and ablation grids."""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import pytest
import torch
import yaml

from sr_search import ArchSpec, PRESETS, build
from sr_search.model.blocks import REGISTRY
from sr_search.errors import SrSearchError
from sr_search.study.space import RandomTrial, describe_space
from sr_search.study.space_file import load_space

ROOT = Path(__file__).resolve().parents[1]
EFFICIENT = ROOT / "searchspace" / "efficient_sr.yaml"
REPSR = ROOT / "searchspace" / "repsr.yaml"

optuna.logging.set_verbosity(optuna.logging.WARNING)


def write(tmp_path: Path, text: str, name: str = "space.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def load_error(tmp_path: Path, text: str) -> str:
    with pytest.raises(SrSearchError) as info:
        load_space(write(tmp_path, text))
    return str(info.value)


# --- an independent reading of the shipped files, to check samples against ----------------------------------


def domain_ok(value, domain) -> bool:
    """Is `value` allowed by one YAML domain entry (scalar, list, range or {choices/value, when})?"""
    if isinstance(domain, list):
        return value in domain
    if not isinstance(domain, dict):
        return value == domain
    if "choices" in domain:
        return value in domain["choices"]
    if "value" in domain:
        return value == domain["value"]
    step = domain.get("step")
    inside = domain["low"] <= value <= domain["high"]
    return inside and (step is None or abs((value - domain["low"]) / step - round((value - domain["low"]) / step)) < 1e-9)


def check_against_file(spec: ArchSpec, raw: dict) -> None:
    params, blocks = raw.get("params", {}), raw.get("blocks", {})
    block_domain = params.get("block", list(blocks))
    assert domain_ok(spec.block, block_domain)
    entries = {**{k: v for k, v in params.items() if k != "block"}, **blocks.get(spec.block, {})}
    values = spec.model_dump()
    for field, domain in entries.items():
        when = domain.get("when", {}) if isinstance(domain, dict) else {}
        holds = all(values[k] in (v if isinstance(v, list) else [v]) for k, v in when.items())
        if holds:
            assert domain_ok(values[field], domain), (field, values[field], domain)
    # fields the family does not have are not there at all (flat, but only the family's own)
    for field in ("branches", "with_idt", "esa_channels", "groups", "cca", "shared", "gain"):
        if field not in REGISTRY[spec.block].field_names:
            assert field not in values


@pytest.mark.parametrize("path", [EFFICIENT, REPSR])
def test_sampled_specs_satisfy_the_file_and_build(path):
    raw = yaml.safe_load(path.read_text())
    space = load_space(path)
    seen_blocks = set()
    for seed in range(50):
        spec = space.sample(RandomTrial(seed))
        check_against_file(spec, raw)
        assert space.contains(spec, strict=True) == []
        seen_blocks.add(spec.block)
        model = build(spec)
        if seed % 10 == 0:  # one tiny forward now and then: 48 px divides by every unshuffle, >= ESA's 15 px
            with torch.no_grad():
                out = model.eval()(torch.rand(1, spec.colors, 48, 48))
            assert out.shape == (1, spec.colors, 48 * spec.scale, 48 * spec.scale)
    if path == EFFICIENT:
        assert seen_blocks == {"rep", "ecb", "rlfb", "esdb", "eresidual", "span", "plain"}


def test_the_efficient_space_holds_both_span_presets():
    space = load_space(EFFICIENT)
    for name in ("span-ch48-x4", "span-ch28-x4"):
        assert space.contains(PRESETS[name], strict=True) == [], name
    assert space.params_of(PRESETS["span-ch28-x4"])["span.gain"] == 2


def test_repsr_conditions_hold_in_samples():
    space = load_space(REPSR)
    specs = [space.sample(RandomTrial(seed)) for seed in range(200)]
    without_bn = [s for s in specs if not s.bn]
    assert without_bn and all(s.residual == "clean" and s.frozen_bn is None for s in without_bn)
    with_bn = [s for s in specs if s.bn]
    assert {s.residual for s in with_bn} == {"clean", "bn", "none"}
    assert {s.frozen_bn for s in with_bn} == {0.9, None}


@pytest.mark.parametrize("path", [EFFICIENT, REPSR])
def test_optuna_sees_only_parameters_of_the_chosen_block(path):
    space = load_space(path)
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=1, n_startup_trials=5),
                                directions=["maximize", "maximize"])
    for _ in range(25):
        trial = study.ask()
        spec = space.sample(trial)
        for name in trial.params:
            assert "." not in name or name.startswith(spec.block + ".")
        assert space.params_of(spec) == trial.params  # the inverse, used to enqueue baselines
        study.tell(trial, [spec.channels, -spec.depth])
    assert "channels" in study.trials[0].params
    assert ("block" in study.trials[0].params) == (path == EFFICIENT)  # a fixed block is never suggested


def test_fixed_values_are_never_suggested(tmp_path):
    space = load_space(write(tmp_path, "params: {block: plain, scale: 2, channels: [8, 16]}\n"))
    trial = RandomTrial(3)
    spec = space.sample(trial)
    assert set(trial.params) == {"channels"} and spec.scale == 2 and spec.block == "plain"


def test_random_trial_is_deterministic_and_varies():
    space = load_space(EFFICIENT)
    assert space.sample(RandomTrial(7)) == space.sample(RandomTrial(7))
    assert len({space.sample(RandomTrial(s)).arch_key() for s in range(20)}) == 20


def test_ranges_log_and_step(tmp_path):
    space = load_space(write(tmp_path, """
params:
  block: ecb
  channels: {low: 8, high: 512, log: true}
  depth: {low: 2, high: 10, step: 4}
  width_mult: {low: 1.0, high: 1.5, step: 0.1}
"""))
    specs = [space.sample(RandomTrial(s)) for s in range(100)]
    assert all(8 <= s.channels <= 512 for s in specs)
    assert sum(s.channels < 64 for s in specs) > 30  # log-uniform: a third of the mass below 64
    assert {s.depth for s in specs} == {2, 6, 10}
    assert {s.width_mult for s in specs} == {1.0, 1.1, 1.2, 1.3, 1.4, 1.5}
    assert all(space.contains(s, strict=True) == [] for s in specs)
    assert space.size() == 505 * 3 * 6


def test_size_counts_conditional_combinations(tmp_path):
    space = load_space(write(tmp_path, """
params:
  depth: [2, 4]
blocks:
  plain: {}
  rep:
    bn: [true, false]
    frozen_bn: {choices: [0.5, null], when: {bn: true}}
"""))
    # plain: 2 depths; rep: 2 depths x (bn=true: 2 frozen_bn choices + bn=false: 1) = 6
    assert space.size() == 8
    combos = list(space.assignments())
    assert len(combos) == 8
    assert len({ArchSpec(block=b, **v).arch_key() for b, v in combos}) == 8
    continuous = load_space(write(tmp_path, "params: {block: ecb, width_mult: {low: 1.0, high: 2.0}}\n", "c.yaml"))
    assert math.isinf(continuous.size())


def test_condition_order_follows_dependencies_not_file_order(tmp_path):
    space = load_space(write(tmp_path, """
params:
  block: rep
  frozen_bn: {value: 0.5, when: {bn: true}}
  bn: [true, false]
"""))
    specs = [space.sample(RandomTrial(s)) for s in range(30)]
    assert all((s.frozen_bn == 0.5) == s.bn for s in specs)
    assert [p.field for p in space.params_for("rep")] == ["bn", "frozen_bn"]


def test_with_fixed_pins_common_fields():
    space = load_space(EFFICIENT).with_fixed({"scale": 2, "channels": 16})
    specs = [space.sample(RandomTrial(s)) for s in range(20)]
    assert all(s.scale == 2 and s.channels == 16 for s in specs)
    assert space.fixed_value("scale") == 2 and load_space(EFFICIENT).fixed_value("unshuffle") is None
    with pytest.raises(SrSearchError, match="'branches' cannot be fixed"):
        space.with_fixed({"branches": 2})
    with pytest.raises(SrSearchError, match="scale=5 is not allowed; allowed: one of 2, 3, 4"):
        space.with_fixed({"scale": 5})


def test_contains_reports_fields_outside_the_space():
    space = load_space(REPSR)
    assert space.contains(PRESETS["repsr-m4c16-x4"]) == []
    problems = space.contains(PRESETS["repsr-m4c16-x4"].replace(channels=12, branches=4))
    assert len(problems) == 1 and "channels=12 is outside the space" in problems[0]
    assert "not in the space's blocks" in space.contains(PRESETS["ecbsr-m4c16-x4"])[0]
    # strict: fields the space does not name must keep their defaults
    assert space.contains(PRESETS["repsr-m4c16-x4"], strict=True) == []
    outside = PRESETS["repsr-m4c16-x4"].replace(global_skip="bilinear")
    assert space.contains(outside) == []
    assert space.contains(outside, strict=True) == [
        "global_skip=bilinear differs from nearest, the value this space gives it"]


def test_constraints_violations_follow_optunas_sign():
    space = load_space(EFFICIENT)
    assert space.constraints.max_params == 1_000_000
    assert space.constraints.violations(params=1_200_000, macs=5e9) == {"max_params": 200_000.0}
    assert space.constraints.violations(params=900_000) == {"max_params": -100_000.0}


def test_describe_space_shows_size_and_samples():
    text = describe_space(load_space(REPSR), n_samples=2)
    assert "94,080 combinations" in text  # 8 widths x 15 depths x 7 expand ratios x 4 branch counts x 4 forms x 7
    assert text.count("sample ") == 2
    assert 8 * 15 * 7 * 4 * 4 * (1 + 3 * 2) == 94_080


# --- malformed space files ----------------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("params: {block: [rep, resnet]}\n", "block=resnet is not allowed; allowed: one of ecb, eresidual, esdb, plain"),
    ("params:\n  block: rep\n  bn: [true, false]\n  frozen_bn: {value: 0.9, when: {batchnorm: true}}\n",
     ":4: params.frozen_bn.when.batchnorm: condition on 'batchnorm', which is not an ArchSpec field"),
    ("params: {channels: 16}\nconstraint: {max_params: 10}\n", "unknown key 'constraint' (did you mean "
                                                                "'constraints'?); allowed: description, block_modules, params"),
    ("params:\n  channel: [8, 16]\n", ":2: params.channel: unknown ArchSpec field 'channel' (did you mean "
                                    "'channels'?)"),
    ("params:\n  depth: {low: 2, hi: 8}\n", "params.depth.hi: unknown key 'hi'; allowed: value, choices, low, high"),
    ("params:\n  depth: {low: 2.5, high: 8}\n", "depth is an integer field; low=2.5 is not an integer"),
    ("params:\n  channels: {low: 64, high: 8}\n", "low (64) must be below high (8)"),
    ("params:\n  channels: {low: 8, high: 64, step: 10}\n", "high - low (56) is not a multiple of step 10"),
    ("params:\n  block: ecb\n  width_mult: {low: 1.0, high: 4.0, step: 0.5, log: true}\n", "log and step cannot"),
    ("params:\n  activation: {low: 1, high: 3}\n", "activation takes one of relu, prelu"),
    ("params:\n  scale: {low: 2, high: 5}\n", "the range includes 5: scale=5 is not allowed"),
    ("params:\n  block: [rep, ecb, plain]\n  branches: [1, 2]\n",
     ":3: params.branches: field 'branches' is used only by blocks rep, but this space also picks ecb, plain"),
    ("params: {depth: 2}\nblocks:\n  rep: {}\n  resnet: {}\n", ":4: blocks.resnet: unknown block 'resnet'"),
    ("params: {block: ecb}\nblocks:\n  ecb: {branches: [1, 2]}\n", "block 'ecb' has no field 'branches'"),
    ("params: {block: rep}\nblocks:\n  ecb: {with_idt: [true]}\n", "section for block 'ecb', which params.block never"),
    ("params:\n  block: rep\n  bn: [true, false]\n  residual: [clean, bn]\n",
     "the space can produce candidates ArchSpec rejects"),
    ("params:\n  block: rep\n  bn: {choices: [true, false], when: {residual: clean}}\n"
     "  residual: {choices: [clean, none], when: {bn: true}}\n", "conditions form a cycle among bn, residual"),
    ("params:\n  depth: [2, 4, 2]\n", "choice 2 listed twice"),
    ("params:\n  colors: []\n", "choices must be a non-empty list"),
    ("constraints: {max_params: -5}\nparams: {depth: 2}\n", "constraints.max_params: Input should be greater than 0"),
    ("description: x\n", "a search space needs `params`"),
    ("", "search space file is empty"),
    ("params: [1, 2\n", "not valid YAML"),
    ("params:\n  depth: 2\n  depth: 4\n", ":3: params.depth: key written twice"),
])
def test_malformed_space_files_name_the_problem(tmp_path, text, expected):
    assert expected in load_error(tmp_path, text)


def test_all_problems_reported_at_once(tmp_path):
    message = load_error(tmp_path, "params:\n  block: [rep, nope]\n  channel: 8\n  depth: {low: 9, high: 3}\n")
    assert message.startswith("3 problems in ")
    assert ":2: params.block[1]" in message and ":3: params.channel" in message and ":4: params.depth" in message


def test_missing_file_is_a_problem(tmp_path):
    with pytest.raises(SrSearchError, match="search space file not found"):
        load_space(tmp_path / "nope.yaml")


# --- ablation grids -----------------------------------------------------------------------------------------


def test_one_at_a_time_lists_base_once_and_skips_base_levels():
    space, base = load_space(REPSR), PRESETS["repsr-m4c16-x4"]
    points = space.grid(base, {"branches": [1, 2, 3], "width_mult": [2.0, 4.0]})
    assert [(p.factor, p.level) for p in points] == [("base", None), ("branches", 1), ("branches", 3),
                                                     ("width_mult", 4.0)]
    assert points[0].spec == base
    assert points[1].spec == base.replace(branches=1) and points[3].spec == base.replace(width_mult=4.0)
    factor, level, spec = points[2]  # unpacks as a tuple
    assert (factor, level, spec.branches) == ("branches", 3, 3)
    assert [p.label for p in points[:2]] == ["base", "branches=1"]


def test_factorial_enumerates_every_cell_once():
    space, base = load_space(REPSR), PRESETS["repsr-m4c16-x4"]
    points = space.grid(base, {"branches": [1, 2, 3], "residual": ["clean", "none"]}, mode="factorial")
    assert len(points) == 6  # 3 x 2 cells, the (2, clean) cell is the base
    assert points[0].factor == "base"
    cells = {(p.spec.branches, p.spec.residual) for p in points}
    assert cells == {(b, r) for b in (1, 2, 3) for r in ("clean", "none")}
    assert points[1].level == (("branches", 1), ("residual", "clean"))


def test_grid_compound_levels_change_two_fields():
    space, base = load_space(REPSR), PRESETS["repsr-m4c16-x4"]
    (_, point) = space.grid(base, {"bn": [True, {"bn": False, "frozen_bn": None}]})
    assert point.factor == "bn" and point.level is False
    assert point.spec == base.replace(bn=False, frozen_bn=None)


@pytest.mark.parametrize("factors, mode, expected", [
    ({"bn": [False]}, "one_at_a_time", "needs bn=True"),
    ({"channels": [16, 128]}, "one_at_a_time", "channels=128 is outside the space"),
    ({"branchs": [1]}, "one_at_a_time", "unknown factor 'branchs'"),
    ({"branches": [1, 1]}, "one_at_a_time", "level 1 listed twice"),
    ({"branches": 2}, "one_at_a_time", "levels must be a non-empty list"),
    ({"branches": [{"depth": 2}]}, "one_at_a_time", "a mapping level must set the factor itself"),
    ({"bn": [{"bn": False, "frozen_bn": None}], "frozen_bn": [0.9]}, "factorial", "sets frozen_bn=0.9 while"),
    ({"branches": [1]}, "grid", "unknown design 'grid'"),
])
def test_grid_problems_are_errors(factors, mode, expected):
    with pytest.raises(SrSearchError, match="ablation grid problems") as info:
        load_space(REPSR).grid(PRESETS["repsr-m4c16-x4"], factors, mode=mode)
    assert expected in str(info.value)


def test_the_block_names_a_space_accepts_follow_the_registry():
    """The field types are cached per registry: a family registered later is accepted, and one that replaced another
    (same count of families) is seen too."""
    from sr_search.model.blocks import BlockFamily, register
    from sr_search.study.domain import FIELD_TYPES

    before = dict(REGISTRY)
    try:
        assert "probe_a" not in FIELD_TYPES["block"].allowed
        register(type("ProbeA", (BlockFamily,), {"name": "probe_a", "block": lambda self, spec: torch.nn.Identity()}))
        assert "probe_a" in FIELD_TYPES["block"].allowed
        del REGISTRY["probe_a"]
        register(type("ProbeB", (BlockFamily,), {"name": "probe_b", "block": lambda self, spec: torch.nn.Identity()}))
        assert "probe_b" in FIELD_TYPES["block"].allowed and "probe_a" not in FIELD_TYPES["block"].allowed
    finally:
        REGISTRY.clear()
        REGISTRY.update(before)
    assert "probe_b" not in FIELD_TYPES["block"].allowed
