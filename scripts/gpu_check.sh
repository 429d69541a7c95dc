#!/usr/bin/env bash
# The CUDA / bfloat16 paths on one GPU, in under 10 minutes; results in one folder.
#
#     bash scripts/gpu_check.sh [OUT_DIR]        # default runs/gpu-check
#     GPU_CHECK_STEPS="tests pipeline" bash scripts/gpu_check.sh   # some steps only
#
# 1. the GPU tests (tests/test_gpu.py: bf16 answers vs CPU, batch vs one-at-a-time, bf16 SFT and
#    GRPO steps) and the backend / runtime / trainer tests with their backend on CUDA;
# 2. benchmarks/latency.py on CUDA (AwaRes vs full, turn 2 with and without KV reuse);
# 3. `awares eval` of the shipped models on 200 test samples, on CUDA in bf16;
# 4. the short pipeline configs/gpu/check.toml (its results are a smoke test, not a result).
# Each step has a time limit and the script goes on after a failure; summary.md says what passed.
# Wheels in .whl/ (packages the GPU image lacks or has in another version) are installed first.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-runs/gpu-check}
mkdir -p "$OUT_DIR"
LOG="$OUT_DIR/gpu_check.log"
SUMMARY="$OUT_DIR/summary.md"
: >"$LOG"
echo "# GPU check $(date -u +%FT%TZ)" >"$SUMMARY"
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/awares-site .whl/*.whl
    export PYTHONPATH="/tmp/awares-site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD/src:${PYTHONPATH:-}" PYTHONUNBUFFERED=1 AWARES_HOME="$OUT_DIR/home"

STEPS=" ${GPU_CHECK_STEPS:-tests latency eval pipeline} "

step() {  # step NAME SECONDS COMMAND...: run, log, and record status and wall time in the summary
    local name=$1 limit=$2 start=$SECONDS
    shift 2
    [[ $STEPS == *" $name "* ]] || return 0
    echo "=== $name (limit ${limit}s): $*" | tee -a "$LOG"
    timeout "$limit" "$@" >>"$LOG" 2>&1
    local rc=$?
    local status=ok
    [ $rc -eq 124 ] && status="timed out" || { [ $rc -ne 0 ] && status="failed (exit $rc)"; }
    echo "- $name: $status in $((SECONDS - start)) s" | tee -a "$SUMMARY"
}

{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    python3 -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'transformers', transformers.__version__, 'gpu', torch.cuda.is_available())"
} 2>&1 | tee -a "$SUMMARY" "$LOG"

step tests 150 env AWARES_TEST_DEVICE=cuda python3 -m pytest -q -x -n 0 -p no:cacheprovider tests/test_gpu.py \
    tests/test_models.py tests/test_runtime.py tests/test_grpo.py tests/test_train_sft.py tests/test_train_base.py
tail -n 3 "$LOG" | grep -E "passed|failed|error" >>"$SUMMARY"
step latency 50 python3 benchmarks/latency.py --data synthetic:test:32 --out "$OUT_DIR/latency.json"
step eval 75 python3 -m awares.cli eval --data synthetic:test:200 --out "$OUT_DIR/eval" --batch-size 32 \
    --max-new-tokens 16
step pipeline 300 python3 -m awares.cli pipeline configs/gpu/check.toml --out "$OUT_DIR/pipeline"
for table in "$OUT_DIR/eval/table.md" "$OUT_DIR/pipeline/eval/table.md"; do
    [ -f "$table" ] && { echo; echo "## $table"; cat "$table"; } >>"$SUMMARY"
done
cat "$SUMMARY"
