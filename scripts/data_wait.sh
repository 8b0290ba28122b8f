#!/usr/bin/env bash
# data_wait.sh DATASET [--seconds S] [--batch B] [--patch P] [--augmenters N] [--out DIR] [-- TRAIN.SH ARGS]
# The data-wait row of issue 7's table: how much of its time srm-trainer spends waiting for patch
# batches in steady state, with the whole pipeline (loader + N augmenters, default
# max(1, cores - 3)) feeding variant M, width 48, bf16, P^3 patches (default 128), batch B
# (default 2). Trains for S seconds (default 90) through pipelines/train.sh with no validation
# and no checkpoints in between, then reads the trainer's own counters in RUN/metrics.jsonl
# (`data_wait`: the fraction of wall time of the last report interval spent blocked on the
# patches socket) and prints, over the reports after the first third of the run (warm-up: cuDNN
# plans, CUDA graph capture, the loader's first pass), the median and mean data wait, the
# median patches/s, one markdown row, and DATA_WAIT_PCT= / DATA_WAIT_WHAT= lines for bench.sh.
# Needs a GPU build in BIN (default bin); arguments after -- go to train.sh last (e.g.
# -- --device cpu --preset tiny --width 8 for a CPU smoke test).
# Exit status 0 when the run produced at least 5 steady-state reports.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DATA=${1:?usage: data_wait.sh DATASET [--seconds S] [--batch B] [--patch P] [--augmenters N] [--out DIR]}
shift
SECONDS_RUN=90 BATCH=2 PATCH=128 AUG=() OUTDIR="" EXTRA=()
while (($#)); do
    case $1 in
        --seconds) SECONDS_RUN=${2:?}; shift 2 ;;
        --batch) BATCH=${2:?}; shift 2 ;;
        --patch) PATCH=${2:?}; shift 2 ;;
        --augmenters) AUG=(--augmenters "${2:?}"); shift 2 ;;
        --out) OUTDIR=${2:?}; shift 2 ;;
        --) shift; EXTRA=("$@"); break ;;
        *) echo "data_wait.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
RUN=${OUTDIR:-$(mktemp -d /tmp/srm-data-wait.XXXXXX)}
mkdir -p "$RUN" || exit 1
MIN=$(awk -v s="$SECONDS_RUN" 'BEGIN { printf "%.3f", s / 60 }')
bash "$ROOT/pipelines/train.sh" "$DATA" "$RUN" --model M --width 48 --patch "$PATCH,$PATCH,$PATCH" \
    --batch "$BATCH" --max-minutes "$MIN" --steps 1000000 --val-every 0 --ckpt-every 1000000 \
    --no-evaluator --device gpu "${AUG[@]}" "${EXTRA[@]}" >"$RUN/train.out" 2>&1
rc=$?
((rc == 0)) || { echo "data_wait.sh: train.sh ended with status $rc (log: $RUN/train.out, $RUN/logs/)" >&2; tail -n 20 "$RUN/train.out" >&2; }
NAUG=$(ls "$RUN"/logs/augmenter*.log 2>/dev/null | wc -l)
# trainer reports: {"step":..,"source":"trainer",..,"patches_per_s":..,"data_wait":..}
grep '"source":"trainer"' "$RUN/metrics.jsonl" 2>/dev/null | grep '"data_wait"' |
    sed -E 's/.*"step":([0-9]+).*"patches_per_s":([-0-9.e]+).*"data_wait":([-0-9.e]+).*/\1 \2 \3/' |
    awk -v p="$PATCH" -v b="$BATCH" -v n="$NAUG" '
    { step[NR] = $1; pps[NR] = $2; dw[NR] = $3 }
    function median(a, lo, hi,   m, i, j, t, v) {
        m = 0; for (i = lo; i <= hi; i++) v[++m] = a[i]
        for (i = 2; i <= m; i++) { t = v[i]; for (j = i - 1; j >= 1 && v[j] > t; j--) v[j + 1] = v[j]; v[j + 1] = t }
        return m % 2 ? v[(m + 1) / 2] : (v[m / 2] + v[m / 2 + 1]) / 2
    }
    END {
        lo = int(NR / 3) + 1
        if (NR - lo + 1 < 5) { print "data_wait.sh: only " NR " trainer reports: too short a run" > "/dev/stderr"; exit 1 }
        s = 0; for (i = lo; i <= NR; i++) s += dw[i]
        printf "steady state: steps %d..%d (%d reports), %d augmenter(s)\n", step[lo], step[NR], NR - lo + 1, n
        printf "data wait: median %.1f %%, mean %.1f %%; patches/s median %.2f\n", 100 * median(dw, lo, NR), 100 * s / (NR - lo + 1), median(pps, lo, NR)
        printf "| trainer'\''s data wait, %d³ batch %d, %d augmenters | — | ≤ 5 %% | %.1f %% (median; mean %.1f %%) |\n", p, b, n, 100 * median(dw, lo, NR), 100 * s / (NR - lo + 1)
        printf "DATA_WAIT_PCT=%.2f\n", 100 * median(dw, lo, NR)
        printf "DATA_WAIT_WHAT=%d augmenters, median of %d reports after warm-up (mean %.1f %%), %.2f patches/s\n", n, NR - lo + 1, 100 * s / (NR - lo + 1), median(pps, lo, NR)
    }'
