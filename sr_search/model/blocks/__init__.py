"""Block families: the block API (`api`: BlockFamily, FamilyFields, register), the fusion algebra (`fuse`), shared
layers (`layers`) and the built-in families, one module each. Importing this package registers the built-ins and
any family an installed package declares under the `sr_search.blocks` entry-point group.

A family of your own, in your own module::

    from sr_search.model.blocks import BlockFamily, FamilyFields, register, fuse, layers

(the README's "Bring your own block" shows a complete one).
"""

from . import eresidual, ecb, esdb, fuse, layers, plain, rep, rlfb, span  # noqa: F401 - registers the built-ins
from .api import (REGISTRY, BlockFamily, FamilyFields, Spec, block_field_infos, block_module_files, example_values,
                  family_of, family_source, load_block_module, load_entry_points, problem, register, users_of)

__all__ = ["BlockFamily", "FamilyFields", "REGISTRY", "Spec", "block_field_infos", "block_module_files",
           "example_values", "family_of", "family_source", "fuse", "layers", "load_block_module", "load_entry_points",
           "problem", "register", "users_of"]

load_entry_points()
