"""The contract every block family keeps, as functions a family's author can run (sr-search's own tests run them
over every registered family, so a new family is covered the moment it is registered, as timm's model tests do).

    from sr_search.model.testing import check_family
    check_family("my_block")   # raises AssertionError naming the spec that breaks the contract

The contract: for every option of every field (one at a time) and for random combinations with the common fields,
the deployed network computes what the trained network computes in eval mode, on random unit-scale inputs of odd
sizes, borders included (max abs error <= 1e-4 in float32, 1e-10 in float64); deployment never changes the trained
model (its state and its mode) and leaves no training-only module behind.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import torch
from torch import nn

from ..errors import SrSearchError
from .blocks import example_values, family_of
from .deploy import check_equivalence, reparameterize
from .network import build
from .spec import ArchSpec

#: what the common fields are drawn from (small, so a contract check takes milliseconds per spec)
COMMON_CHOICES = {
    "scale": [2, 3, 4],
    "colors": [1, 3],
    "unshuffle": [1, 2],
    "activation": ["relu", "prelu", "gelu", "silu", "lrelu", "identity"],
    "global_skip": ["nearest", "bilinear", "bicubic", "none"],
    "long_skip": [True, False],
    "fusion": ["none", "concat", "cascade"],
    "input_repeat": [1, 2],
    "smooth_conv": [True, False],
    "upsampler": ["pixelshuffle", "progressive"],
    "mean_shift": [True, False],
}
SMALL = {"channels": 8, "depth": 2, "colors": 3, "scale": 2}


def random_spec(block: str, rng: random.Random) -> ArchSpec:
    """A valid random spec of `block`: common fields from COMMON_CHOICES, the family's from its examples."""
    family = family_of(block)
    for _ in range(200):
        data = {name: rng.choice(values) for name, values in COMMON_CHOICES.items()}
        data.update({name: rng.choice(example_values(family, name)) for name in family.field_names})
        data.update(block=block, channels=rng.choice([8, 12, 16]), depth=rng.choice([1, 2]))
        try:
            return ArchSpec(**data)
        except SrSearchError:
            continue  # an invalid combination (e.g. residual=bn without BN); draw again
    raise AssertionError(f"no valid random spec for block {block!r} in 200 draws")


def option_specs(block: str) -> Iterator[ArchSpec]:
    """A small spec for every example value of every field of the family, one field at a time (the border cases:
    identity paths, BN, 1x1-then-3x3 forms...). Combinations the family rejects are skipped."""
    family = family_of(block)
    yield ArchSpec(block=block, **SMALL)
    for field in family.field_names:
        for value in example_values(family, field):
            try:
                yield ArchSpec(block=block, **SMALL, **{field: value})
            except SrSearchError:
                continue


def randomize_statistics(model: nn.Module, generator: torch.Generator) -> None:
    """Non-trivial BN statistics and affine values and PReLU slopes, so folding is really exercised (in place, with
    `generator`, which must live where the model does: randomize before moving a model to a GPU)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1, generator=generator)
                m.running_var.uniform_(0.3, 3, generator=generator)
                if m.affine:
                    m.weight.uniform_(0.5, 1.5, generator=generator)
                    m.bias.uniform_(-0.5, 0.5, generator=generator)
            if isinstance(m, nn.PReLU):
                m.weight.uniform_(-0.5, 0.5, generator=generator)


def check_deploys_exactly(spec: ArchSpec, *, seed: int = 0, dtype: torch.dtype = torch.float32) -> float:
    """Build `spec`, deploy it, and assert the contract; returns the max abs error."""
    model = build(spec)
    randomize_statistics(model, torch.Generator().manual_seed(seed))
    model = model.to(dtype).train()  # deployment must not depend on the mode
    before = {k: v.clone() for k, v in model.state_dict().items()}
    deployed = reparameterize(model)
    assert model.training, f"{spec.to_json()}: reparameterize changed the source model's mode"
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before), \
        f"{spec.to_json()}: reparameterize changed the trained model"
    assert not any(hasattr(m, "to_deploy") for m in deployed.modules()), \
        f"{spec.to_json()}: a module with to_deploy() is left in the deployed network"
    assert not any(isinstance(m, nn.BatchNorm2d) for m in deployed.modules()), \
        f"{spec.to_json()}: BatchNorm left in the deployed network"
    assert {p.dtype for p in deployed.parameters()} <= {dtype}, f"{spec.to_json()}: deployed in another dtype"
    r = spec.unshuffle
    err = check_equivalence(model, deployed, size=(15 * r, 21 * r), seed=seed)
    tolerance = 1e-10 if dtype == torch.float64 else 1e-4
    assert err <= tolerance, f"{spec.to_json()}: deployed differs from trained by {err:.3g} > {tolerance:g}"
    return err


def check_family(block: str, *, random_specs: int = 8, dtype: torch.dtype = torch.float32) -> float:
    """Run the contract over every option of `block` and `random_specs` random specs; returns the worst error."""
    specs = [*option_specs(block), *(random_spec(block, random.Random(f"{block}-{i}")) for i in range(random_specs))]
    return max(check_deploys_exactly(spec, seed=i, dtype=dtype) for i, spec in enumerate(specs))
