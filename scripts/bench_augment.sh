#!/usr/bin/env bash
# bench_augment.sh -- patch throughput of the data pipeline: one srm-loader, N srm-augmenters
# (pipelines/stream-patches.sh) and one consumer (patch_sink, which decodes and checks every
# batch as the trainer would), for each N and each augmentation set.
#   scripts/bench_augment.sh [--data DIR] [--counts "1 2 4 8 15"] [--seconds S] [--warmup S]
#                            [--patch N] [--batch B] [--sets "basic nnunet"] [--split NAME]
# basic  = crop + flips + intensity scale/shift (the defaults); nnunet = basic + --nnunet.
# Prints one markdown table row per run: augmenters, set, total patches/s, patches/s per
# augmenter, the CPU used by the loader, the augmenters (mean per process) and the consumer over
# the measured window (percent of one core, from /proc/PID/stat), and the augmenters' CPU time
# per patch (1000 / that = patches/s of one augmenter given a whole core). Needs `make tools`.
# On the 16-core GPU host: scripts/bench_augment.sh --counts "1 2 4 8 15".
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
BUILD=${BUILD:-build}; BIN=${BIN:-bin}; export BIN
DATA=$ROOT/../shared/data/brats2013-6
[ -d "$DATA" ] || DATA=/work/shared/data/brats2013-6
COUNTS="1 2 4 8 15" SECONDS_=20 WARMUP=5 PATCH=128 BATCH=2 SETS="basic nnunet" SPLIT=all
while [ $# -gt 0 ]; do
  case $1 in
    --data) DATA=$2 ;; --counts) COUNTS=$2 ;; --seconds) SECONDS_=$2 ;; --warmup) WARMUP=$2 ;;
    --patch) PATCH=$2 ;; --batch) BATCH=$2 ;; --sets) SETS=$2 ;; --split) SPLIT=$2 ;;
    *) sed -n '2,12p' "$0"; exit 2 ;;
  esac
  shift 2
done
SINK=$BUILD/tools/patch_sink
[ -x "$SINK" ] || { echo "bench_augment: $SINK missing (make tools)" >&2; exit 2; }
T=$(mktemp -d "${TMPDIR:-/tmp}/srm-bench.XXXXXX")
SP= SK=
cleanup() {
  [ -n "$SP" ] && kill -TERM "$SP" 2>/dev/null && wait "$SP" 2>/dev/null
  [ -n "$SK" ] && kill -TERM "$SK" 2>/dev/null && wait "$SK" 2>/dev/null
  rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
HZ=$(getconf CLK_TCK)
# CPU ticks (user + system) of the given pids
ticks() { local s=0 p t; for p in "$@"; do t=$(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null); s=$((s + ${t:-0})); done; echo $s; }
batches() { grep -c '^batch' "$T/sink.out"; }

echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(uname -n), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "# data $DATA (--split $SPLIT), patch ${PATCH}^3, batch $BATCH, ${SECONDS_} s measured after the first batch + ${WARMUP} s"
echo "| augmenters | set | patches/s total | per augmenter | loader CPU % | augmenter CPU % (mean) | augmenter CPU ms/patch | consumer CPU % |"
echo "|---|---|---|---|---|---|---|---|"
for set in $SETS; do
  extra=(); [ "$set" = nnunet ] && extra=(--nnunet)
  for n in $COUNTS; do
    "$SINK" "ipc://$T/patches" --log-batches 1 > "$T/sink.out" 2> "$T/sink.err" & SK=$!
    bash pipelines/stream-patches.sh "$DATA" "ipc://$T/patches" "$n" --split "$SPLIT" --patch "$PATCH" \
      --batch-size "$BATCH" --cache "$T/cache" --stats-every 0 "${extra[@]}" 2> "$T/stream.err" & SP=$!
    for _ in $(seq 3000); do [ "$(batches)" -gt 0 ] && break; sleep 0.1; done    # cache built
    sleep "$WARMUP"
    L=$(pgrep -P "$SP" -x srm-loader); A=$(pgrep -P "$SP" -x srm-augmenter | tr '\n' ' ')
    t0=$(date +%s.%N); b0=$(batches); l0=$(ticks $L); a0=$(ticks $A); s0=$(ticks $SK)
    sleep "$SECONDS_"
    t1=$(date +%s.%N); b1=$(batches); l1=$(ticks $L); a1=$(ticks $A); s1=$(ticks $SK)
    awk -v n="$n" -v set="$set" -v b="$((b1 - b0))" -v B="$BATCH" -v t0="$t0" -v t1="$t1" -v hz="$HZ" \
        -v l="$((l1 - l0))" -v a="$((a1 - a0))" -v s="$((s1 - s0))" 'BEGIN { dt = t1 - t0; pps = b * B / dt;
      printf "| %d | %s | %.1f | %.1f | %.0f | %.0f | %.1f | %.0f |\n", n, set, pps, pps / n,
             100 * l / hz / dt, 100 * a / hz / dt / n, (pps > 0 ? 1000 * a / hz / (pps * dt) : 0), 100 * s / hz / dt }'
    kill -TERM "$SP" 2>/dev/null; wait "$SP" 2>/dev/null; SP=
    kill -TERM "$SK" 2>/dev/null; wait "$SK" 2>/dev/null; SK=
  done
done
