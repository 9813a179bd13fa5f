#!/usr/bin/env bash
# The GPU check of every CUDA kernel, in one go, on a CUDA machine (made for an H100/H200: 16
# cores, no network): build mixsieve with its CUDA module, run the gpu tests, run the GPU
# benchmarks, and leave everything under $OUT (default bench/results/gpu_check/):
#   gpu_check.log          this script's log (every step's output)
#   summary.json           exit status and seconds of each step, and every benchmark target
#   pytest_gpu.xml         the test report
#   minhash_gpu.json       bench/bench_gpu_minhash.py: signatures GB/s vs CPU, NeMo's rate, torch
#   sampling_gpu.json      bench/bench_gpu_sampling.py: weighted_sample 10^8 vs CPU, torch.topk
#   soft_cap_gpu.json      bench/bench_gpu_soft_cap.py: soft-cap 10^8 vs FLYT numpy, torch
#   mixup_gpu.json         bench/bench_mixup_gpu.py: the per-token mixup kernels
#
# Assumes: nvcc (CUDA 12.x or 13.x, whose runtime the driver supports: the module links the
# static runtime of the toolkit it is built with), cmake >= 3.18 with ninja or make, a C++17
# compiler, and $PYTHON (default python3) with torch built with CUDA, numpy, pytest,
# scikit-build-core and pybind11. Missing Python packages are installed from a local wheel
# folder when WHEELHOUSE names one (no index is ever contacted). Steps are time-limited (150 +
# 20 + 100 + 60 + 45 + 60 + 45 s) and share one deadline (DEADLINE_S, default 500 s), so the
# whole script ends within about 8.5 minutes, leaving room for a rerun in a 15-minute lease;
# each benchmark writes its JSON as it goes, so a step that runs out of time keeps what it measured.
# Usage: bash bench/gpu_check.sh [--hbm-tbps 3.35]   (the flag goes to bench_mixup_gpu.py)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${OUT:-bench/results/gpu_check}"
mkdir -p "$OUT_DIR"
LOG="$OUT_DIR/gpu_check.log"
: >"$LOG"
declare -A RC SECS
log() { echo "[gpu_check $(date -u +%T)] $*" | tee -a "$LOG"; }
# One deadline for the whole script (DEADLINE_S, default 500 s): each step gets its own limit or
# what is left before the deadline, whichever is less, so the script ends in time whatever hangs.
DEADLINE=$((SECONDS + ${DEADLINE_S:-500}))
step() {  # step NAME TIMEOUT_S COMMAND...: runs it with a time limit, logs output, records rc and seconds
  local name=$1 limit=$2
  shift 2
  local left=$((DEADLINE - SECONDS - 5))
  [ "$left" -lt "$limit" ] && limit=$left
  if [ "$limit" -le 0 ]; then
    log "== $name: skipped, the deadline has passed"
    RC[$name]=124
    SECS[$name]=0
    return 124
  fi
  log "== $name (limit ${limit}s): $*"
  local t0=$SECONDS
  timeout --kill-after=3 "$limit" "$@" >>"$LOG" 2>&1
  RC[$name]=$?
  SECS[$name]=$((SECONDS - t0))
  log "== $name: rc ${RC[$name]} in ${SECS[$name]}s"
  return "${RC[$name]}"
}

log "machine: $(nproc) cores; $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -1)"
log "nvcc: $(command -v nvcc || echo missing) $(nvcc --version 2>/dev/null | tail -1)"
PY="${PYTHON:-python3}"
need_py() { $PY -c "import $1" 2>/dev/null; }
for mod in torch numpy pytest scikit_build_core pybind11; do
  if ! need_py "$mod"; then
    if [ -n "${WHEELHOUSE:-}" ]; then
      pkg=${mod//_/-}
      log "installing $pkg from $WHEELHOUSE (no index)"
      $PY -m pip install -q --no-index --find-links "$WHEELHOUSE" "$pkg" >>"$LOG" 2>&1
    fi
    need_py "$mod" || log "MISSING python package: $mod (set WHEELHOUSE to a folder of wheels)"
  fi
done
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())" 2>&1 | tee -a "$LOG"

STEPS="build import tests bench_minhash bench_sampling bench_soft_cap bench_mixup"

# 1. build: the CUDA module is required (MIXSIEVE_CUDA=ON fails the build without nvcc)
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
step build 150 $PY -m pip install -v --no-build-isolation --no-deps --no-index . \
  -Ccmake.define.MIXSIEVE_CUDA=ON
step import 20 $PY -c "
import mixsieve.info as i; from mixsieve.mixup import _cuda
print(i.build_info()['cuda']); ok, why = _cuda.available(); print(ok, why); raise SystemExit(0 if ok else 1)"

# 2. the tests (the whole files: the gpu ones and the backends' any-machine checks)
step tests 100 $PY -m pytest tests/test_mixup_gpu.py tests/test_gpu_minhash.py tests/test_gpu_sampling.py \
  tests/test_gpu_soft_cap.py -p no:cacheprovider -q -rfEs --junitxml="$OUT_DIR/pytest_gpu.xml"

# 3. the benchmarks
step bench_minhash 60 $PY bench/bench_gpu_minhash.py --gb 1 --runs 3 --out "$OUT_DIR/minhash_gpu.json"
step bench_sampling 45 $PY bench/bench_gpu_sampling.py --runs 3 --out "$OUT_DIR/sampling_gpu.json"
step bench_soft_cap 60 $PY bench/bench_gpu_soft_cap.py --cpu-runs 1 --torch-budget 10 --out "$OUT_DIR/soft_cap_gpu.json"
step bench_mixup 45 $PY bench/bench_mixup_gpu.py --out "$OUT_DIR/mixup_gpu.json" "$@"

# summary
{
  echo "{"
  echo "  \"steps\": {"
  first=1
  for name in $STEPS; do
    [ -n "${RC[$name]+x}" ] || continue
    [ $first -eq 1 ] || echo ","
    first=0
    printf '    "%s": {"rc": %s, "seconds": %s}' "$name" "${RC[$name]}" "${SECS[$name]}"
  done
  echo
  echo "  },"
  printf '  "tests_tail": %s\n' "$(grep -E '^(FAILED|ERROR|[0-9]+ (passed|failed))|passed|failed' "$LOG" | tail -5 | $PY -c 'import json,sys; print(json.dumps(sys.stdin.read()))')"
  echo "}"
} >"$OUT_DIR/summary.json"
log "summary: $(tr -d '\n' <"$OUT_DIR/summary.json")"
$PY - "$OUT_DIR" <<'PYEOF' | tee -a "$LOG"
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
summary = json.loads((out / "summary.json").read_text())
summary["targets"] = []
for name in ("minhash_gpu", "sampling_gpu", "soft_cap_gpu", "mixup_gpu"):
    path = out / f"{name}.json"
    if not path.exists():
        print(f"  {name}: no results")
        continue
    for t in json.loads(path.read_text()).get("targets", []):
        summary["targets"].append({"bench": name, **t})
        print(f"  {t['case']:<28} {t['target']:<52} {t['value']} (need {t['need']}): {'met' if t['met'] else 'NOT met'}")
(out / "summary.json").write_text(json.dumps(summary, indent=2))
PYEOF
for name in $STEPS; do
  [ "${RC[$name]:-1}" -eq 0 ] || exit 1
done
exit 0
