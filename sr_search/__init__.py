"""sr-search: architecture search and ablations for efficient single-image super-resolution.

The public API (docs/architecture.md, "Python API"). Everything loads on first use, so `import sr_search` (and
`sr-search --help`) stays cheap; the modules behind it are grouped by layer: `model` (specs, blocks, networks,
deployment, presets, cost), `study` (YAML, search spaces, studies), `run` (data, training, metrics, timing, trials, the
Ray/Optuna runner) and `results` (parquet, fronts, reports).
"""

from importlib import import_module
from typing import Any

__version__ = "0.2.0"

_API = {
    "ArchSpec": "model.spec",
    "build": "model.network",
    "reparameterize": "model.deploy",
    "check_equivalence": "model.deploy",
    "PRESETS": "model.presets",
    "SrSearchError": "errors",
    "load_study": "study.config",
    "launch": "run.tune.launch",
    "load_results": "results.store",
    "pareto_front": "results.pareto",
    "compare_studies": "results.compare",
    "ablation_effects": "results.effects",
    "measure": "run.timing.measure",
}

__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    if name in _API:
        value = getattr(import_module(f".{_API[name]}", __name__), name)
        globals()[name] = value  # looked up once
        return value
    raise AttributeError(f"module 'sr_search' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
