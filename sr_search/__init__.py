"""sr-search: architecture search and ablations for efficient single-image super-resolution.

The public API (DESIGN 4.2). Heavy modules (Ray, Optuna, plotting) load on first use, so
`import sr_search` stays cheap.
"""

from importlib import import_module
from typing import Any

from .arch import ArchSpec
from .deploy import check_equivalence, reparameterize
from .errors import SrSearchError
from .network import build
from .presets import PRESETS

__version__ = "0.1.0"

_LAZY = {
    "load_study": "config",
    "launch": "runner",
    "load_results": "results",
    "pareto_front": "pareto",
    "measure": "timing",
}

__all__ = [
    "ArchSpec", "build", "reparameterize", "check_equivalence", "PRESETS", "SrSearchError", *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'sr_search' has no attribute {name!r}")
