"""The block API: what a block family declares, and the registry of families by name.

A family is one module (sr-search's own, or one of yours) that declares, in a `BlockFamily` subclass:

- `Fields`: its own ArchSpec fields, a `FamilyFields` (pydantic) model with defaults and bounds. They stay flat in
  YAML, `ArchSpec` and parquet (`spec.width_mult`, a `width_mult` column); another family's spec has none of them.
- `deploy_fields`: which of those fields shape the deployed network (they enter `ArchSpec.deploy_key`, so
  candidates that differ only in training-time structure share one timing).
- how to build the training form: `block(spec)` (one body block); optionally `stem` (head/smooth conv), `tail`
  (the conv before the pixel shuffle) and `body` (the whole trunk, when the family is more than a chain of blocks).
- how the training form fuses: a module that changes form at deployment has `to_deploy(self) -> nn.Module`,
  returning a *new* module on its own device and in its dtype (`sr_search.model.deploy.reparameterize` swaps it
  in; `sr_search.model.blocks.fuse` holds the algebra). Everything else is deployed as it is.

and registers it with `@register`. `sr_search.model.testing.check_family(name)` runs the contract every built-in family
passes (deploy form equals training form on random specs and odd sizes, borders included). A family lives in the
package (one module per family), in an installed package that names it under the `sr_search.blocks` entry-point
group, or in a file a search space lists under `block_modules:`.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import re
import sys
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, model_validator
from torch import nn

from ...errors import FieldProblem, SrSearchError
from ...records import ProblemList, no_bool_numbers

#: An `ArchSpec` (sr_search.model.spec), which depends on this module rather than the reverse.
Spec = Any

_NAME = re.compile(r"[a-z][a-z0-9_]*")


class FamilyFields(BaseModel):
    """Base of a family's own fields: frozen, unknown keys rejected. Give every field a default."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    _no_bool_numbers = model_validator(mode="before")(classmethod(no_bool_numbers))


