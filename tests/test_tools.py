"""The scripts in tools/ and bench/ are run by hand (or on a lent GPU), not by the tests: a module they import could
be renamed and nothing would notice until a GPU session failed on it (`tools/gpu_check.py` imported
`sr_search.run.tune.runner` long after it became `launch.py`). Here every import in those scripts - at the top and
inside functions, which `--help` never reaches - must resolve, and each script's `--help` must run."""

from __future__ import annotations

import ast
import importlib
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted([*ROOT.glob("tools/*.py"), *ROOT.glob("bench/*.py")])


def _optional(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    """An import inside `try: ... except ImportError` is optional by design (e.g. onnx)."""
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.Try) and any(
                isinstance(h.type, ast.Name) and h.type.id in {"ImportError", "ModuleNotFoundError"}
                for h in node.handlers):
            return True
    return False


def unresolved_imports(script: Path) -> list[str]:
    """Every `import a.b` / `from a.b import c` anywhere in `script` that does not resolve, as 'line N: why'.
    A module next to the script (bench/search_efficiency.py for bench/rung_schedule.py) resolves as it does when
    the script runs."""
    tree = ast.parse(script.read_text(), filename=str(script))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    problems = []
    sys.path.insert(0, str(script.parent))
    try:
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)) or _optional(node, parents):
                continue
            if isinstance(node, ast.Import):
                wanted = [(alias.name, None) for alias in node.names]
            elif node.module == "__future__":
                continue
            else:
                wanted = [(node.module, alias.name) for alias in node.names]
            for module_name, name in wanted:
                try:
                    module = importlib.import_module(module_name)
                except ImportError as exc:
                    problems.append(f"line {node.lineno}: {module_name}: {type(exc).__name__}: {exc}")
                    continue
                if name is None or name == "*" or hasattr(module, name):
                    continue
                try:
                    importlib.import_module(f"{module_name}.{name}")
                except ImportError:
                    problems.append(f"line {node.lineno}: {module_name} has no {name!r}")
    finally:
        sys.path.remove(str(script.parent))
    return problems


def test_there_are_scripts_to_check():
    names = {p.relative_to(ROOT).as_posix() for p in SCRIPTS}
    assert "tools/gpu_check.py" in names and any(n.startswith("bench/") for n in names), names


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_import_of_a_script_resolves(script):
    assert unresolved_imports(script) == []


def test_a_broken_import_inside_a_function_fails_the_suite(tmp_path):
    """The bug this file exists for: gpu_check's study step imported a module that had moved, inside a function, so
    neither `--help` nor `make gpu-check` without a GPU reached it."""
    source = (ROOT / "tools/gpu_check.py").read_text()
    public = "    from sr_search import launch, load_results, load_study"
    assert public in source
    broken = tmp_path / "gpu_check.py"
    broken.write_text(source.replace(public, "    from sr_search import load_results, load_study\n"
                                             "    from sr_search.run.tune.runner import launch"))
    problems = unresolved_imports(broken)
    assert len(problems) == 1 and "sr_search.run.tune.runner" in problems[0], problems
    broken.write_text("def f():\n    from sr_search import lunch\n")
    assert unresolved_imports(broken) == ["line 2: sr_search has no 'lunch'"]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_script_answers_help(script, monkeypatch, capsys):
    """Each script parses its options before doing any work: `--help` runs its module top level as `__main__` and
    exits 0 with its usage (in this process, where torch is already imported: a second of work, not ten)."""
    monkeypatch.setattr(sys, "argv", [str(script), "--help"])
    monkeypatch.setattr(sys, "path", [str(script.parent), *sys.path])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(script), run_name="__main__")
    assert exit_info.value.code in (0, None)
    assert "usage:" in capsys.readouterr().out


@pytest.mark.parametrize("script", sorted(ROOT.glob("tools/*.sh")), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_shell_scripts_parse(script):
    proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
