"""`sr-search slurm`: one sbatch script that runs a study on a Slurm allocation through Ray, and survives the
allocation's end.

The script (plain bash, commented, meant to be read and adapted) does what every hand-written Ray-on-Slurm script
does, and what they usually get wrong:

    a Ray head on the allocation's first node (token auth on, dashboard on the head's loopback, ports picked free on
    the node, so two jobs sharing a node do not clash), Ray workers on the other nodes (`srun`, one task per node)
    -> wait until every node has joined -> the driver, `sr-search launch --address` (`--resume` when the study
    folder already holds the study) -> Ray torn down (only this job's Ray processes: never `ray stop`, which would
    also stop another job's Ray on a shared node)

and, for time limits and preemption:

    `#SBATCH --signal=B:USR1@N --requeue`: N seconds before the time limit Slurm sends USR1 to the script, which
    passes it to the driver as SIGTERM; the driver stops as on Ctrl-C (every finished row saved, paused candidates'
    rung checkpoints kept) and exits 130; the script then tears Ray down and requeues its own job
    (`scontrol requeue $SLURM_JOB_ID`), which starts again later under the same job id and resumes the study, until
    it is finished. A SIGTERM without the warning (`scancel`, or preemption, where Slurm itself requeues a job
    submitted with --requeue) stops the driver the same way but does not requeue: the next submission of the same
    script continues the study.

The study folder, its rows and its Optuna SQLite file are written by the driver alone, on the first node: a path on
that node or a shared file system both work, since no other process writes them (SQLite's locking on a network file
system is never relied on). This module writes text and calls `sbatch`; it imports nothing of Ray.
"""

from __future__ import annotations

import json
import math
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ..errors import SrSearchError
from ..results.study_dir import StudyDir
from ..study.model import Study

#: consecutive jobs that record no trial before the script stops requeueing itself
MAX_IDLE_JOBS = 3
#: what the driver's exit code 130 means (sr_search.cli.EXIT_STOPPED): stopped early, every finished row kept
EXIT_STOPPED = 130
_TIME = re.compile(r"^(?:(?P<days>\d+)-)?(?P<a>\d+)(?::(?P<b>\d+))?(?::(?P<c>\d+))?$")
_NAME = re.compile(r"^[A-Za-z0-9_.+-]+$")


def time_limit_seconds(text: str) -> int:
    """Slurm's time formats (`--time`): MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS -> seconds."""
    match = _TIME.match(text.strip())
    if not match:
        raise SrSearchError(f"--time {text!r}: write it as Slurm does, e.g. 24:00:00, 2-00:00:00 or 90 (minutes)")
    days, a, b, c = match["days"], int(match["a"]), match["b"], match["c"]
    if days is None:
        if b is None:
            seconds = a * 60  # MM
        elif c is None:
            seconds = a * 60 + int(b)  # MM:SS
        else:
            seconds = a * 3600 + int(b) * 60 + int(c)  # HH:MM:SS
    else:
        seconds = int(days) * 86400 + a * 3600 + int(b or 0) * 60 + int(c or 0)  # D-HH[:MM[:SS]]
    if seconds < 60:
        raise SrSearchError(f"--time {text!r} is {seconds} s: Slurm's shortest time limit is 1 minute")
    return seconds


@dataclass(frozen=True)
class SlurmJob:
    """What the allocation asks Slurm for. `cpus_per_node` None: what the study's trials need per node (at least 2);
    `signal_before_s`: how long before the time limit the driver is told to stop (it needs tens of seconds to stop
    and save; the warning may come up to a minute earlier than asked, as Slurm checks limits periodically)."""

    nodes: int = 1
    gpus_per_node: int = 0
    cpus_per_node: int | None = None
    time: str = "24:00:00"
    partition: str | None = None
    account: str | None = None
    mem: str | None = None
    signal_before_s: int = 300

    def check(self) -> int:
        """Problems as one error naming the option; returns the time limit in seconds."""
        if self.nodes < 1:
            raise SrSearchError(f"--nodes {self.nodes}: at least 1")
        if self.gpus_per_node < 0:
            raise SrSearchError(f"--gpus-per-node {self.gpus_per_node}: 0 or more")
        if self.cpus_per_node is not None and self.cpus_per_node < 1:
            raise SrSearchError(f"--cpus-per-node {self.cpus_per_node}: at least 1")
        limit = time_limit_seconds(self.time)
        if not 10 <= self.signal_before_s < limit:
            raise SrSearchError(f"--signal-before {self.signal_before_s} s: between 10 s and the time limit "
                                f"({self.time} = {limit} s); the driver needs it to stop and save")
        for option, value in (("--partition", self.partition), ("--account", self.account), ("--mem", self.mem)):
            if value is not None and not _NAME.match(value):
                raise SrSearchError(f"{option} {value!r}: letters, digits and _.+- only")
        return limit


