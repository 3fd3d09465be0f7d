"""The contract every block family keeps, as functions a family's author can run (sr-search's own tests run them
over every registered family, so a new family is covered the moment it is registered, as timm's model tests do).

    from sr_search.model.testing import check_family
    check_family("my_block")   # raises AssertionError naming the spec that breaks the contract

The contract: for every option of every field (one at a time) and for random combinations with the common fields,
the deployed network computes what the trained network computes in eval mode, on random unit-scale inputs of odd
sizes, borders included (max abs error <= 1e-4 in float32, 1e-10 in float64; a failure says whether the error lies
in the border band or the interior); deployment never changes the trained model (its state and its mode) and
leaves no training-only module behind.

And `deploy_key` is honest (timings are cached and shared by it): specs with one `deploy_key` deploy to networks
of one structure (module types, configurations and shapes, in order) that compute the same function given the same
deployed weights - over every example value of every field changed one at a time, random redraws of the family's
fields, and, for a family that `deploys_as` another, that family's spec with the same fields. A field that changes
the deployed network but is missing from `deploy_fields`, or a `deploys_as` whose network is not the named
family's, fails with a message naming the field or the declaration to fix.
"""

from __future__ import annotations

import copy
import random
import re
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from ..errors import SrSearchError
from .blocks import REGISTRY, example_values, family_of
from .blocks.api import BlockFamily as BlockFamilyBase
from .deploy import check_equivalence, describe_difference, locate_difference, reparameterize
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
    if not err <= tolerance:
        where = describe_difference(*locate_difference(model, deployed, seed=seed), tolerance)
        raise AssertionError(f"{show_spec(spec)}: deployed differs from trained by {err:.3g} > {tolerance:g}; {where}")
    return err


def show_spec(spec: ArchSpec) -> str:
    """The spec as the fields that differ from the defaults (block first): what a failure message names."""
    defaults = ArchSpec(block=spec.block).model_dump()
    shown = {"block": spec.block, **{k: v for k, v in spec.model_dump().items() if v != defaults.get(k)}}
    return "spec " + ", ".join(f"{k}={v!r}" for k, v in shown.items())


# --- deploy_key honesty --------------------------------------------------------------------------------------

_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict, nn.Identity)


def deployed_structure(deployed: nn.Module) -> list[tuple[str, str, str, tuple[Any, ...]]]:
    """The deployed network as (path, type, configuration, parameter and buffer shapes) per module, in order;
    plain containers and identities are left out (they compute nothing), so `Sequential(conv)` and `conv` agree."""
    out = []
    for name, m in deployed.named_modules():
        if isinstance(m, _CONTAINERS):
            continue
        tensors = tuple((n, tuple(t.shape)) for n, t in [*m.named_parameters(recurse=False),
                                                         *m.named_buffers(recurse=False)])
        config = re.sub(r"(,\s*)?inplace=True", "", m.extra_repr())
        out.append((name or "(network)", f"{type(m).__module__}.{type(m).__qualname__}", config, tensors))
    return out


def structure_difference(a: nn.Module, b: nn.Module) -> str | None:
    """The first place where two deployed networks differ in structure, in words; None when they agree."""
    sa, sb = deployed_structure(a), deployed_structure(b)
    for i, (x, y) in enumerate(zip(sa, sb)):
        if x[1:] != y[1:]:
            return f"module {i}: {_module_text(x)} vs {_module_text(y)}"
    if len(sa) != len(sb):
        extra = sa[len(sb)] if len(sa) > len(sb) else sb[len(sa)]
        return f"{len(sa)} vs {len(sb)} modules (first extra: {_module_text(extra)})"
    return None


def _module_text(entry: tuple[str, str, str, tuple[Any, ...]]) -> str:
    name, kind, config, tensors = entry
    shapes = ", ".join(f"{n} {list(s)}" for n, s in tensors)
    return f"{name} {kind.rsplit('.', 1)[-1]}({config})" + (f" [{shapes}]" if shapes else "")


@torch.no_grad()
def function_difference(a: nn.Module, b: nn.Module, spec: ArchSpec, *, seed: int = 0) -> float:
    """Max abs difference of two deployed networks of one structure given the same (random) weights, on the CPU
    (neither argument is changed)."""
    a, b = copy.deepcopy(a), copy.deepcopy(b)
    generator = torch.Generator().manual_seed(seed)
    for x, y in zip([*a.parameters(), *a.buffers()], [*b.parameters(), *b.buffers()]):
        x.copy_(torch.rand(x.shape, generator=generator, dtype=torch.float64).to(x.dtype) - 0.5)
        y.copy_(x)
    r = spec.unshuffle
    dtype = next(a.parameters()).dtype
    inp = torch.rand(1, spec.colors, 15 * r, 17 * r, generator=generator, dtype=torch.float64).to(dtype)
    return (a(inp) - b(inp)).abs().max().item()


def _deployed(spec: ArchSpec, dtype: torch.dtype, cache: dict[ArchSpec, nn.Module]) -> nn.Module:
    if spec not in cache:
        cache[spec] = reparameterize(build(spec).to(dtype))
    return cache[spec]


def _variants(spec: ArchSpec) -> Iterator[tuple[ArchSpec, tuple[str, ...]]]:
    """`spec` with one family field changed to each of its other example values (the valid ones)."""
    family = family_of(spec.block)
    for field in family.field_names:
        for value in example_values(family, field):
            if value == getattr(spec, field):
                continue
            try:
                other = spec.replace(**{field: value})
            except SrSearchError:
                continue
            changed = tuple(f for f in family.field_names if getattr(other, f) != getattr(spec, f))
            if changed:
                yield other, changed


