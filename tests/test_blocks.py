"""Contract tests over the block registry: every registered family deploys exactly, without side effects.

A new family is covered the moment it is registered: the contract lives in `sr_search.model.testing`, which draws
each field from the family's own declaration (`examples`, else its Literal/bool values).
"""

import random

import pytest
import torch
from torch import nn

from sr_search import ArchSpec, SrSearchError, build, check_equivalence, reparameterize
from sr_search.model.blocks import REGISTRY
from sr_search.model.blocks.layers import FreezableBN, freeze_bn
from sr_search.model.testing import check_deploys_exactly, option_specs, random_spec, randomize_statistics


@pytest.mark.parametrize("block", sorted(REGISTRY))
def test_every_option_of_every_family_deploys_exactly(block):
    for i, spec in enumerate(option_specs(block)):
        check_deploys_exactly(spec, seed=i)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("block", sorted(REGISTRY))
def test_deployed_equals_trained_in_eval(block, seed):
    check_deploys_exactly(random_spec(block, random.Random(f"{block}-{seed}")), seed=seed)


def _border_spec(block: str) -> ArchSpec:
    """The border cases of the merge: identity paths, BN everywhere and 1x1-then-3x3 forms (bias padding)."""
    border = {"rep": dict(branch_form="c1_bn_c3", residual="bn", branches=3), "ecb": dict(with_idt=True)}
    return ArchSpec(block=block, channels=8, depth=2, colors=3, **border.get(block, {}))


@pytest.mark.parametrize("block", sorted(REGISTRY))
def test_float64_models_deploy_in_float64_exactly(block):
    """Device and dtype follow the model (docs/architecture.md, "Deployment"): a float64 model deploys to float64 and matches to 1e-10,
    for every option of the family (its border cases) and random specs, on odd input sizes."""
    specs = [*option_specs(block), *(random_spec(block, random.Random(f"f64-{block}-{i}")) for i in range(4))]
    for i, spec in enumerate(specs):
        model = build(spec).double()
        randomize_statistics(model, torch.Generator().manual_seed(i))
        deployed = reparameterize(model)
        assert {p.dtype for p in deployed.parameters()} == {torch.float64}
        assert {b.dtype for b in deployed.buffers() if b.is_floating_point()} <= {torch.float64}
        check_deploys_exactly(spec, seed=i, dtype=torch.float64)


@pytest.mark.parametrize("case", ["border", *range(2)])
@pytest.mark.parametrize("block", sorted(REGISTRY))
def test_models_on_the_meta_device_deploy_there(block, case):
    """`meta` stands in for CUDA on a CPU-only machine: one tensor made on the default device fails the merge."""
    spec = _border_spec(block) if case == "border" else random_spec(block, random.Random(f"meta-{block}-{case}"))
    reference = reparameterize(build(spec))
    deployed = reparameterize(build(spec).to("meta"))
    assert {p.device.type for p in deployed.parameters()} == {"meta"}
    assert [(n, p.shape) for n, p in deployed.named_parameters()] == \
        [(n, p.shape) for n, p in reference.named_parameters()]
    x = torch.empty(1, spec.colors, 16 * spec.unshuffle, 16 * spec.unshuffle, device="meta")
    assert deployed(x).shape == (1, spec.colors, 16 * spec.unshuffle * spec.scale, 16 * spec.unshuffle * spec.scale)
    with pytest.raises(SrSearchError, match="meta"):
        check_equivalence(build(spec).to("meta"), deployed)


@pytest.mark.parametrize("block", sorted(REGISTRY))
def test_deployed_form_has_no_training_structure(block):
    spec = random_spec(block, random.Random(block))
    deployed = reparameterize(build(spec))
    kinds = {type(m).__name__ for m in deployed.modules()}
    assert not any(isinstance(m, nn.BatchNorm2d) for m in deployed.modules())
    assert not {"RepBlock", "ECB", "RepBranch", "EdgeBranch", "Conv3XC"} & kinds
    assert not any(p.requires_grad for p in deployed.parameters())


