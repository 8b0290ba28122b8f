#!/usr/bin/env bash
# bench_augment.sh -- patch throughput of the data pipeline: one srm-loader, N srm-augmenters
# (pipelines/stream-patches.sh) and one consumer (patch_sink: receives and counts, no per-voxel
# work, several ZeroMQ I/O threads), for each N and each augmentation set; first the consumer's
# own ceiling (patch_blast: pre-built batches pushed as fast as ZeroMQ takes them).
#   scripts/bench_augment.sh [--data DIR] [--counts "1 2 4 8 15"] [--seconds S] [--warmup S]
#       [--patch N] [--batch B] [--sets "basic nnunet basic:f16"] [--split NAME]
#       [--transport ipc|tcp] [--ceiling "ipc:f32 tcp:f32 ipc:f16"] [--blast-connections K]
# A set is basic (crop + flips + intensity: the defaults) or nnunet (crop + flips + --nnunet), with an
# optional :DTYPE for the images on the wire (augmenter --image-dtype; f32 when absent).
# Prints markdown tables. Ceiling rows: messages, patches and GB/s one patch_sink takes from K
# connections. Pipeline rows: total patches/s and per augmenter, GB/s into the consumer, CPU of
# the loader, the augmenters (mean per process) and the consumer over the measured window
# (percent of one core, /proc/PID/stat), and the augmenters' CPU ms per patch.
# Needs $BIN/srm-loader, $BIN/srm-augmenter, $BUILD/tools/patch_sink and patch_blast (`make
# tools`), bash, awk; no python. The defaults take about 200 s on the 16-core GPU host:
#   BUILD=build-run-cpu BIN=build-run-cpu/bin scripts/bench_augment.sh --data data-local/brats2013-6
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
BUILD=${BUILD:-build}; BIN=${BIN:-bin}; export BIN
DATA=$ROOT/../shared/data/brats2013-6
[ -d "$DATA" ] || DATA=/work/shared/data/brats2013-6
COUNTS="1 2 4 8 15" SECONDS_=6 WARMUP=3 PATCH=128 BATCH=2 SETS="basic nnunet basic:f16" SPLIT=all
TRANSPORT=ipc CEILING="ipc:f32 tcp:f32 ipc:f16" BLASTK=8
while [ $# -gt 0 ]; do
  [ $# -ge 2 ] || { sed -n '2,18p' "$0"; exit 2; }
  case $1 in
    --data) DATA=$2 ;; --counts) COUNTS=$2 ;; --seconds) SECONDS_=$2 ;; --warmup) WARMUP=$2 ;;
    --patch) PATCH=$2 ;; --batch) BATCH=$2 ;; --sets) SETS=$2 ;; --split) SPLIT=$2 ;;
    --transport) TRANSPORT=$2 ;; --ceiling) CEILING=$2 ;; --blast-connections) BLASTK=$2 ;;
    *) sed -n '2,18p' "$0"; exit 2 ;;
  esac
  shift 2
done
SINK=$BUILD/tools/patch_sink BLAST=$BUILD/tools/patch_blast
for f in "$SINK" "$BLAST" "$BIN/srm-loader" "$BIN/srm-augmenter"; do
  [ -x "$f" ] || { echo "bench_augment: $f missing (make tools, with the same BUILD and BIN)" >&2; exit 2; }
done
[ -d "$DATA" ] || { echo "bench_augment: no dataset at $DATA (--data DIR)" >&2; exit 2; }
case $TRANSPORT in ipc|tcp) ;; *) echo "bench_augment: --transport ipc or tcp" >&2; exit 2 ;; esac
T=$(mktemp -d "${TMPDIR:-/tmp}/srm-bench.XXXXXX") || exit 1
SP= SK= BL=
stop() { [ -n "$1" ] && kill -TERM "$1" 2>/dev/null && wait "$1" 2>/dev/null; }
cleanup() { stop "$BL"; stop "$SP"; stop "$SK"; rm -rf "$T"; }
trap cleanup EXIT
trap 'exit 130' INT TERM
HZ=$(getconf CLK_TCK)
PORT=$(( 20000 + $$ % 20000 ))
endpoint() {          # a fresh patches endpoint of the given transport
  PORT=$((PORT + 1))
  if [ "$1" = tcp ]; then echo "tcp://127.0.0.1:$PORT"; else echo "ipc://$T/patches.$PORT"; fi
}
# CPU ticks (user + system, all threads) of the given pids
ticks() { local s=0 p t; for p in "$@"; do t=$(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null); s=$((s + ${t:-0})); done; echo $s; }
# children of pid $1 whose command name is $2 (no pgrep needed)
kids() { awk -v pp="$1" -v name="($2)" '$4 == pp && $2 == name {print $1}' /proc/[0-9]*/stat 2>/dev/null | tr '\n' ' '; }
# messages and bytes the sink has logged so far ("batch TIME SEED SEQ B BYTES" lines)
intake() { awk '$1 == "batch" {n++; b += $6} END {printf "%d %.0f\n", n, b}' "$T/sink.out"; }
wait_first() { for _ in $(seq "$1"); do [ "$(intake | cut -d' ' -f1)" -gt 0 ] && return 0; sleep 0.1; done; return 1; }
start_sink() {        # ENDPOINT PEERS
  "$SINK" "$1" --log-batches 1 --peers "$2" > "$T/sink.out" 2> "$T/sink.err" & SK=$!
}
# Sample intake and CPU of the pids over --seconds: sets M (messages), BY (bytes), DT and the
# global tick deltas D_<i> of each pid group given as "name:pids" arguments.
measure() {
  local t0 t1 i0 i1 g; local -a names=() pids=() c0=()
  for g in "$@"; do names+=("${g%%:*}"); pids+=("${g#*:}"); done
  t0=$(date +%s.%N); i0=$(intake)
  for i in "${!pids[@]}"; do c0[$i]=$(ticks ${pids[$i]}); done
  sleep "$SECONDS_"
  t1=$(date +%s.%N); i1=$(intake)
  for i in "${!pids[@]}"; do eval "D_${names[$i]}=$(( $(ticks ${pids[$i]}) - c0[$i] ))"; done
  M=$(( ${i1% *} - ${i0% *} )); BY=$(awk -v a="${i1#* }" -v b="${i0#* }" 'BEGIN {printf "%.0f", a - b}')
  DT=$(awk -v a="$t1" -v b="$t0" 'BEGIN {print a - b}')
}

echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(uname -n), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "# patch ${PATCH}^3, batch $BATCH; each row: ${SECONDS_} s measured after the first batch + ${WARMUP} s"

if [ -n "$CEILING" ]; then
  echo
  echo "Consumer ceiling: patch_blast ($BLASTK connections, pre-built 2-channel batches) -> one patch_sink"
  echo
  echo "| transport | image dtype | messages/s | patches/s | GB/s | consumer CPU % | consumer I/O threads |"
  echo "|---|---|---|---|---|---|---|"
  for c in $CEILING; do
    tr=${c%%:*} dt=${c#*:}
    ep=$(endpoint "$tr")
    start_sink "$ep" "$BLASTK"
    "$BLAST" "$ep" --connections "$BLASTK" --batch "$BATCH" --patch "$PATCH" --dtype "$dt" \
      --seconds $((SECONDS_ + WARMUP + 2)) > "$T/blast.out" 2> "$T/blast.err" & BL=$!
    if wait_first 100; then
      sleep "$WARMUP"
      measure "sink:$SK"
      awk -v m="$M" -v by="$BY" -v dt="$DT" -v B="$BATCH" -v s="$D_sink" -v hz="$HZ" -v tr="$tr" -v d="$dt" \
          -v io="$(sed -n 's/.* \([0-9]*\) ZeroMQ I\/O threads.*/\1/p' "$T/sink.err" | head -n 1)" 'BEGIN {
        printf "| %s | %s | %.1f | %.1f | %.2f | %.0f | %s |\n", tr, d, m / dt, m * B / dt, by / dt / 1e9, 100 * s / hz / dt, io }'
    else
      echo "| $tr | $dt | no message arrived: $(tail -n 1 "$T/blast.err" "$T/sink.err" | tr '\n' ' ') |||||"
    fi
    stop "$BL"; BL=
    stop "$SK"; SK=
  done
fi

echo
echo "Pipeline: data $DATA (--split $SPLIT), patches over $TRANSPORT"
echo
echo "| augmenters | set | image dtype | patches/s total | per augmenter | GB/s | loader CPU % | augmenter CPU % (mean) | augmenter CPU ms/patch | consumer CPU % |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for spec in $SETS; do
  set=${spec%%:*} dt=f32
  [ "$set" != "$spec" ] && dt=${spec#*:}
  extra=(--image-dtype "$dt"); [ "$set" = nnunet ] && extra+=(--nnunet)
  for n in $COUNTS; do
    ep=$(endpoint "$TRANSPORT")
    start_sink "$ep" "$n"
    bash pipelines/stream-patches.sh "$DATA" "$ep" "$n" --split "$SPLIT" --patch "$PATCH" \
      --batch-size "$BATCH" --cache "$T/cache" --stats-every 0 "${extra[@]}" 2> "$T/stream.err" & SP=$!
    if wait_first 3000; then                  # the first run also builds the case cache
      sleep "$WARMUP"
      L=$(kids "$SP" srm-loader); A=$(kids "$SP" srm-augmenter)
      measure "l:$L" "a:$A" "s:$SK"
      awk -v n="$n" -v set="$set" -v d="$dt" -v m="$M" -v B="$BATCH" -v by="$BY" -v dt="$DT" -v hz="$HZ" \
          -v l="$D_l" -v a="$D_a" -v s="$D_s" 'BEGIN { pps = m * B / dt;
        printf "| %d | %s | %s | %.1f | %.1f | %.2f | %.0f | %.0f | %.1f | %.0f |\n", n, set, d, pps, pps / n,
               by / dt / 1e9, 100 * l / hz / dt, 100 * a / hz / dt / n, (pps > 0 ? 1000 * a / hz / (pps * dt) : 0),
               100 * s / hz / dt }'
    else
      echo "| $n | $set | $dt | no batch arrived: $(tail -n 2 "$T/stream.err" | tr '\n' ' ') |||||||"
    fi
    stop "$SP"; SP=
    stop "$SK"; SK=
  done
done
