"""The README's "Bring your own block", run as written: its files are cut out of README.md (each code block that
follows a `<!-- readme-file: NAME -->` marker), written to a folder outside the package, checked with the public
contract and searched through the real runner - with no edit to sr-search.
"""

from __future__ import annotations

import json
import os
import re
import runpy
import subprocess
import sys
import tomllib
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from sr_search import load_results, load_study
from sr_search.model.blocks import REGISTRY
from sr_search.model.spec import ArchSpec
from sr_search.study.config import validate_files, with_overrides

ROOT = Path(__file__).resolve().parents[1]
MARKED = re.compile(r"<!-- readme-file: (?P<name>[\w.]+) -->\n```[a-z]*\n(?P<body>.*?)\n```\n", re.DOTALL)
EXPECTED = {"my_blocks.py", "my_space.yaml", "my_study.yaml", "check_my_blocks.py", "pyproject.toml",
            "rrrb_blocks.py"}  # the second example (bias padding): tests/test_block_contract.py runs it
#: the runner tests' budgets: a few iterations, a 24x24 CPU timing
TINY = {"n_trials": 3, "keep_checkpoints": True,
        "train": {"iterations": 8, "batch_size": 4, "lr_patch": 16, "val_every": 4},
        "data": {"val_max_size": 48},
        "timing": {"device": "cpu", "precision": "fp32", "batch": 1, "lr_size": [24, 24], "warmup": 1, "reps": 3,
                   "threads": 1}}


def readme_files() -> dict[str, str]:
    return {m["name"]: m["body"] + "\n" for m in MARKED.finditer((ROOT / "README.md").read_text())}


def forget_families(before: set[str]) -> None:
    """Unregister what a test registered, so later tests (and other files) see the built-in registry."""
    for name in set(REGISTRY) - before:
        module = type(REGISTRY.pop(name)).__module__
        sys.modules.pop(module, None)


@pytest.fixture(scope="module")
def user_dir(tmp_path_factory):
    """The README's files in a folder outside the package (not importable as sr_search.anything)."""
    folder = tmp_path_factory.mktemp("user")
    files = readme_files()
    assert set(files) == EXPECTED, f"README markers found {sorted(files)}"
    for name, text in files.items():
        (folder / name).write_text(text)
    before = set(REGISTRY)
    yield folder
    forget_families(before)


def test_the_readme_marks_the_whole_example():
    files = readme_files()
    assert set(files) == EXPECTED
    assert "@register" in files["my_blocks.py"] and "def to_deploy" in files["my_blocks.py"]
    assert "block_modules: [my_blocks.py]" in files["my_space.yaml"]
    assert "check_family" in files["check_my_blocks.py"]
    assert len(files["my_blocks.py"].splitlines()) <= 50  # a worked example, not a module to study


def test_the_readme_block_validates_from_yaml(user_dir):
    assert validate_files([user_dir / "my_space.yaml", user_dir / "my_study.yaml"]) == []
    study = load_study(user_dir / "my_study.yaml")
    space = study.search_space()
    assert space.block_modules == (str(user_dir / "my_blocks.py"),)  # absolute: what a Ray worker imports
    module = sys.modules[type(REGISTRY["replite"]).__module__]
    assert Path(module.__file__) == user_dir / "my_blocks.py"  # registered from the user's file, not the package
    # the family's fields are typed and bounded, and only the family has them
    spec = ArchSpec(block="replite", channels=8, depth=1)
    assert (spec.paths, spec.gate) == (2, False)
    with pytest.raises(Exception, match="paths"):
        ArchSpec(block="replite", paths=5)
    with pytest.raises(Exception, match="paths"):
        ArchSpec(block="plain", paths=2)
    # `gate` shapes the deployed network, `paths` does not
    assert spec.deploy_key() == spec.replace(paths=4).deploy_key() != spec.replace(gate=True).deploy_key()


def test_the_readme_check_script_runs_the_contract(user_dir, monkeypatch, capsys):
    monkeypatch.chdir(user_dir)  # the script names its block file relative to where it runs
    runpy.run_path(str(user_dir / "check_my_blocks.py"), run_name="__main__")
    worst = float(capsys.readouterr().out.strip().splitlines()[-1])
    assert 0 <= worst <= 1e-4