def _redraw(spec: ArchSpec, rng: random.Random) -> ArchSpec | None:
    """`spec` with every family field drawn again from its examples (None when no valid draw is found)."""
    family = family_of(spec.block)
    for _ in range(20):
        try:
            return spec.replace(**{f: rng.choice(example_values(family, f)) for f in family.field_names})
        except SrSearchError:
            continue
    return None


def _counterpart(spec: ArchSpec) -> ArchSpec | None:
    """The spec of the family `spec`'s family deploys as, with the same common fields and the same deploy fields
    (None when that family cannot hold them: then the keys differ and nothing is shared)."""
    family = family_of(spec.block)
    if family.deploys_as is None or family.deploys_as == family.name:
        return None
    common = {k: v for k, v in spec.model_dump().items() if k in ArchSpec.model_fields}
    try:
        return ArchSpec(**{**common, "block": family.deploys_as, **family.deploy_key_fields(spec)})
    except SrSearchError:
        return None


def check_deploy_keys(block: str, specs: list[ArchSpec], *, dtype: torch.dtype = torch.float32,
                      seed: int = 0, around: int = 4) -> int:
    """Assert that `deploy_key` is honest around `specs` (see the module doc): each family field changed to each
    of its example values around the first `around` specs, every family field redrawn for each spec, and each
    spec's `deploys_as` counterpart. Returns how many pairs of specs sharing a key were compared. An
    AssertionError names the field to add to `deploy_fields` or the declaration (`deploys_as`, `vgg_style`) to fix.
    """
    family = family_of(block)
    if family.deploys_as is not None and family.deploys_as not in REGISTRY:
        raise AssertionError(f"block {block!r} declares deploys_as={family.deploys_as!r}, which is not a registered "
                             f"family ({', '.join(sorted(REGISTRY))})")
    rng = random.Random(f"{block}-keys-{seed}")
    cache: dict[ArchSpec, nn.Module] = {}
    pairs: list[tuple[ArchSpec, ArchSpec, tuple[str, ...] | None]] = []
    for i, spec in enumerate(specs):
        if i < around:
            pairs += [(spec, other, changed) for other, changed in _variants(spec)]
        redrawn = _redraw(spec, rng)
        if redrawn is not None and redrawn != spec:
            pairs.append((spec, redrawn, tuple(f for f in family.field_names
                                               if getattr(redrawn, f) != getattr(spec, f))))
        twin = _counterpart(spec)
        if twin is not None:
            pairs.append((spec, twin, None))
    compared = 0
    for a, b, changed in pairs:
        if a.deploy_key() != b.deploy_key():
            continue
        compared += 1
        da, db = _deployed(a, dtype, cache), _deployed(b, dtype, cache)
        diff = structure_difference(da, db)
        if diff is None:
            err = function_difference(da, db, a, seed=seed)
            tolerance = 1e-10 if dtype == torch.float64 else 1e-4
            if err <= tolerance:
                continue
            diff = f"the same modules compute other functions given the same weights (max abs difference {err:.3g})"
        params = f"{_count(da):,} vs {_count(db):,} deployed parameters"
        if changed is None:
            other = family_of(b.block)
            hint = (f"{block!r} has vgg_style={family.vgg_style} but {other.name!r} has vgg_style={other.vgg_style} "
                    f"(the head activation differs): set vgg_style = {other.vgg_style}, or drop deploys_as"
                    if family.vgg_style != other.vgg_style else
                    f"make {block!r}'s deployed form {other.name!r}'s network, or drop deploys_as")
            raise AssertionError(
                f"block {block!r} declares deploys_as={other.name!r}, so its candidates share deploy_key and timings "
                f"with {other.name!r}'s, but {show_spec(a)} deploys to another network than {show_spec(b)} "
                f"({params}; {diff}): {hint}")
        where = ("deploy_fields" if type(family).deploy_key_fields is BlockFamilyBase.deploy_key_fields
                 else "what deploy_key_fields returns")
        raise AssertionError(
            f"block {block!r}: field(s) {', '.join(changed)} change the deployed network but are not in {where}: "
            f"{show_spec(a)} and {show_spec(b)} share deploy_key {a.deploy_key()} (and so one timing) but deploy to "
            f"different networks ({params}; {diff}); add {', '.join(repr(f) for f in changed)} to {where}")
    return compared


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def check_family(block: str, *, random_specs: int = 8, dtype: torch.dtype = torch.float32,
                 quick: bool = False) -> float:
    """Run the contract over every option of `block` and `random_specs` random specs: deployment exact, deploy_key
    honest. Returns the worst deploy error. `quick` (what `sr-search validate` runs): the options and two random
    specs, deploy_key checked around the smallest spec and the random ones."""
    if quick:
        random_specs = min(random_specs, 2)
    options = list(option_specs(block))
    randoms = [random_spec(block, random.Random(f"{block}-{i}")) for i in range(random_specs)]
    worst = max(check_deploys_exactly(spec, seed=i, dtype=dtype) for i, spec in enumerate([*options, *randoms]))
    # one field at a time around the smallest spec and the first random ones; redraws and twins for all
    check_deploy_keys(block, [options[0], *randoms, *options[1:]], dtype=dtype, around=2 if quick else 4)
    return worst