def cpus_needed(study: Study, job: SlurmJob) -> int:
    """CPUs per node: as asked, else what the study's concurrent trials need spread over the nodes (at least 2: the
    driver and Ray's own processes need a share too)."""
    if job.cpus_per_node is not None:
        return job.cpus_per_node
    r = study.resources
    return max(2, math.ceil(r.cpus_per_trial * r.concurrency / job.nodes))


def sbatch_script(study: Study, study_file: Path, out_dir: Path, job: SlurmJob, python: str | None = None,
                  ray: str | None = None) -> str:
    """The sbatch script for `study` (read from `study_file`, written to `out_dir`) on the allocation `job`."""
    job.check()
    python = python or sys.executable
    ray = ray or str(Path(python).with_name("ray"))
    study_file, out_dir = Path(study_file).resolve(), Path(out_dir).resolve()
    folder = StudyDir(out_dir)
    cpus = cpus_needed(study, job)
    timing = dict(study.timing_on.resources) if study.timing_on is not None else None
    timing_node = ""
    if timing is not None and job.nodes < 2:
        head_resources = json.dumps(timing)
        worker_resources = "{}"
        timing_node = ("# timing_on: this one node also offers the deployment resource, so timings share it with "
                       "training\n")
    elif timing is not None:
        head_resources, worker_resources = "{}", "{}"
        timing_node = (f"# timing_on: the last node is the deployment node: it offers {json.dumps(timing)} and no CPU "
                       f"to Ray, so no trial trains there\nTIMING_RESOURCES={shlex.quote(json.dumps(timing))}\n")
    else:
        head_resources = worker_resources = "{}"

    sbatch = [
        f"--job-name=sr-{study.name}"[:64],
        f"--nodes={job.nodes}",
        "--ntasks-per-node=1",
        f"--cpus-per-task={cpus}",
        f"--time={job.time}",
        f"--signal=B:USR1@{job.signal_before_s}",
        "--requeue",
        "--open-mode=append",
        f"--output={script_path(out_dir).parent}/slurm-%j.log",
        f"--chdir={Path.cwd()}",
    ]
    if job.gpus_per_node:
        sbatch.append(f"--gpus-per-node={job.gpus_per_node}")
    if job.partition:
        sbatch.append(f"--partition={job.partition}")
    if job.account:
        sbatch.append(f"--account={job.account}")
    if job.mem:
        sbatch.append(f"--mem={job.mem}")
    header = "\n".join(f"#SBATCH {line}" for line in sbatch)
    q = shlex.quote
    return f"""#!/bin/bash
# sr-search on Slurm: study {study.name!r} ({study_file.name}) through Ray, written by `sr-search slurm`.
# Submit with `sbatch {q(str(script_path(out_dir)))}`; submit it again to continue a study that stopped (the study
# resumes where it was). Every step is plain bash: adapt it to your cluster (modules, conda, partitions).
{header}
set -uo pipefail

PY={q(python)}                            # the Python that has sr-search installed (on every node)
RAY={q(ray)}
STUDY_FILE={q(str(study_file))}
STUDY_DIR={q(str(out_dir))}               # rows, Optuna SQLite, study.yaml: written by the driver alone
LOG_DIR={q(str(script_path(out_dir).parent))}   # this script, the jobs' logs, Ray's logs
NODES={job.nodes}
GPUS_PER_NODE={job.gpus_per_node}
{timing_node}
log() {{ echo "[$(date -u '+%H:%M:%S')] sr-search slurm: $*"; }}
log "job $SLURM_JOB_ID (restart ${{SLURM_RESTART_COUNT:-0}}) on $SLURM_JOB_NODELIST, time limit {job.time}"

# --- Ray's token: authentication stays on; the same file must be readable on every node (a home directory is) ---
export RAY_AUTH_MODE=token
if [ -z "${{RAY_AUTH_TOKEN:-}}" ]; then
  export RAY_AUTH_TOKEN_PATH="${{RAY_AUTH_TOKEN_PATH:-$HOME/.ray/auth_token}}"
  if [ ! -s "$RAY_AUTH_TOKEN_PATH" ]; then
    (umask 077; mkdir -p "$(dirname "$RAY_AUTH_TOKEN_PATH")"
     "$PY" -c 'import secrets; print(secrets.token_hex(32), end="")' > "$RAY_AUTH_TOKEN_PATH")
  fi
fi

# --- ports: picked free on each node, so several jobs (or users) on one node do not clash ---
free_port() {{ "$PY" -c 'import socket; s = socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])'; }}
# One Ray node, blocking until it is told to stop (SIGTERM stops this node's Ray processes, and only them);
# its output goes to ray-JOBID-NODE.log beside this job's log.
ray_node() {{
  exec "$RAY" start --block --disable-usage-stats --temp-dir "/tmp/sr-ray-$SLURM_JOB_ID" \\
    --dashboard-agent-listen-port "$(free_port)" --ray-client-server-port "$(free_port)" "$@" \\
    > "$LOG_DIR/ray-$SLURM_JOB_ID-$(hostname -s).log" 2>&1
}}
export -f free_port ray_node
export PY RAY LOG_DIR

NODELIST=($(scontrol show hostnames "$SLURM_JOB_NODELIST"))
HEAD_NODE=${{NODELIST[0]}}
HEAD_IP=$(hostname -I 2>/dev/null | awk '{{print $1}}')
HEAD_IP=${{HEAD_IP:-$(hostname)}}
HEAD_PORT=$(free_port)
export RAY_ADDRESS="$HEAD_IP:$HEAD_PORT"
CPUS=${{SLURM_CPUS_PER_TASK:-{cpus}}}

RAY_PIDS=()
DRIVER=""
STOP=""
teardown() {{
  [ -n "$DRIVER" ] && kill -0 "$DRIVER" 2>/dev/null && kill -TERM "$DRIVER" 2>/dev/null
  for pid in "${{RAY_PIDS[@]}}"; do kill -TERM "$pid" 2>/dev/null; done
  for pid in "${{RAY_PIDS[@]}}"; do
    for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
  done
}}
trap teardown EXIT
# USR1 is Slurm's warning before the time limit (--signal above): stop, then requeue. TERM (scancel, preemption,
# the limit itself): stop, no requeue of our own. Either way the driver stops as on Ctrl-C.
trap 'log "time-limit warning (USR1): stopping the study to requeue"; STOP=requeue; \\
      [ -n "$DRIVER" ] && kill -TERM "$DRIVER"' USR1
trap 'log "SIGTERM: stopping the study"; STOP=${{STOP:-term}}; [ -n "$DRIVER" ] && kill -TERM "$DRIVER"' TERM

# --- the head, here on the first node; the dashboard listens on this node's loopback only ---
log "Ray head on $HEAD_NODE ($RAY_ADDRESS), $CPUS CPUs, $GPUS_PER_NODE GPUs"
ray_node --head --node-ip-address "$HEAD_IP" --port "$HEAD_PORT" --num-cpus "$CPUS" --num-gpus "$GPUS_PER_NODE" \\
  --dashboard-host 127.0.0.1 --dashboard-port "$(free_port)" --resources {q(head_resources)} &
RAY_PIDS+=($!)

# --- the workers: one srun task per other node, with its GPUs and CPUs ---
for ((i = 1; i < NODES; i++)); do
  NODE=${{NODELIST[$i]}}
  NODE_CPUS=$CPUS NODE_GPUS=$GPUS_PER_NODE NODE_RESOURCES={q(worker_resources)}
  if [ -n "${{TIMING_RESOURCES:-}}" ] && [ "$i" -eq $((NODES - 1)) ]; then
    NODE_CPUS=0 NODE_RESOURCES=$TIMING_RESOURCES   # the deployment node: timings only
  fi
  log "Ray worker on $NODE: $NODE_CPUS CPUs, $NODE_GPUS GPUs, resources $NODE_RESOURCES"
  srun --nodes=1 --ntasks=1 --nodelist="$NODE" --cpus-per-task="$CPUS" --kill-on-bad-exit=0 \\
    bash -c "ray_node --address '$RAY_ADDRESS' --num-cpus $NODE_CPUS --num-gpus $NODE_GPUS \\
             --resources '$NODE_RESOURCES'" &
  RAY_PIDS+=($!)
done

# --- wait until every node has joined (the driver then checks the study's resources against the cluster) ---
"$PY" - "$NODES" <<'WAIT' || exit 1
import os, sys, time
import ray
want, deadline, address = int(sys.argv[1]), time.time() + 600, os.environ["RAY_ADDRESS"]
while True:  # the head may still be starting
    try:
        ray.init(address=address, logging_level="ERROR", log_to_driver=False)
        break
    except Exception as exc:
        if time.time() > deadline:
            sys.exit(f"the Ray head at {{address}} did not answer within 600 s: {{exc}}")
        time.sleep(2)
while True:
    alive = [n for n in ray.nodes() if n["Alive"]]
    if len(alive) >= want:
        print(f"all {{want}} node(s) joined: {{ray.cluster_resources()}}", flush=True)
        break
    if time.time() > deadline:
        sys.exit(f"only {{len(alive)}} of {{want}} Ray node(s) joined within 600 s")
    time.sleep(2)
WAIT

# --- the driver: it alone writes the study folder; --resume once the folder holds the study ---
rows() {{ [ -e "$STUDY_DIR/{folder.study_file.name}" ] && "$PY" -c 'import sys; from sr_search import load_results
print(len(load_results(sys.argv[1])))' "$STUDY_DIR" 2>/dev/null || echo 0; }}
RESUME=()
[ -e "$STUDY_DIR/{folder.study_file.name}" ] && RESUME=(--resume)
ROWS_BEFORE=$(rows)
log "driver: sr-search launch ${{RESUME[*]}} (study folder $STUDY_DIR)"
"$PY" -m sr_search.cli launch "$STUDY_FILE" --out "$STUDY_DIR" --address "$RAY_ADDRESS" "${{RESUME[@]}}" &
DRIVER=$!
wait "$DRIVER"; RC=$?
while kill -0 "$DRIVER" 2>/dev/null; do wait "$DRIVER"; RC=$?; done   # a trapped signal interrupts `wait`
DRIVER=""
log "driver exited $RC"
teardown
trap - EXIT

# A job that recorded no trial before its limit: after {MAX_IDLE_JOBS} in a row, stop requeueing (the time limit is
# too short for one trial plus Ray's start) instead of requeueing forever.
IDLE_FILE="$LOG_DIR/idle-jobs"
IDLE=$(cat "$IDLE_FILE" 2>/dev/null || echo 0)
if [ "$(rows)" -gt "$ROWS_BEFORE" ]; then IDLE=0; else IDLE=$((IDLE + 1)); fi
echo "$IDLE" > "$IDLE_FILE"
if [ "$RC" -eq {EXIT_STOPPED} ] && [ "$STOP" = requeue ] && [ "$IDLE" -ge {MAX_IDLE_JOBS} ]; then
  log "not requeueing: the last {MAX_IDLE_JOBS} jobs recorded no trial before the time limit; raise --time"
elif [ "$RC" -eq {EXIT_STOPPED} ] && [ "$STOP" = requeue ]; then
  log "requeueing job $SLURM_JOB_ID: the study resumes when it starts again"
  scontrol requeue "$SLURM_JOB_ID" && exit 0
  log "scontrol requeue failed: submit this script again to continue the study"
elif [ "$RC" -eq {EXIT_STOPPED} ]; then
  log "stopped before the end: submit this script again to continue the study"
fi
exit "$RC"
"""


def script_path(out_dir: Path) -> Path:
    """Where the script and the jobs' logs go: beside the study folder (`runs/x.slurm/`), not in it, so a study
    folder holds only what the driver writes."""
    out_dir = Path(out_dir).resolve()
    return out_dir.parent / f"{out_dir.name}.slurm" / "job.sbatch"


def write_script(study: Study, study_file: Path, out_dir: Path | None, job: SlurmJob) -> Path:
    out = Path(out_dir) if out_dir is not None else Path(study.out_dir)
    path = script_path(out)
    text = sbatch_script(study, study_file, out, job)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


def submit(path: Path) -> str:
    """`sbatch` the script; returns the job id."""
    sbatch = shutil.which("sbatch")
    if sbatch is None:
        raise SrSearchError(f"sbatch not found on this machine: the script is written ({path}); submit it where "
                            f"Slurm is (sbatch {path})")
    proc = subprocess.run([sbatch, "--parsable", str(path)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SrSearchError(f"sbatch {path} failed (exit {proc.returncode}): {proc.stderr.strip() or proc.stdout}")
    return proc.stdout.strip().split(";")[0]
