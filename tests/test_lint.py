"""The house rules `make lint` holds beyond ruff and import-linter: no private part of a dependency imported
(tools/check_private_imports.py), with its one listed exception."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import check_private_imports as lint  # noqa: E402


def test_the_package_benchmarks_and_tools_import_no_private_part_of_a_dependency():
    assert lint.check([ROOT / "sr_search", ROOT / "bench", ROOT / "tools"]) == []


def test_the_only_borrowing_is_ray_s_single_machine_switch():
    assert lint.ALLOWED == {("sr_search/run/tune/cluster.py", "ray._private.ray_constants")}


def test_private_modules_and_names_are_found_own_and_dunder_ones_are_not(tmp_path):
    code = ("import ray._private.services\nfrom ray._private import ray_constants\nfrom torch.nn import _reduction\n"
            "import torch\nfrom __future__ import annotations\nfrom sr_search.cli import _echo\nfrom . import _x\n"
            "def f():\n    from optuna.study._multi_objective import _dominates\n")
    path = tmp_path / "mod.py"
    path.write_text(code)
    found = dict(lint.private_imports(path))
    assert found == {1: "ray._private.services", 2: "ray._private.ray_constants", 3: "torch.nn._reduction",
                     9: "optuna.study._multi_objective._dominates"}
    lines = lint.check([path], root=tmp_path)
    assert len(lines) == 4 and lines[0].startswith("mod.py:1:") and "ray._private.services" in lines[0]
    assert lint.main([str(path)]) == 1
