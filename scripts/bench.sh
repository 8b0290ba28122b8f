#!/usr/bin/env bash
# bench.sh [--data DATASET [--data-seconds S]] [srm-bench options] -- the GPU benchmark of issue 7
# (`make bench`): prints the card, the cuDNN version loaded and one table (training steps, peak
# memory, inference, scans, the trainer's data wait, per-kind breakdown, sliding window). Needs
# an NVIDIA GPU. With --data (or BENCH_DATA=DIR; `make bench` uses data-local/brats2013-6 when it
# exists) the data-wait row is measured first by scripts/data_wait.sh: the whole pipeline (loader
# + max(1, cores - 3) augmenters) feeding srm-trainer at 128³ batch 2 for S seconds (90), its
# steady-state median from the trainer's own counters; srm-bench then runs on the idle GPU and
# prints it in the table. The table goes to stdout; progress lines to stderr. BIN selects the
# binary folder (default bin).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${BIN:-bin}/srm-bench
[ -x "$bin" ] || { echo "bench.sh: $bin not built (make CUDA=1 $bin)" >&2; exit 1; }
data=${BENCH_DATA:-} secs=90 args=()
while (($#)); do
    case $1 in
        --data) data=${2:?--data needs a dataset folder}; shift 2 ;;
        --data-seconds) secs=${2:?}; shift 2 ;;
        *) args+=("$1"); shift ;;
    esac
done
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total \
  --format=csv,noheader >&2 || true
if [[ -n $data ]]; then
    echo "bench.sh: measuring the trainer's data wait on $data ($secs s, 128³ batch 2)" >&2
    dw=$(bash scripts/data_wait.sh "$data" --seconds "$secs" --batch 2 --patch 128) || {
        echo "bench.sh: scripts/data_wait.sh failed: the data-wait row stays unmeasured" >&2; dw=""; }
    printf '%s\n' "$dw" | grep -v '^DATA_WAIT_' >&2 || true
    pct=$(printf '%s\n' "$dw" | sed -n 's/^DATA_WAIT_PCT=//p')
    what=$(printf '%s\n' "$dw" | sed -n 's/^DATA_WAIT_WHAT=//p')
    [[ -n $pct ]] && args+=(--data-wait "$pct" --data-wait-what "$(basename "$data"), $what")
fi
echo "date: $(date -u +%Y-%m-%dT%H:%MZ)"
exec "$bin" "${args[@]}"