class BlockFamily:
    """What `ArchSpec`, `build` and the search-space reader need to know about one block family."""

    name: ClassVar[str]
    paper: ClassVar[str] = ""
    Fields: ClassVar[type[FamilyFields]] = FamilyFields
    #: the fields that shape the deployed network
    deploy_fields: ClassVar[tuple[str, ...]] = ()
    #: families that deploy to the same network share timings (RepSR and ECBSR deploy as `plain`); default: own name
    deploys_as: ClassVar[str | None] = None
    #: VGG-style nets (ECBSR, RepSR, SRVGG) activate the head features; long-skip nets do not
    vgg_style: ClassVar[bool] = False
    #: smallest LR tile (after pixel-unshuffle) the family accepts
    min_lr_size: ClassVar[int] = 1
    #: values the contract tests draw each field from (default: a Literal's or bool's values, else the default)
    examples: ClassVar[Mapping[str, Sequence[Any]]] = {}
    #: fields that only matter when other fields have given values: `{"seq_mult": {"seq": True}}` (each condition a
    #: value or a tuple of values; every condition must hold). An inactive field is set to its default, so specs
    #: that differ only in inactive fields are one spec (one `arch_key`, one `deploy_key`)
    applies_when: ClassVar[Mapping[str, Mapping[str, Any]]] = {}

    # --- fields ----------------------------------------------------------------------------------------------

    def defaults(self, common: Mapping[str, Any]) -> dict[str, Any]:
        """Defaults that depend on the common fields (BSRN's ESA width is channels / 4); used when a field is unset."""
        return {}

    def validate(self, spec: Spec) -> None:
        """Raise `FieldProblem(field, why, allowed)` for combinations the family cannot build, or
        `problem((field, other, ...), why)` for a rule about several fields together."""

    def active(self, field: str, values: Mapping[str, Any]) -> bool:
        """Whether `field` matters given the other fields' `values` (its `applies_when` conditions all hold)."""
        for other, wanted in self.applies_when.get(field, {}).items():
            allowed = wanted if isinstance(wanted, tuple) else (wanted,)
            if values.get(other) not in allowed:
                return False
        return True

    def deploy_key_fields(self, spec: Spec) -> dict[str, Any]:
        """What `ArchSpec.deploy_key` hashes of this family's fields (default: every field in `deploy_fields`)."""
        return {name: getattr(spec, name) for name in self.deploy_fields}

    # --- the training form -----------------------------------------------------------------------------------

    def block(self, spec: Spec) -> nn.Module:
        """One body block, channels -> channels."""
        raise NotImplementedError(f"block family {self.name!r} does not build blocks")

    def stem(self, spec: Spec, cin: int, cout: int, act: bool) -> nn.Module:
        """The 3x3 conv used for the head and the smooth conv (a plain conv by default)."""
        from .layers import conv_act

        return conv_act(cin, cout, 3, spec.activation if act else "identity")

    def tail(self, spec: Spec, cin: int, cout: int) -> nn.Module:
        """The conv in front of the pixel shuffle."""
        return nn.Conv2d(cin, cout, 3, padding=1)

    def body(self, spec: Spec) -> nn.Module:
        """The trunk between head and upsampler: `depth` blocks chained, or fused as `spec.fusion` says (BSRN's
        concat, CARN's cascade). Override it for a trunk of another shape (SPAN's four-way concat)."""
        from .layers import Cascade, ConcatFusion

        blocks = [self.block(spec) for _ in range(spec.depth)]
        if spec.fusion == "concat":
            return ConcatFusion(blocks, spec.channels, self.fusion_act(spec))
        if spec.fusion == "cascade":
            return Cascade(blocks, spec.channels, self.fusion_act(spec))
        return nn.Sequential(*blocks)

    def fusion_act(self, spec: Spec) -> str:
        """The activation after the fusion 1x1 convs of `body` (PCARN has none)."""
        return spec.activation

    def upsampler_groups(self, spec: Spec) -> int:
        """Groups of the convs of the `progressive` upsampler (CARN's are grouped like its body)."""
        return 1

    # --- derived ---------------------------------------------------------------------------------------------

    @property
    def deploy_name(self) -> str:
        return self.deploys_as or self.name

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(self.Fields.model_fields)


def problem(fields: Sequence[str], message: str) -> ProblemList:
    """A problem about several fields together (raise it from `validate`): each field is reported, naming the
    others, e.g. `raise problem(("branch_1x1", "branch_avg"), "at least one branch must be on")`."""
    fields = tuple(fields)
    return ProblemList([FieldProblem(f, f"{message} (fields together: {', '.join(fields)})") for f in fields])


REGISTRY: dict[str, BlockFamily] = {}
#: the common ArchSpec fields, which no family may redefine (set by `reserve` from sr_search.model.spec)
RESERVED: set[str] = set()


def reserve(common_fields: Sequence[str]) -> None:
    """Record the common ArchSpec fields, and check the families registered before they were known."""
    RESERVED.update(common_fields)
    for family in REGISTRY.values():
        clash = sorted(set(family.field_names) & RESERVED)
        if clash:
            raise SrSearchError(f"block family {family.name!r}: fields {clash} are common ArchSpec fields")


