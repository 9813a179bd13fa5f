#!/usr/bin/env bash
# The GPU check of the per-token mixup kernels, in one go, on a CUDA machine (made for an H200:
# 16 cores, no network): build mixsieve with its CUDA module, run the gpu tests, run the GPU
# benchmarks, and leave everything under $OUT (default bench/results/gpu_check/):
#   gpu_check.log          this script's log (every step's output)
#   summary.json           exit status and seconds of each step, versions, the targets
#   pytest_gpu.xml         the test report
#   mixup_gpu.json         bench/bench_mixup_gpu.py's results
#
# Assumes: nvcc (CUDA 12.x or 13.x, whose runtime the driver supports: the module links the
# static runtime of the toolkit it is built with), cmake >= 3.18 with ninja or make, a C++17
# compiler, and $PYTHON (default python3) with torch built with CUDA, numpy, pytest,
# scikit-build-core and pybind11. Missing Python packages are installed from a local wheel
# folder when WHEELHOUSE names one (no index is ever contacted). Steps are time-limited so
# that the whole script ends within 9 minutes (210 + 30 + 150 + 150 s at most).
# Usage: bash bench/gpu_check.sh [extra bench_mixup_gpu.py flags, e.g. --hbm-tbps 3.35]
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${OUT:-bench/results/gpu_check}"
mkdir -p "$OUT_DIR"
LOG="$OUT_DIR/gpu_check.log"
: >"$LOG"
declare -A RC SECS
log() { echo "[gpu_check $(date -u +%T)] $*" | tee -a "$LOG"; }
step() {  # step NAME TIMEOUT_S COMMAND...: runs it with a time limit, logs output, records rc and seconds
  local name=$1 limit=$2
  shift 2
  log "== $name (limit ${limit}s): $*"
  local t0=$SECONDS
  timeout --kill-after=10 "$limit" "$@" >>"$LOG" 2>&1
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

# 1. build: the CUDA module is required (MIXSIEVE_CUDA=ON fails the build without nvcc)
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
step build 210 $PY -m pip install -v --no-build-isolation --no-deps --no-index . \
  -Ccmake.define.MIXSIEVE_CUDA=ON
step import 30 $PY -c "
import mixsieve.info as i; from mixsieve.mixup import _cuda
print(i.build_info()['cuda']); ok, why = _cuda.available(); print(ok, why); raise SystemExit(0 if ok else 1)"

# 2. the tests (the whole file: the gpu ones and the backend's any-machine checks)
step tests 150 $PY -m pytest tests/test_mixup_gpu.py -p no:cacheprovider -q -rfEs \
  --junitxml="$OUT_DIR/pytest_gpu.xml"

# 3. the benchmarks (writes after every dtype, so a timeout keeps what was measured)
step bench 150 $PY bench/bench_mixup_gpu.py --out "$OUT_DIR/mixup_gpu.json" "$@"

# summary
{
  echo "{"
  echo "  \"steps\": {"
  first=1
  for name in build import tests bench; do
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
[ -f "$OUT_DIR/mixup_gpu.json" ] && $PY -c "
import json; r = json.load(open('$OUT_DIR/mixup_gpu.json'))
for t in r.get('targets', []): print(f\"  {t['case']:<22} {t['target']:<48} {t['value']} (need {t['need']}): {'met' if t['met'] else 'NOT met'}\")
" | tee -a "$LOG"
for name in build import tests bench; do
  [ "${RC[$name]:-1}" -eq 0 ] || exit 1
done
exit 0