def test_the_contract_catches_a_wrong_fusion(user_dir, monkeypatch):
    """check_family is a real check: the README block with its 1x1 branch dropped from the fusion fails it."""
    from sr_search.model.testing import check_family

    load_study(user_dir / "my_study.yaml")  # registers the family
    block_class = type(REGISTRY["replite"].block(ArchSpec(block="replite", channels=8, depth=1)))
    module = sys.modules[block_class.__module__]

    def without_pointwise(self):
        kernels = [module.fuse.fold_bn(module.fuse.conv_kernel(conv), bn) for conv, bn in self.paths]
        kernels.append(module.fuse.identity_kernel(self.pointwise.weight, self.pointwise.in_channels))
        return module.nn.Sequential(module.fuse.to_conv(module.fuse.add(*kernels)), module.copy.deepcopy(self.post))

    monkeypatch.setattr(block_class, "to_deploy", without_pointwise)
    with pytest.raises(AssertionError, match="deployed differs from trained"):
        check_family("replite", random_specs=0)


def test_an_installed_package_registers_its_block_through_the_entry_point(tmp_path):
    """The README's entry point, as an installed distribution would declare it: a fresh process that imports
    sr-search knows the family, with no block_modules anywhere."""
    files = readme_files()
    group, points = next(iter(tomllib.loads(files["pyproject.toml"])["project"]["entry-points"].items()))
    assert group == "sr_search.blocks"
    site = tmp_path / "site"
    for module in points.values():
        package, _, leaf = module.partition(".")
        (site / package).mkdir(parents=True, exist_ok=True)
        (site / package / "__init__.py").write_text("")
        (site / package / f"{leaf}.py").write_text(files["my_blocks.py"])
    dist = site / "my_package-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-package\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in points.items()))
    code = ("from sr_search.model.spec import ArchSpec; from sr_search.run.inspect import inspect_rows; "
            "print(inspect_rows({'mine': ArchSpec(block='replite', scale=2, channels=8, depth=2)}, 'cpu')"
            ".to_json(orient='records'))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=300,
                          env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    (row,) = json.loads(done.stdout)
    assert row["block"] == "replite" and float(row["deploy_err"]) <= 1e-4
    assert row["params_deploy"] < row["params_train"]


def test_a_search_over_the_readme_block_through_the_runner(user_dir, tmp_path, ray_cluster):
    from sr_search.run.tune.launch import launch

    study = with_overrides(load_study(user_dir / "my_study.yaml"), **TINY)
    out = launch(study, out_dir=tmp_path / "run", echo=lambda _: None)

    df = load_results(out)
    assert list(df["trial_id"]) == ["0000", "0001", "0002"]
    assert (df["status"] == "complete").all(), df[["status", "error"]]
    required = ["psnr_y", "throughput", "latency_ms", "params_deploy", "macs_deploy", "reparam_max_abs_err",
                "timing_device", "deploy_key", "arch_json", "train_iterations", "seed", "finished_at"]
    assert df[required].notna().all().all(), df[required]
    assert (df["train_iterations"] == 8).all()
    assert (df["reparam_max_abs_err"] <= 1e-4).all() and (df["latency_ms"] > 0).all()

    # the family's own fields are typed parquet columns, set on its rows and null on the others
    for path in [out / "results.parquet", *sorted((out / "trials").glob("*.parquet"))]:
        schema = pq.read_schema(path)
        assert (str(schema.field("paths").type), str(schema.field("gate").type)) == ("int64", "bool"), path
    seen = set()
    for row in df.itertuples():
        spec = ArchSpec.from_json(row.arch_json)
        seen.add(spec.block)
        assert row.block == spec.block
        if spec.block == "replite":
            assert (row.paths, row.gate) == (spec.paths, spec.gate) and 1 <= row.paths <= 4
            # the timed network is the deployed one: one 3x3 conv per block, no BN, no 1x1 branch left
            assert row.params_deploy < row.params_train
        else:
            assert row.paths != row.paths and row.gate is None  # NaN / null: plain has no such field
    assert "replite" in seen, "the random sampler never picked the user's family: change the study seed"

    # a fresh process (the CLI) that never read the study file rebuilds the user's candidate from the folder alone
    trial = df.loc[df["block"] == "replite", "trial_id"].iloc[0]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "sr_search.cli", "export", str(out), "--trial", trial],
                          check=False, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (out / "export" / f"{trial}.pt").exists()
