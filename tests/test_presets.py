import pytest

from sr_search import PRESETS, build, reparameterize
from sr_search.model.presets import REFERENCE_PARAMS, resolve
from sr_search.errors import SrSearchError


def n_params(model):
    return sum(p.numel() for p in model.parameters())  # parameters() deduplicates shared modules


@pytest.mark.parametrize("name", sorted(REFERENCE_PARAMS))
def test_deployed_params_equal_released_code(name):
    assert n_params(reparameterize(build(PRESETS[name]))) == REFERENCE_PARAMS[name]


@pytest.mark.parametrize("name, total, trainable", [
    ("ecbsr-m4c16-x4", 49_712, 47_120), ("ecbsr-m16c64-x4", 2_235_968, 2_206_160), ("ecbsr-m4c8-x2", 11_992, 10_804),
])
def test_ecbsr_training_form_params_match_released_code(name, total, trainable):
    model = build(PRESETS[name])
    assert n_params(model) == total
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == trainable


def test_block_level_counts():
    from sr_search import ArchSpec
    from sr_search.model.blocks import family_of
    from sr_search.model.blocks.eresidual import EResidual

    def block_params(**kw):
        spec = ArchSpec(**kw)
        return n_params(family_of(spec.block).block(spec))

    assert block_params(block="rlfb", channels=52, esa_channels=16, activation="lrelu") == 82_564
    assert block_params(block="rlfb", channels=48, esa_channels=16, activation="lrelu") == 71_216
    assert block_params(block="esdb", channels=64, activation="gelu") == 35_716
    assert n_params(EResidual(64, 4, "relu")) == 22_720


@pytest.mark.parametrize("size", ["m4c8", "m4c16", "m10c32", "m16c64"])
def test_repsr_twins_deploy_like_ecbsr(size):
    rep, ecb = PRESETS[f"repsr-{size}-x4"], PRESETS[f"ecbsr-{size}-x4"]
    assert rep.deploy_key() == ecb.deploy_key()
    def shapes(spec):
        return [tuple(p.shape) for p in reparameterize(build(spec)).parameters()]

    assert shapes(rep) == shapes(ecb)


def test_resolve_preset_json_and_scale_override():
    assert resolve("rlfn-x4", scale=2) == PRESETS["rlfn-x2"]
    assert resolve('{"block": "rep", "channels": 8}').channels == 8
    with pytest.raises(SrSearchError, match="rlfn-x4"):
        resolve("rlfn-x5")


def test_every_0_1_preset_keeps_its_deploy_key_and_parameter_counts():
    """Recorded from sr-search 0.1 (tests/data/presets_0.1.json): a timing cache and every study row keyed by
    `deploy_key` stay valid across versions; the deployed outputs were compared bit for bit when the file was made."""
    import json
    from pathlib import Path

    recorded = json.loads((Path(__file__).parent / "data" / "presets_0.1.json").read_text())
    for name, old in recorded.items():
        model = build(PRESETS[name])
        deployed = reparameterize(model)
        now = {"deploy_key": PRESETS[name].deploy_key(), "params_train": sum(p.numel() for p in model.parameters()),
               "params_deploy": sum(p.numel() for p in deployed.parameters())}
        assert now == old, name
