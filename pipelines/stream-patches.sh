#!/usr/bin/env bash
# stream-patches.sh -- one srm-loader and N srm-augmenters whose patch batches go to ENDPOINT,
# where the consumer (the trainer, a benchmark, a Python client) has bound a PULL socket.
#   pipelines/stream-patches.sh DATASET ENDPOINT [N_AUGMENTERS] [options]
# Options for the loader (--split --fold --fold-part --val-split --cache --spacing --norm
# --classes --epochs --cases --allow-remote --curve-server --authorized, and --loader-hwm N for
# its --hwm) go to the loader, --seed to both, everything else (--curve-client --server-key
# included) to every augmenter (see srm-augmenter --help).
# Sockets live in a temporary directory (or $SRM_RUN_DIR when set, so more augmenters can join:
# they connect to ipc://$SRM_RUN_DIR/volumes). Binaries come from $BIN (default bin/).
# Augmenters run with OMP_NUM_THREADS=1 (many processes is the design). Every process started
# here runs in its own process group and is stopped (TERM, then KILL after 5 s) when this script
# exits or is stopped; the script exits when the loader dies.
{   # (the whole script is read before it runs: a git pull during a long run cannot change the running copy)
set -u
usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; }
[ "${1:-}" = --help ] && { usage; exit 0; }
[ $# -ge 2 ] || { usage >&2; exit 2; }
DATASET=$1 ENDPOINT=$2
shift 2
N=1
if [ $# -gt 0 ] && [[ $1 =~ ^[0-9]+$ ]]; then N=$1; shift; fi
[ "$N" -ge 1 ] || { echo "stream-patches: N_AUGMENTERS must be >= 1" >&2; exit 2; }

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-bin}
case $BIN in /*) ;; *) BIN=$ROOT/$BIN ;; esac
for b in srm-loader srm-augmenter; do
  [ -x "$BIN/$b" ] || { echo "stream-patches: $BIN/$b not found (run make, or set BIN)" >&2; exit 2; }
done

loader_args=() aug_args=()
while [ $# -gt 0 ]; do
  case $1 in
    --allow-remote) loader_args+=("$1"); shift ;;
    --split|--fold|--fold-part|--val-split|--cache|--spacing|--norm|--classes|--epochs|--cases|--curve-server|--authorized)
      [ $# -ge 2 ] || { echo "stream-patches: $1 needs a value" >&2; exit 2; }
      loader_args+=("$1" "$2"); shift 2 ;;
    --loader-hwm) loader_args+=(--hwm "$2"); shift 2 ;;
    --seed) loader_args+=("$1" "$2"); aug_args+=("$1" "$2"); shift 2 ;;
    *) aug_args+=("$1"); shift ;;
  esac
done

if [ -n "${SRM_RUN_DIR:-}" ]; then RUN=$SRM_RUN_DIR; OWN_RUN=0; mkdir -p "$RUN" || exit 1
else RUN=$(mktemp -d "${TMPDIR:-/tmp}/srm-stream.XXXXXX") || exit 1; OWN_RUN=1; fi
VOLUMES=ipc://$RUN/volumes

pids=()
cleanup() {
  trap - INT TERM EXIT
  local p alive
  for p in "${pids[@]}"; do kill -TERM -- "-$p" 2>/dev/null; done
  for _ in $(seq 50); do
    alive=0
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.1
  done
  for p in "${pids[@]}"; do kill -KILL -- "-$p" 2>/dev/null; done
  wait 2>/dev/null
  if [ $OWN_RUN = 1 ]; then rm -rf "$RUN"; else rm -f "$RUN/volumes"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

set -m                              # each background job gets its own process group
"$BIN/srm-loader" --dataset "$DATASET" --volumes "$VOLUMES" "${loader_args[@]}" &
LOADER=$!
pids+=("$LOADER")
for i in $(seq "$N"); do
  OMP_NUM_THREADS=1 "$BIN/srm-augmenter" --volumes "$VOLUMES" --patches "$ENDPOINT" "${aug_args[@]}" &
  pids+=("$!")
done
set +m
echo "stream-patches: loader $LOADER, $N augmenter(s), volumes $VOLUMES, patches $ENDPOINT" >&2

while :; do
  wait -n -p done_pid 2>/dev/null; rc=$?
  if [ "${done_pid:-}" = "$LOADER" ] || ! kill -0 "$LOADER" 2>/dev/null; then
    echo "stream-patches: the loader exited (status $rc); stopping" >&2
    exit "$rc"
  fi
  [ -n "${done_pid:-}" ] && echo "stream-patches: augmenter $done_pid exited (status $rc)" >&2
  done_pid=
done
exit
}
