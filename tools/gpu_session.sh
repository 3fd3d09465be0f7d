#!/usr/bin/env bash
# `make gpu-session`: what to run when a GPU is lent for a few minutes - one command, at most 8 minutes of wall time
# on one GPU, one summary file to report. Each step has its own time limit, so a step that hangs costs its slot only:
#
#   minute 0      the machine: GPU, driver, torch/CUDA, the packages sr-search needs
#   minutes 0-4   tools/gpu_check.py (CUDA tests, deploy on CUDA fp32/fp16, a 2-trial AMP study, timing vs a
#                 hand-written CUDA-event loop)                                                    limit 210 s
#   minutes 4-7   the main job (studies/repsr_ablation.yaml, `make run`) on CUDA with AMP: as many of its first
#                 trials as fit, then stopped as by Ctrl-C (what finished is kept)                  limit 140 s + 20 s
#   minute 7      bench/real_data.py --device cuda (data cache, batch feed, idle share), when it exists   limit 60 s
#   minute 8      the summary table: STEP, RESULT, SECONDS, DETAIL
#
# Usage: tools/gpu_session.sh [OUT_DIR]   (default: $OUT where it is set - the device tool's return folder - else
# runs/gpu_session). Python: $PY, else .venv/bin/python, else python3; the repository is put on PYTHONPATH, so no
# install (and no network) is needed where torch, ray and optuna are already there. Exit 1 when a step failed.
# DEVICE=cpu rehearses the same steps on a CPU (a check of this script; the numbers mean nothing).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
OUT_DIR=${1:-${OUT:-runs/gpu_session}}
mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
SUMMARY=$OUT_DIR/gpu_session.txt
if [ -z "${PY:-}" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
DEVICE=${DEVICE:-cuda}
SESSION_START=$(date +%s)
ROWS=()
FAILED=0

row() {  # STEP RESULT SECONDS DETAIL
  ROWS+=("$(printf '%-26s %-7s %6s  %s' "$1" "$2" "$3" "$4")")
  [ "$2" = FAIL ] && FAILED=1
  printf '== %s: %s (%s s) %s\n' "$1" "$2" "$3" "$4"
}

write_summary() {
  {
    echo "sr-search GPU session, $(date -u '+%Y-%m-%d %H:%M UTC'), $(( $(date +%s) - SESSION_START )) s in all"
    echo "$MACHINE"
    printf '%-26s %-7s %6s  %s\n' STEP RESULT SECONDS DETAIL
    printf '%s\n' "${ROWS[@]}"
    [ -f "$OUT_DIR/gpu_check.txt" ] && { echo; echo "-- tools/gpu_check.py"; cat "$OUT_DIR/gpu_check.txt"; }
    [ -f "$OUT_DIR/main_job.txt" ] && { echo; echo "-- main job"; cat "$OUT_DIR/main_job.txt"; }
    [ -f "$OUT_DIR/real_data.txt" ] && { echo; echo "-- bench/real_data.py (last lines)"; tail -n 25 "$OUT_DIR/real_data.txt"; }
  } > "$SUMMARY"
  echo; cat "$SUMMARY"
}

# --- minute 0: the machine --------------------------------------------------------------------------------------
GPU=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -n 1)
MACHINE="GPU: ${GPU:-none seen by nvidia-smi}; $("$PY" -c 'import sys, torch; print(f"python {sys.version.split()[0]}, torch {torch.__version__}, CUDA {torch.version.cuda}, cuda available: {torch.cuda.is_available()}")' 2>&1 | tail -n 1)"
echo "$MACHINE"
MISSING=$("$PY" - <<'PY'
import importlib.util
need = ["torch", "ray", "optuna", "pandas", "pyarrow", "pydantic", "typer", "yaml", "skimage", "scipy", "psutil", "thop",
        "fvcore", "seaborn"]
print(" ".join(n for n in need if importlib.util.find_spec(n) is None))
PY
)
if [ -n "$MISSING" ]; then
  row environment FAIL 0 "missing Python packages: $MISSING (carry them as wheels; the device README says how)"
  write_summary
  exit 1
fi
if [ "$DEVICE" = cuda ] && ! "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  row environment FAIL 0 "torch sees no CUDA device: nothing here needs a GPU session"
  write_summary
  exit 1
