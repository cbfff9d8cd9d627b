#!/usr/bin/env bash
# The first thing to run on a new GPU machine: the CUDA tests, then scripts/benchmark.py on the GPU in
# fp32, in bf16 (fp16 where the GPU has no bf16) and with torch.compile, and one summary table.
#
#   bash scripts/gpu_check.sh                        # sets up .venv first if needed (scripts/setup_env.sh)
#   DSMNET_PYTHON=python3 bash scripts/gpu_check.sh  # an interpreter that already has torch with CUDA
#
# With DSMNET_PYTHON (a cluster's torch module, a container) nothing of that interpreter changes: the
# modules it lacks (basicsr, lmdb, ...) are installed into build/gpu_check_deps, from the wheels in
# DSMNET_WHEELS=folder when there is no package index. Outputs go to GPU_CHECK_OUT (default
# results/gpu_check): gpu_check.log, cuda_tests.xml, benchmark_*.json (written as each measurement
# ends) and summary.md. Each step has a time limit in seconds, 480 in all (GPU_CHECK_TESTS_S,
# GPU_CHECK_FP32_S, GPU_CHECK_LOW_S, GPU_CHECK_COMPILE_S), so the summary comes out even when a step
# overruns; compiling the full network may take longer than its limit on some GPUs. Exit status 0 when
# every step passed, 1 otherwise (also without a CUDA device).
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="${GPU_CHECK_OUT:-$ROOT/results/gpu_check}"
mkdir -p "$OUT"
rm -f "$OUT"/steps.tsv "$OUT"/cuda_tests.xml "$OUT"/benchmark_*.json
exec > >(tee "$OUT/gpu_check.log") 2>&1

# Module -> what pip installs for it, for an interpreter of the user's (basicsr and lmdb pinned as in .venv).
NEEDED='basicsr:basicsr==1.4.2 lmdb:lmdb==3.0.0 cv2:opencv-python-headless scipy:scipy yaml:pyyaml tqdm:tqdm
PIL:pillow requests:requests tensorboard:tensorboard pytest:pytest distutils:setuptools'

if [ -n "${DSMNET_PYTHON:-}" ]; then
    PY="$DSMNET_PYTHON"
    DEPS="$ROOT/build/gpu_check_deps"
    export PYTHONPATH="$ROOT:$DEPS${PYTHONPATH:+:$PYTHONPATH}"
    missing=()
    for entry in $NEEDED; do
        "$PY" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('${entry%%:*}') is None)" \
            || missing+=("${entry#*:}")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "gpu_check: installing ${missing[*]} into $DEPS"
        source=()
        [ -n "${DSMNET_WHEELS:-}" ] && source=(--no-index --find-links "$DSMNET_WHEELS")
        "$PY" -m pip install --disable-pip-version-check -q --no-deps --no-build-isolation --target "$DEPS" \
            "${source[@]}" "${missing[@]}" || { echo "gpu_check: could not install ${missing[*]}" >&2; exit 1; }
    fi
else
    source scripts/setup_env.sh
    set +e  # setup_env.sh exits on errors; here every step runs and the summary reports it
    PY=python
fi
"$PY" -c 'import dsmnet_arch, lmdb' || { echo "gpu_check: $PY cannot import dsmnet_arch and its needs" >&2; exit 1; }

# The GPU, and the low precision it supports.
LOW=$("$PY" - <<'EOF'
import sys
import torch
if not torch.cuda.is_available():
    sys.exit(f'gpu_check: PyTorch {torch.__version__} (built for CUDA {torch.version.cuda}) sees no CUDA device, so '
             'there is nothing to check. On a GPU machine: is the driver new enough for this build? '
             'DSMNET_PYTHON=... uses an interpreter whose torch fits the machine.')
props = torch.cuda.get_device_properties(0)
bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
print(f'gpu_check: {torch.cuda.device_count()} x {props.name}, {props.total_memory / 2**30:.0f} GiB, compute '
      f'capability {props.major}.{props.minor}, bf16 {"yes" if bf16 else "no"}; torch {torch.__version__}, '
      f'CUDA {torch.version.cuda}', file=sys.stderr)
print('bf16' if bf16 else 'fp16')
EOF
) || exit 1

step() {  # name, limit in seconds, command...: runs the command, records its status and duration
    local name=$1 limit=$2 start=$SECONDS status
    shift 2
    echo "== $name (limit $limit s): $*"
    timeout --kill-after=15 "$limit" "$@"
    status=$?
    printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$((SECONDS - start))" "$limit" >> "$OUT/steps.tsv"
}

BENCH=("$PY" scripts/benchmark.py --device cuda --verbose)
step 'CUDA tests' "${GPU_CHECK_TESTS_S:-210}" \
    "$PY" -m pytest tests/test_cuda.py -m cuda -q -rs -p no:cacheprovider --junitxml="$OUT/cuda_tests.xml"
step 'benchmark fp32' "${GPU_CHECK_FP32_S:-120}" "${BENCH[@]}" --json "$OUT/benchmark_fp32.json"
step "benchmark $LOW" "${GPU_CHECK_LOW_S:-60}" "${BENCH[@]}" --precision "$LOW" --no-data \
    --json "$OUT/benchmark_$LOW.json"
step 'benchmark fp32, compiled' "${GPU_CHECK_COMPILE_S:-90}" "${BENCH[@]}" --compile --no-data \
    --json "$OUT/benchmark_fp32_compiled.json"

"$PY" scripts/gpu_check_summary.py "$OUT" | tee "$OUT/summary.md"
