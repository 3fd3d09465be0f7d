"""The CLI's rough edges (issue 17, item 5): closed pipes, flag help, light start-up, paths relative to the working
directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sr_search import cli
from sr_search.cli import app

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def run_cli(*args: str, stdout=subprocess.PIPE, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sr_search.cli", *args], stdout=stdout, stderr=subprocess.PIPE,
                          text=True, env=ENV, cwd=ROOT, timeout=120, check=False, **kwargs)


def test_output_into_a_closed_pipe_ends_quietly():
    """`sr-search presets | head`: the reader is gone before the first line; no BrokenPipeError, no 'runtime
    failure', the exit status of a process killed by SIGPIPE."""
    read, write = os.pipe()
    os.close(read)  # nobody will read: the first write fails with EPIPE, deterministically
    try:
        result = run_cli("presets", stdout=write)
    finally:
        os.close(write)
    assert result.stderr == "", result.stderr
    assert result.returncode == cli.EXIT_BROKEN_PIPE


def test_help_shows_no_bool_metavar_for_flags():
    commands = [[], *([name] for name in sorted(c.name or c.callback.__name__ for c in app.registered_commands))]
    for command in commands:
        result = runner.invoke(app, [*command, "--help"])
        assert result.exit_code == 0, result.output
        assert "<bool>" not in result.output, (command, result.output)
        assert "--help" in result.output
    # plain help, but each command's first paragraph whole in the list, not cut at the width with '...'
    listing = runner.invoke(app, ["--help"]).output
    commands = listing.split("Commands:")[1]
    assert "and the deploy error." in commands and "..." not in commands


@pytest.mark.parametrize(("args", "absent"), [
    (["--help"], ["torch", "ray", "optuna", "pandas", "matplotlib", "rich"]),
    (["validate", "studies/smoke.yaml"], ["ray", "optuna", "pandas", "matplotlib"]),
])
def test_light_commands_import_no_heavy_modules(args, absent):
    code = ("import sys\nfrom sr_search.cli import app\nsys.argv = ['sr-search', *sys.argv[1:]]\n"
            "try:\n    app()\nexcept SystemExit:\n    pass\n"
            f"print('LOADED', [m for m in {absent!r} if m in sys.modules])\n")
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=ENV, cwd=ROOT,
                            timeout=120, check=False)
    assert "LOADED []" in result.stdout, result.stdout + result.stderr


def test_printed_paths_are_relative_to_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    assert cli.shown(tmp_path / "sub" / "x.yaml") == "sub/x.yaml"
    assert cli.shown("sub/x.yaml") == "sub/x.yaml"
    assert cli.shown("/elsewhere/x.yaml") == "/elsewhere/x.yaml"  # not under the working directory: as it is
    here = os.getcwd()
    assert cli._relative_text(f"storage: sqlite:///{here}/runs/a/optuna.db; folder {here}/runs/a") == \
        "storage: sqlite:///runs/a/optuna.db; folder runs/a"
    assert cli._relative_text(f"{here}x/other") == f"{here}x/other"  # a sibling folder is not under it
    assert cli._relative_text(f"see /mnt{here}/a and '{here}/b'") == f"see /mnt{here}/a and 'b'"  # not a suffix

    study = tmp_path / "sub" / "s.yaml"
    study.write_text(f"name: s\nspace: {ROOT / 'searchspace/repsr.yaml'}\n")
    result = runner.invoke(app, ["validate", str(study)])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == "sub/s.yaml: ok"
    missing = runner.invoke(app, ["report", str(tmp_path / "sub" / "nope")])
    assert missing.exit_code == 1 and "sub/nope" in missing.output and str(tmp_path) not in missing.output


def test_time_table_shares_one_timing_per_deployed_network():
    """`sr-search time repsr-m4c16-x4 ecbsr-m4c16-x4`: both deploy to one network, so one timing, the same
    figures on both rows (the CLI passes no cache; the table keeps one in memory)."""
    from sr_search.model.presets import PRESETS
    from sr_search.run.timing.table import timing_table
    from sr_search.study.protocols import TimingProtocol

    tiny = TimingProtocol(name="tiny", device="cpu", lr_size=(16, 20), warmup=1, reps=3)
    specs = {name: PRESETS[name] for name in ("repsr-m4c16-x4", "ecbsr-m4c16-x4")}
    assert len({spec.deploy_key() for spec in specs.values()}) == 1
    df = timing_table(specs, tiny, "cpu")
    measured = ["latency_ms", "latency_ms_p90", "throughput", "mpix_per_s", "peak_mem_mb"]
    assert df.loc[0, measured].tolist() == df.loc[1, measured].tolist()
    assert list(df["cached"]) == [False, True]


def test_launch_messages_print_relative_paths(tmp_path, monkeypatch):
    import sr_search.run.tune.launch

    def fake_launch(study, *, echo, out_dir, **kwargs):
        echo(f"Study {study.name!r}: 3 trials -> {out_dir.absolute()}")
        return out_dir

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sr_search.run.tune.launch, "launch", fake_launch)
    result = runner.invoke(app, ["launch", str(ROOT / "studies/smoke.yaml"), "--dry-run", "--out", "runs/x"])
    assert result.exit_code == 0, result.output
    assert "3 trials -> runs/x" in result.output