@pytest.mark.parametrize("block", ["rep", "ecb", "plain"])
def test_rep_families_deploy_to_one_conv_per_block(block):
    spec = ArchSpec(block=block, channels=8, depth=3)
    deployed = reparameterize(build(spec))
    convs = [m for m in deployed.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == spec.depth + 2  # head, one per block, tail
    assert all(c.kernel_size == (3, 3) for c in convs)


def test_rep_and_ecb_twins_share_deploy_key_not_arch_key():
    rep = ArchSpec(block="rep", channels=16, depth=4, colors=1)
    ecb = ArchSpec(block="ecb", channels=16, depth=4, colors=1)
    assert rep.deploy_key() == ecb.deploy_key()
    assert rep.arch_key() != ecb.arch_key()
    # training-time knobs do not change the deployed network
    assert rep.replace(branches=4, width_mult=1.0, frozen_bn=0.5).deploy_key() == rep.deploy_key()
    assert rep.replace(channels=32).deploy_key() != rep.deploy_key()


def test_frozen_bn_makes_the_training_forward_the_deployed_function():
    spec = ArchSpec(block="rep", channels=8, depth=2, colors=3, frozen_bn=0.5)
    model = build(spec)
    randomize_statistics(model, torch.Generator().manual_seed(1))
    assert freeze_bn(model) == sum(isinstance(m, FreezableBN) for m in model.modules()) > 0
    model.train()
    deployed = reparameterize(model)
    x = torch.rand(2, 3, 17, 19)
    running = [m.running_mean.clone() for m in model.modules() if isinstance(m, FreezableBN)]
    train_out = model(x)
    assert (train_out - deployed(x)).abs().max() <= 1e-4
    assert all(torch.equal(a, m.running_mean) for a, m in zip(running, (m for m in model.modules() if isinstance(m, FreezableBN))))


def test_unfrozen_bn_in_training_mode_uses_batch_statistics():
    model = build(ArchSpec(block="rep", channels=8, depth=1))
    randomize_statistics(model, torch.Generator().manual_seed(2))
    deployed = reparameterize(model)
    x = torch.rand(2, 3, 17, 19)
    assert (model.train()(x) - deployed(x)).abs().max() > 1e-3


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(block="resnet"), ["block", "resnet", "rep", "ecb", "rlfb", "esdb", "eresidual", "plain"]),
        (dict(block="eresidual", channels=30, groups=4), ["groups", "30", "allowed"]),
        (dict(block="ecb", branches=2), ["branches", "ecb", "rep"]),
        (dict(scale=5), ["scale", "2", "3", "4"]),
        (dict(activation="tanh"), ["activation", "tanh", "prelu"]),
        (dict(block="rep", bn=False, frozen_bn=0.9), ["frozen_bn", "bn"]),
        (dict(colors=1, mean_shift=True), ["mean_shift", "colors"]),
        (dict(block="esdb", channels=15), ["channels", "even"]),
        (dict(chanels=16), ["chanels", "unknown", "channels"]),
    ],
)
def test_bad_specs_name_field_and_allowed_values(kwargs, words):
    with pytest.raises(SrSearchError) as info:
        ArchSpec(**kwargs)
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def test_unshuffle_that_does_not_divide_the_input_is_reported():
    model = build(ArchSpec(unshuffle=2, channels=8, depth=1))
    with pytest.raises(SrSearchError, match="unshuffle=2"):
        model(torch.rand(1, 3, 17, 18))


def test_specs_are_canonical_and_round_trip():
    spec = ArchSpec(block="rep", channels=16)
    assert spec == ArchSpec(block="rep", channels=16, branches=2, width_mult=2.0, bn=True)
    assert hash(spec) == hash(ArchSpec.from_json(spec.to_json()))
    assert spec.replace(block="ecb").block_fields() == {"width_mult": 2.0, "with_idt": False}


@pytest.mark.cuda
@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-4), (torch.float16, 2e-2)])
@pytest.mark.parametrize("block", sorted(REGISTRY))
def test_cuda_models_deploy_on_cuda(block, dtype, tolerance):
    spec = _border_spec(block)
    model = build(spec)
    randomize_statistics(model, torch.Generator().manual_seed(4))
    model = model.to("cuda", dtype)
    deployed = reparameterize(model)
    assert {(p.device.type, p.dtype) for p in deployed.parameters()} == {("cuda", dtype)}
    assert check_equivalence(model, deployed) <= tolerance
