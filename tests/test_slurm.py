"""`sr-search slurm`: the sbatch script it writes (always tested), and on a real Slurm (tests marked `slurm`, run
where `sbatch` is; `tools/slurm_local.sh` sets up a one-node one) a submitted study that completes, and one that is
cancelled, resubmitted, warned before its time limit, requeued and resumed, each trial exactly once."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sr_search.cli import app
from sr_search.errors import SrSearchError
from sr_search.run.signals import sigterm_as_ctrl_c
from sr_search.run.slurm import SlurmJob, sbatch_script, script_path, time_limit_seconds
from sr_search.study.config import load_study

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "studies" / "smoke.yaml"


# --- the script, without Slurm ------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, seconds", [("90", 5400), ("5:30", 330), ("24:00:00", 86400), ("2-00", 172800),
                                           ("1-12:30", 131400), ("0-00:01:00", 60)])
def test_time_limits_read_as_slurm_writes_them(text, seconds):
    assert time_limit_seconds(text) == seconds


@pytest.mark.parametrize("job, message", [
    (SlurmJob(time="soon"), "--time 'soon'"),
    (SlurmJob(time="0:30"), "shortest time limit is 1 minute"),
    (SlurmJob(nodes=0), "--nodes 0"),
    (SlurmJob(time="00:05:00", signal_before_s=300), "--signal-before 300 s"),
    (SlurmJob(partition="gpu; rm -rf /"), "--partition"),
])
def test_bad_options_are_refused_naming_the_option(job, message):
    with pytest.raises(SrSearchError, match=re.escape(message)):
        job.check()


def _script(tmp_path, job, extra=""):
    study_file = tmp_path / "study.yaml"
    study_file.write_text(SMOKE.read_text().replace("../searchspace", str(ROOT / "searchspace")) + extra)
    return sbatch_script(load_study(study_file), study_file, tmp_path / "run", job, python="/opt/env/bin/python")


def test_the_script_asks_for_the_warning_and_requeue_and_parses(tmp_path):
    text = _script(tmp_path, SlurmJob(nodes=3, gpus_per_node=4, cpus_per_node=16, time="2-00:00:00",
                                      partition="gpu", account="lab", signal_before_s=600))
    for line in ("#SBATCH --nodes=3", "#SBATCH --ntasks-per-node=1", "#SBATCH --cpus-per-task=16",
                 "#SBATCH --gpus-per-node=4", "#SBATCH --time=2-00:00:00", "#SBATCH --signal=B:USR1@600",
                 "#SBATCH --requeue", "#SBATCH --open-mode=append", "#SBATCH --partition=gpu", "#SBATCH --account=lab",
                 f"#SBATCH --output={tmp_path / 'run.slurm'}/slurm-%j.log"):
        assert line in text, line
    assert "export RAY_AUTH_MODE=token" in text
    assert "--dashboard-host 127.0.0.1" in text  # the dashboard on the head's loopback
    assert 'scontrol requeue "$SLURM_JOB_ID"' in text
    assert "--out \"$STUDY_DIR\" --address \"$RAY_ADDRESS\"" in text
    assert "ray stop" not in text.replace("`ray stop`", "")  # would stop other jobs' Ray on a shared node
    assert "PY=/opt/env/bin/python" in text and "RAY=/opt/env/bin/ray" in text
    path = tmp_path / "job.sbatch"
    path.write_text(text)
    check = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


def test_timing_on_gets_the_last_node_without_cpus(tmp_path):
    extra = "timing_on: {resources: {rtx3090: 1}}\nresources: {gpus_per_trial: 1}\n"
    many = _script(tmp_path, SlurmJob(nodes=3, gpus_per_node=1), extra)
    assert "TIMING_RESOURCES='{\"rtx3090\": 1.0}'" in many and "NODE_CPUS=0" in many
    one = _script(tmp_path, SlurmJob(nodes=1, gpus_per_node=1), extra)
    assert "--resources '{\"rtx3090\": 1.0}'" in one and "TIMING_RESOURCES=" not in one


def test_cli_writes_the_script_and_says_when_sbatch_is_missing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    out = tmp_path / "runs" / "smoke"
    result = CliRunner().invoke(app, ["slurm", str(SMOKE), "--out", str(out), "--time", "01:00:00",
                                      "--signal-before", "120", "--submit"])
    assert result.exit_code == 1, result.output
    assert script_path(out).is_file() and os.access(script_path(out), os.X_OK)
    assert "sbatch not found" in result.output and "runs/smoke.slurm/job.sbatch" in result.output
    assert not out.exists()  # the study folder is the driver's: nothing written there before it runs


def test_sigterm_takes_the_ctrl_c_path_once(monkeypatch):
    calls = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: calls.append(signum))
    try:
        with sigterm_as_ctrl_c() as on_sigterm:
            signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(signum))  # what ray.init installs
            on_sigterm.arm()  # ... and what launch does right after it
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGTERM)  # one clean stop: a second SIGTERM is not a second Ctrl-C
            time.sleep(0.05)
        assert calls == [signal.SIGINT]
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a background job of a shell: SIGINT ignored
        before = signal.getsignal(signal.SIGTERM)  # SIG_DFL, or Ray's where an earlier test ran ray.init here
        with pytest.raises(KeyboardInterrupt), sigterm_as_ctrl_c():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
        assert signal.getsignal(signal.SIGTERM) == before
    finally:
        signal.signal(signal.SIGINT, previous)


# --- on a real Slurm ----------------------------------------------------------------------------------------------

def _slurm_answers() -> str | None:
    if shutil.which("sbatch") is None:
        return "no sbatch on this machine (tools/slurm_local.sh sets up a one-node Slurm)"
    proc = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30)
    states = proc.stdout.split()
    if proc.returncode != 0 or not any(s in ("idle", "mixed", "allocated", "completing") for s in states):
        return f"sbatch is here but no Slurm node is up (sinfo: {proc.stdout.strip() or proc.stderr.strip()})"
    return None


_NO_SLURM = _slurm_answers()
slurm_only = pytest.mark.skipif(_NO_SLURM is not None, reason=str(_NO_SLURM))


#: upper bounds (a 2-core machine under load; on an idle one each test takes 1-3 minutes)
SMOKE_BUDGET_S = 480
REQUEUE_BUDGET_S = 900


def _job(job_id: str) -> dict[str, str]:
    text = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True).stdout
    return dict(re.findall(r"(\w+)=(\S*)", text))


def _wait(what, deadline: float, job_id: str, log: Path):
    while time.time() < deadline:
        got = what()
        if got:
            return got
        time.sleep(1)
    subprocess.run(["scancel", job_id])
    pytest.fail(f"timed out waiting; job {job_id}: {_job(job_id)}\n{log.read_text()[-6000:] if log.exists() else ''}")


def _finished(job_id: str) -> str | None:
    state = _job(job_id).get("JobState", "GONE")
    return None if state in ("PENDING", "RUNNING", "COMPLETING", "CONFIGURING", "REQUEUED", "SUSPENDED") else state


def _rows(out: Path) -> int:
    from sr_search import load_results

    return len(load_results(out)) if (out / "study.yaml").exists() else 0


def _submit(args: list[str]) -> str:
    proc = subprocess.run([sys.executable, "-m", "sr_search.cli", "slurm", *args, "--submit"], capture_output=True,
                          text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return re.search(r"submitted job (\d+)", proc.stdout).group(1)


def _every_trial_once(out: Path, n: int) -> None:
    import optuna

    from sr_search import load_results

    df = load_results(out)
    assert sorted(df["trial_id"]) == [f"{i:04d}" for i in range(n)], df[["trial_id", "status"]]
    assert (df["status"] == "complete").all(), df[["trial_id", "status", "error"]]
    study = optuna.load_study(study_name=df["study"].iloc[0], storage=f"sqlite:///{out / 'optuna.db'}")
    numbers = [t.number for t in study.trials]
    assert sorted(numbers) == list(range(n)), numbers  # no duplicate Optuna trial
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)


@pytest.mark.slurm
@pytest.mark.ray
@slurm_only
def test_submitted_smoke_study_completes_every_trial_once(tmp_path):
    out = tmp_path / "smoke"
    start = time.time()
    job_id = _submit([str(SMOKE), "--out", str(out), "--time", "00:15:00", "--signal-before", "60"])
    log = script_path(out).parent / f"slurm-{job_id}.log"
    state = _wait(lambda: _finished(job_id), start + SMOKE_BUDGET_S, job_id, log)
    print(f"smoke study under Slurm: {time.time() - start:.0f} s from sbatch to the job's end")
    assert state == "COMPLETED", log.read_text()[-6000:]
    _every_trial_once(out, 3)
    assert "driver exited 0" in log.read_text()


STOPPABLE = """\
name: slurm_requeue
space: {space}
fixed: {{channels: 8, depth: 1}}
sampler: random
n_trials: 5
train: {{iterations: 30, batch_size: 8, lr_patch: 48, lr: 0.002}}
"""


@pytest.mark.slurm
@pytest.mark.ray
@slurm_only
def test_cancelled_then_warned_job_requeues_and_resumes_every_trial_once(tmp_path):
    """scancel after the first row: the folder is resumable, and the next submission continues it. Then Slurm's
    time-limit warning (what `--signal=B:USR1@N` delivers; sent here with `scancel --batch --signal=USR1` at once
    rather than after a minutes-long limit): the driver stops as on Ctrl-C, the job requeues itself, starts again
    under the same id and finishes the study."""
    study_file = tmp_path / "stoppable.yaml"
    study_file.write_text(STOPPABLE.format(space=ROOT / "searchspace" / "efficient_sr.yaml"))
    out = tmp_path / "run"
    t0 = time.time()
    end = t0 + REQUEUE_BUDGET_S  # every wait below ends by then: a stuck job fails the test, never hangs the suite
    events = []

    def note(what):
        events.append(f"{time.time() - t0:6.0f} s  {what}")

    first = _submit([str(study_file), "--out", str(out), "--time", "00:15:00", "--signal-before", "60"])
    log = script_path(out).parent / f"slurm-{first}.log"
    _wait(lambda: _rows(out) >= 1, end, first, log)
    note(f"job {first}: first row; scancel")
    subprocess.run(["scancel", first], check=True)
    assert _wait(lambda: _finished(first), end, first, log) == "CANCELLED"
    done = _rows(out)
    note(f"job {first} cancelled with {done} row(s)")
    assert 1 <= done < 5

    second = subprocess.run(["sbatch", "--parsable", str(script_path(out))], capture_output=True, text=True,
                            check=True).stdout.strip().split(";")[0]
    log = script_path(out).parent / f"slurm-{second}.log"
    note(f"job {second} submitted (the same script)")
    _wait(lambda: _rows(out) > done, end, second, log)
    note(f"job {second}: {_rows(out)} rows; time-limit warning (USR1 to the batch script)")
    subprocess.run(["scancel", "--batch", "--signal=USR1", second], check=True)
    _wait(lambda: int(_job(second).get("Restarts", 0)) >= 1, end, second, log)
    note(f"job {second} requeued ({_job(second).get('JobState')}) with {_rows(out)} rows")
    state = _wait(lambda: _finished(second), end, second, log)
    note(f"job {second} {state}")
    print("\n".join(events))
    text = log.read_text()
    assert state == "COMPLETED", text[-6000:]
    assert "time-limit warning" in text and "driver exited 130" in text and "requeueing job" in text, text[-6000:]
    assert "(restart 1)" in text and "sr-search launch --resume" in text, text[-6000:]
    _every_trial_once(out, 5)