def register(cls: type[BlockFamily]) -> type[BlockFamily]:
    """Class decorator: make a family available by its `name` (checked, so a broken family fails here, not in
    trial 137). Registering the same class again (a module imported twice) is a no-op."""
    name = getattr(cls, "name", None)
    where = f"block family {cls.__module__}.{cls.__qualname__}"
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise SrSearchError(f"{where}: `name` must be lower-case letters, digits and '_', got {name!r}")
    old = REGISTRY.get(name)
    if old is not None:
        if (type(old).__module__, type(old).__qualname__) == (cls.__module__, cls.__qualname__):
            return cls
        if type(old).__qualname__ == cls.__qualname__ and _source(type(old)) is not None \
                and _source(type(old)) == _source(cls):
            return cls  # the same file imported under a second name (a sibling's `import my_blocks`): one family
        raise SrSearchError(f"{where}: block family {name!r} is already registered by "
                            f"{type(old).__module__}.{type(old).__qualname__}")
    if not (isinstance(cls.Fields, type) and issubclass(cls.Fields, FamilyFields)):
        raise SrSearchError(f"{where}: `Fields` must subclass sr_search.model.blocks.FamilyFields")
    fields = cls.Fields.model_fields
    clash = sorted(set(fields) & RESERVED)
    if clash:
        raise SrSearchError(f"{where}: fields {clash} are common ArchSpec fields; choose other names")
    unknown = sorted(set(cls.deploy_fields) - set(fields))
    if unknown:
        raise SrSearchError(f"{where}: deploy_fields {unknown} are not among its Fields ({', '.join(fields)})")
    if cls.deploys_as is not None and (not isinstance(cls.deploys_as, str) or not _NAME.fullmatch(cls.deploys_as)):
        raise SrSearchError(f"{where}: `deploys_as` must name a block family, got {cls.deploys_as!r}")
    for field, conditions in cls.applies_when.items():
        others = [o for o in (conditions if isinstance(conditions, Mapping) else {None: None})
                  if o not in fields and o not in RESERVED]
        if field not in fields or others:
            raise SrSearchError(f"{where}: applies_when {{{field!r}: {conditions!r}}} must name its own fields "
                                f"({', '.join(fields)}); unknown: {[field] if field not in fields else others}")
    for field, info in fields.items():
        if info.is_required():
            raise SrSearchError(f"{where}: field {field!r} needs a default")
        other = next((f for f in REGISTRY.values() if field in f.Fields.model_fields), None)
        if other is not None and other.Fields.model_fields[field].annotation != info.annotation:
            raise SrSearchError(
                f"{where}: field {field!r} is typed {info.annotation} but family {other.name!r} types it "
                f"{other.Fields.model_fields[field].annotation}; a field name means one column, so one type"
            )
    REGISTRY[name] = cls()
    return cls


def family_of(name: str) -> BlockFamily:
    try:
        return REGISTRY[name]
    except KeyError:
        raise FieldProblem("block", f"unknown block {name!r}", sorted(REGISTRY), name) from None


def block_field_infos() -> dict[str, Any]:
    """Every registered family's fields (name -> pydantic FieldInfo), each name once (types agree, see register)."""
    out: dict[str, Any] = {}
    for family in REGISTRY.values():
        for field, info in family.Fields.model_fields.items():
            out.setdefault(field, info)
    return out


def users_of(field: str) -> list[str]:
    """The families that have `field`."""
    return sorted(name for name, f in REGISTRY.items() if field in f.Fields.model_fields)


def example_values(family: BlockFamily, field: str) -> tuple[Any, ...]:
    """What the contract tests draw `field` from: the family's `examples`, else the annotation's values."""
    if field in family.examples:
        return tuple(family.examples[field])
    info = family.Fields.model_fields[field]
    args = [a for a in (typing.get_args(info.annotation) or (info.annotation,)) if a is not type(None)]
    if len(args) == 1 and typing.get_origin(args[0]) is typing.Literal:
        return typing.get_args(args[0])
    if args == [bool]:
        return (True, False)
    return (info.default,)


# --- families outside the package ------------------------------------------------------------------------------


def load_entry_points() -> list[str]:
    """Import the families installed packages declare under the `sr_search.blocks` entry-point group."""
    from importlib.metadata import entry_points

    loaded = []
    for point in entry_points(group="sr_search.blocks"):
        importlib.import_module(point.value.split(":")[0])
        loaded.append(point.value)
    return loaded