fi
row environment pass 0 "${GPU:-no GPU} (device: $DEVICE)"

# --- minutes 0-4: gpu_check ---------------------------------------------------------------------------------------
t0=$(date +%s)
timeout -k 10 210 "$PY" tools/gpu_check.py --device "$DEVICE" --table "$OUT_DIR/gpu_check.txt" > "$OUT_DIR/gpu_check.log" 2>&1
rc=$?
secs=$(( $(date +%s) - t0 ))
case $rc in
  0) row "make gpu-check" pass "$secs" "every check passed (table below)" ;;
  124|137) row "make gpu-check" FAIL "$secs" "stopped at its 210 s limit; log: gpu_check.log" ;;
  *) row "make gpu-check" FAIL "$secs" "exit $rc: $(grep -c ' FAIL ' "$OUT_DIR/gpu_check.txt" 2>/dev/null || echo '?') failed check(s); log: gpu_check.log" ;;
esac

# --- minutes 4-7: the main job's first trials on CUDA, AMP ---------------------------------------------------------
# The study as `make run` runs it (timing `auto` is repsr on a GPU, `train.amp: auto` is fp16 autocast on CUDA).
# SIGINT after 140 s is Ctrl-C: finished rows are kept and the launch exits 130; 20 s more for Ray to stop.
t0=$(date +%s)
MAIN=$OUT_DIR/main_job
rm -rf "$MAIN"
timeout --preserve-status -s INT -k 20 140 "$PY" -m sr_search.cli launch studies/repsr_ablation.yaml --out "$MAIN" \
  > "$OUT_DIR/main_job.log" 2>&1
rc=$?
secs=$(( $(date +%s) - t0 ))
"$PY" - "$MAIN" "$secs" > "$OUT_DIR/main_job.txt" 2>&1 <<'PY'
import sys
from sr_search import load_results

df = load_results(sys.argv[1])
seconds = float(sys.argv[2])
if not len(df):
    print("no trial finished")
    sys.exit(0)
done = df[df["status"] == "complete"]
print(f"{len(df)} trials recorded in {seconds:.0f} s ({len(done)} complete); "
      f"{(len(df) / seconds * 60):.1f} trials/min including Ray start-up")
cols = [c for c in ("trial_id", "factor", "level", "seed", "status", "psnr_y", "train_seconds", "latency_ms",
                    "timing_protocol", "timing_precision", "timing_device", "peak_mem_mb") if c in df]
print(df[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
if len(done):
    print(f"median training time {done['train_seconds'].median():.1f} s per trial "
          f"({int(done['train_iterations'].median())} iterations)")
PY
complete=$(grep -o '([0-9]* complete)' "$OUT_DIR/main_job.txt" | tr -dc 0-9)
case $rc in
  0|130) if [ "${complete:-0}" -ge 1 ]; then
           row "main job, CUDA + AMP" pass "$secs" "$(head -n 1 "$OUT_DIR/main_job.txt") (launch exit $rc)"
         else
           row "main job, CUDA + AMP" FAIL "$secs" "no trial completed (launch exit $rc); log: main_job.log"
         fi ;;
  *) row "main job, CUDA + AMP" FAIL "$secs" "launch exit $rc; log: main_job.log" ;;
esac

# --- minute 7: real-data input pipeline on the GPU ----------------------------------------------------------------
if [ -f bench/real_data.py ]; then
  t0=$(date +%s)
  timeout -k 10 60 "$PY" bench/real_data.py --device "$DEVICE" > "$OUT_DIR/real_data.txt" 2>&1
  rc=$?
  secs=$(( $(date +%s) - t0 ))
  case $rc in
    0) row "bench/real_data.py cuda" pass "$secs" "$(tail -n 1 "$OUT_DIR/real_data.txt")" ;;
    124|137) row "bench/real_data.py cuda" FAIL "$secs" "stopped at its 60 s limit" ;;
    *) row "bench/real_data.py cuda" FAIL "$secs" "exit $rc: $(tail -n 1 "$OUT_DIR/real_data.txt")" ;;
  esac
else
  row "bench/real_data.py cuda" skip 0 "bench/real_data.py does not exist yet"
fi

# --- minute 8: the summary ------------------------------------------------------------------------------------------
write_summary
exit $FAILED
