"""A study on a real multi-node Ray cluster on one machine (`ray.cluster_utils.Cluster`: a head and two worker nodes).

Marked `multinode` (run them alone with `pytest -m multinode`); a minute or two each on 2 cores.
"""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import ray
from ray.cluster_utils import Cluster

from sr_search import launch, load_results, load_study

pytestmark = [pytest.mark.multinode, pytest.mark.ray]
ROOT = Path(__file__).resolve().parents[1]

SPACE = "params: {block: [plain, rep], scale: 2, colors: 3, channels: 8, depth: 1}\n"
STUDY = """\
name: {name}
space: space.yaml
n_trials: {n}
sampler: random
timing: {{device: cpu, precision: fp32, batch: 1, lr_size: [24, 24], warmup: 1, reps: 3, threads: 1}}
train: {{iterations: {iterations}, batch_size: 4, lr_patch: 16}}
data: {{val_max_size: 48}}
resources: {{cpus_per_trial: 1, gpus_per_trial: 0, concurrency: 2, max_failures: {max_failures}}}
storage: {storage}
{extra}"""

def audit_setup(root: str, log: str):
    """A setup hook for every worker process (Ray's `worker_process_setup_hook`): log any file the worker opens,
    lists, creates or moves under `root` to `log`, and note that the worker is audited."""

    def install() -> None:
        import os
        import sys

        def audit(event, args):
            if event in ("open", "os.listdir", "os.scandir", "os.mkdir", "os.rename", "os.replace", "os.remove"):
                path = args[0] if args else None
                if isinstance(path, (str, bytes, os.PathLike)):
                    path = os.path.abspath(os.fsdecode(path))
                    if path.startswith(root):
                        with open(log, "a") as fh:
                            fh.write(f"{os.getpid()} {event} {path}\n")

        sys.addaudithook(audit)
        with open(log + ".workers", "a") as fh:  # proof that the audit is in place in this worker
            fh.write(f"{os.getpid()}\n")

    return install


def write_study(folder: Path, name: str, n: int, *, storage: Path, iterations: int = 12, max_failures: int = 0,
                extra: str = "") -> Path:
    (folder / "space.yaml").write_text(SPACE)
    path = folder / f"{name}.yaml"
    path.write_text(STUDY.format(name=name, n=n, iterations=iterations, max_failures=max_failures, storage=storage,
                                 extra=extra))
    return path


@pytest.fixture
def cluster():
    """A head that runs no trial (0 CPUs) and two one-CPU worker nodes; node B also offers the timing resource."""
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    node_a = cluster.add_node(num_cpus=1, resources={"node_a": 1})
    node_b = cluster.add_node(num_cpus=1, resources={"node_b": 1, "rtx3090": 1})
    cluster.wait_for_nodes()
    yield cluster, node_a, node_b
    if ray.is_initialized():
        ray.shutdown()
    cluster.shutdown()


def test_trials_spread_over_nodes_timings_run_on_the_timing_node_and_workers_never_touch_the_study(
        cluster, tmp_path):
    cluster, node_a, node_b = cluster
    study_dir, storage, log = tmp_path / "study", tmp_path / "shared-storage", tmp_path / "audit.log"
    hook = audit_setup(str(study_dir.resolve()), str(log))
    ray.init(address=cluster.address, runtime_env={"worker_process_setup_hook": hook}, log_to_driver=False)
    study = load_study(write_study(tmp_path, "multi", 4, storage=storage,
                                   extra="timing_on: {resources: {rtx3090: 1}}\n"))
    out = launch(study, out_dir=study_dir, address=cluster.address, echo=lambda _: None)

    df = load_results(out)
    table = df[["trial_id", "status", "node", "timing_node", "timing_cached"]]
    print("\n" + table.to_string(index=False))
    assert (df["status"] == "complete").all(), df[["trial_id", "status", "error"]]
    assert set(df["node"]) == {node_a.node_id, node_b.node_id}  # both worker nodes trained
    assert set(df["timing_node"].dropna()) == {node_b.node_id}  # every timing on the node with the resource
    audited = Path(f"{log}.workers").read_text().split()
    assert len(audited) >= 2, "the audit hook was not installed in the workers"
    touched = log.read_text().splitlines() if log.exists() else []
    print(f"{len(audited)} worker processes audited; {len(touched)} accesses under the study folder")
    assert touched == [], touched[:10]  # no worker opened or listed anything under the study folder
    assert not list(study_dir.glob("ray")), "Tune's storage is elsewhere: the study folder holds the driver's files"


def _driver(study_file: Path, out: Path, address: str, *extra: str) -> subprocess.Popen:
    cli = [sys.executable, "-m", "sr_search.cli", "launch", str(study_file), "--out", str(out), "--address", address,
           *extra]
    return subprocess.Popen(cli, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait(condition, seconds: float, what: str) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def _running(out: Path) -> list:
    try:
        return json.loads((out / "progress.json").read_text()).get("running_trials", [])
    except (OSError, ValueError):
        return []


def test_a_worker_node_dying_mid_trial_loses_nothing_and_duplicates_nothing(cluster, tmp_path):
    cluster, node_a, node_b = cluster
    out = tmp_path / "study"
    study_file = write_study(tmp_path, "dies", 3, storage=tmp_path / "storage", iterations=400, max_failures=1)
    driver = _driver(study_file, out, cluster.address)
    _wait(lambda: any(t.get("iteration", 0) >= 0 for t in _running(out)) and len(_running(out)) >= 2, 240,
          "two running trials")
    cluster.remove_node(node_a, allow_graceful=False)  # a node dies while a trial trains on it
    output, _ = driver.communicate(timeout=400)
    assert driver.returncode == 0, output
    df = load_results(out)
    assert sorted(df["trial_id"]) == ["0000", "0001", "0002"]  # each once
    failed = df[df["status"] != "complete"]
    assert failed.empty or failed["error"].str.contains("crashed").all(), failed[["trial_id", "error"]]


def test_resume_after_the_driver_is_killed_on_a_cluster(cluster, tmp_path):
    cluster, _, _ = cluster
    out = tmp_path / "study"
    study_file = write_study(tmp_path, "killed", 4, storage=tmp_path / "storage", iterations=60)
    driver = _driver(study_file, out, cluster.address)
    _wait(lambda: len(list((out / "trials").glob("*.parquet"))) >= 1, 240, "a finished trial")
    driver.send_signal(signal.SIGKILL)
    driver.wait(timeout=60)
    before = set(load_results(out)["trial_id"])
    resumed = _driver(study_file, out, cluster.address, "--resume")
    output, _ = resumed.communicate(timeout=400)
    assert resumed.returncode == 0, output
    df = load_results(out)
    assert sorted(df["trial_id"]) == ["0000", "0001", "0002", "0003"] and before <= set(df["trial_id"])
    assert (df["status"] == "complete").all(), df[["trial_id", "status", "error"]]