def load_block_module(ref: str | Path) -> str:
    """Import a module of block families: an importable name (`my_package.blocks`) or a path to a .py file.

    A file is imported once per process, under its own name (`my_blocks`) when no other module holds that name,
    and its folder is added to the end of `sys.path`, so it can import helper modules next to it
    (`from my_helpers import pad`) and two block files can share one; a sibling that imports the block file
    itself gets the same module, so its families register once. Returns the module name.
    """
    ref = str(ref)
    if not ref.endswith(".py"):
        try:
            importlib.import_module(ref)
        except ImportError as exc:
            raise SrSearchError(f"block module {ref!r} cannot be imported: {exc}") from None
        return ref
    path = Path(ref).expanduser().resolve()
    if not path.is_file():
        raise SrSearchError(f"block module file not found: {path}")
    for name in (_LOADED.get(path), path.stem):
        if name is not None and _module_file(sys.modules.get(name)) == path:
            return name  # already imported (by an earlier call, or by a sibling's `import my_blocks`)
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.append(folder)  # at the end: a helper next to the file never shadows an installed module
    name = path.stem
    if not _importable_as(name, path):  # the name is another module's (or no Python name): a stable one of its own
        digest = hashlib.sha1(str(path).encode()).hexdigest()[:8]
        name = f"sr_search_blocks_{re.sub(r'[^0-9A-Za-z_]', '_', path.stem)}_{digest}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise SrSearchError(f"block module {path} failed to import: {type(exc).__name__}: {exc}") from exc
    _LOADED[path] = name
    return name


#: block files imported by `load_block_module`: path -> module name
_LOADED: dict[Path, str] = {}


def _importable_as(name: str, path: Path) -> bool:
    """Whether `import name` would import `path` (so a sibling's import of it finds this very module)."""
    if not name.isidentifier() or name in sys.modules:
        return False
    try:
        found = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return False
    return found is not None and found.origin is not None and Path(found.origin).resolve() == path


def _module_file(module: Any) -> Path | None:
    file = getattr(module, "__file__", None)
    if not file:
        return None
    try:
        return Path(file).resolve()
    except (OSError, RuntimeError):
        return None


def _source(cls: type) -> Path | None:
    return _module_file(sys.modules.get(cls.__module__))


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def block_module_files(refs: Sequence[str]) -> dict[str, str]:
    """`{file: sha256}` of every file the block modules `refs` were loaded from, and of the helper modules next to
    a block file that it imported (they shape its networks too); what a resumed study compares."""
    out: dict[str, str] = {}
    folders = set()
    for ref in refs:
        path = Path(ref).resolve() if ref.endswith(".py") else _module_file(sys.modules.get(ref))
        if path is None or not path.is_file():
            continue
        out[str(path)] = file_sha256(path)
        if ref.endswith(".py"):
            folders.add(path.parent)
    for module in list(sys.modules.values()):
        file = _module_file(module)
        if file is not None and file.parent in folders and file.suffix == ".py" and file.is_file():
            out.setdefault(str(file), file_sha256(file))
    return dict(sorted(out.items()))


@functools.lru_cache(maxsize=64)
def _distribution(top_module: str) -> str | None:
    """'<distribution> <version>' of the installed package that provides `top_module` (None when none does)."""
    try:
        from importlib.metadata import packages_distributions, version

        dists = packages_distributions().get(top_module)
        return f"{dists[0]} {version(dists[0])}" if dists else None
    except Exception:  # metadata is a courtesy here; the file hash still identifies the code
        return None


def family_source(name: str) -> str:
    """Where a registered family's code comes from, as one line for the row's `versions`: `sr_search` for a
    built-in, `<distribution> <version>` for an installed package, `<file> sha256:<first 16 hex>` for a file."""
    cls = type(family_of(name))
    if cls.__module__.startswith("sr_search.model.blocks."):
        return "sr_search"
    path = _source(cls)
    if path not in _LOADED:  # not a block file: an installed package's version names its code, when it has one
        dist = _distribution(cls.__module__.split(".")[0])
        if dist is not None:
            return dist
    if path is None or not path.is_file():
        return cls.__module__
    return f"{path} sha256:{file_sha256(path)[:16]}"
