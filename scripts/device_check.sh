#!/usr/bin/env bash
# The GPU check, in one command (at most 9 minutes on one GPU, whatever happens):
#
#   bash scripts/device_check.sh [RESULTS_DIR]      # default: $OUT if set, else device_check/
#
# 1. every CUDA test (pytest -m cuda): the backends agree, the official outputs are reproduced, training runs;
# 2. a x2 test set of 14 image sizes in one process (issue 13, goal 1): first-pass and steady latency, peak
#    memory and the number of compiled graphs, for the network as it runs by default and compiled whole;
# 3. the fast path against the plain one (goal 4): HD inference in fp32 and bf16, training steps, with the
#    targets each case meets or misses;
# 4. ESC against the paper's baselines (issue 31): SRFormer-light, ATD-light and HiT-SRF at x4, HD output, each as its
#    DFLIP option file builds it, with ESC's measured advantage beside Table 4's and the claimed 3.7x/6.2x/8.9x
#    (also as compare.json).
# Each step has its own time limit, so one slow step cannot starve the others; tables stream row by row and
# land in RESULTS_DIR as markdown, beside the environment they were measured in. The checkout need not be
# pip-installed (only its dependencies): everything runs from this checkout.
set -uo pipefail
cd "$(dirname "$0")/.."
results=${1:-${OUT:-device_check}}
mkdir -p "$results"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

python - <<'EOF' | tee "$results/environment.md" || exit 2
import datetime, platform, torch
if not torch.cuda.is_available():
    raise SystemExit('error: no CUDA device (torch.cuda.is_available() is False); this check needs one')
try:
    import triton
    triton_version = triton.__version__
except ImportError:
    triton_version = 'not installed'
print(f'- date: {datetime.date.today().isoformat()}')
print(f'- GPU: {torch.cuda.get_device_name()} ({torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB)')
print(f'- torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, '
      f'Triton {triton_version}, Python {platform.python_version()}')
EOF

status=0
step() {  # step SECONDS NAME COMMAND...: run with a time limit, output to the console and RESULTS_DIR/NAME.md
    local seconds=$1 name=$2
    shift 2
    echo
    echo "## $name"
    timeout "$seconds" "$@" 2>&1 | tee "$results/$name.md"
    local code=${PIPESTATUS[0]}
    if [ "$code" -eq 124 ]; then
        echo "(stopped after $seconds s; the rows above are complete)" | tee -a "$results/$name.md"
    fi
    [ "$code" -eq 0 ] || status=1
}

# the limits add up to 9 minutes
step 120 cuda-tests python -m pytest -q -p no:cacheprovider -m cuda tests
step 45 sizes-default python scripts/benchmark.py sizes --markdown
step 60 sizes-compiled python scripts/benchmark.py sizes --markdown --compile default --channels-last --tf32
step 135 speedup-inference python scripts/benchmark.py speedup --markdown --training --warmup 5 --runs 20
step 90 speedup-training python scripts/benchmark.py speedup --markdown --networks --warmup 3 --runs 10
step 90 compare python scripts/benchmark.py compare --markdown --warmup 5 --runs 20 --json "$results/compare.json"
exit "$status"
