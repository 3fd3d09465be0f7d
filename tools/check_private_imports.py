"""No module of sr-search imports a private part of a dependency (`make lint` runs this).

A private module (`ray._private`, `torch._dynamo`) or name (`from optuna.study import _x`) of a dependency can change
in any release without notice; the package, its benchmarks and tools use public APIs only. The one exception is
listed in `ALLOWED` with why; `tests/test_lint.py` pins it, and `tests/test_cluster_switch.py` fails loudly when a
Ray upgrade changes what it borrows. Tests may reach into private parts to guard such a borrowing.

    python tools/check_private_imports.py [PATH ...]   (default: sr_search bench tools); exit 1 naming each import
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OWN = "sr_search"
#: (file relative to the repository, private module or name it may import): the only borrowings, each explained
ALLOWED = {
    # Ray has no public way to keep a local instance on loopback on Linux (it resolves 127.0.0.1 to the machine's
    # address); its single-machine switch is read at import, so the running driver's copy is set too. One function,
    # `loopback_only`; README "Failure and security model" says so.
    ("sr_search/run/tune/cluster.py", "ray._private.ray_constants"),
}


def _private(dotted: str) -> bool:
    return any(part.startswith("_") and not (part.startswith("__") and part.endswith("__"))
               for part in dotted.split("."))


def private_imports(path: Path, source: str | None = None) -> Iterator[tuple[int, str]]:
    """(line, what) for every import of a dependency's private module or name in the file at `path`."""
    tree = ast.parse(source if source is not None else path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] != OWN and _private(alias.name):
                    yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] == OWN:
                continue
            for alias in node.names:
                dotted = f"{node.module}.{alias.name}"
                if _private(dotted):
                    yield node.lineno, dotted


def check(paths: Iterable[Path], root: Path = ROOT) -> list[str]:
    """One line per private import found under `paths` (the `ALLOWED` ones excepted)."""
    found = []
    for top in paths:
        for path in sorted([top] if top.is_file() else top.rglob("*.py")):
            resolved = path.resolve()
            relative = (resolved.relative_to(root.resolve()) if resolved.is_relative_to(root.resolve())
                        else resolved).as_posix()
            for line, dotted in private_imports(path):
                if (relative, dotted) not in ALLOWED:
                    found.append(f"{relative}:{line}: imports {dotted}, a private part of a dependency; use its "
                                 f"public API (or list it in tools/check_private_imports.py ALLOWED, saying why)")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", type=Path, help="files or folders (default: sr_search bench tools)")
    args = parser.parse_args(argv)
    paths = args.paths or [ROOT / "sr_search", ROOT / "bench", ROOT / "tools"]
    found = check(paths)
    for line in found:
        print(line, file=sys.stderr)
    if not found:
        print(f"no private imports of dependencies in {', '.join(str(p) for p in paths)}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
