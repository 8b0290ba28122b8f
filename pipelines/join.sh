#!/usr/bin/env bash
# join.sh ROLE [options] [-- STAGE ARGS...] -- run workers on another host for a train.sh run
# elsewhere: they only connect (docs/pipeline.md), so all they need are the main host's endpoints
# (start train.sh there with --tcp HOST:BASEPORT --allow-remote --remote-augmenters and/or
# --remote-evaluator; its ports are BASE+0 volumes, +1 cases, +2 patches, +3 evaljobs,
# +4 metrics, +5 exporter).
#   join.sh augmenters --main HOST:BASEPORT [--count N] --patch D,H,W --batch B [--seed S]
#   join.sh evaluator  --main HOST:BASEPORT [--dataset DIR] [--window D,H,W] [--device D]
# --patch and --batch must be the trainer's: the loader of a train.sh run says which with its
# volumes, and augmenters cutting another size stop at the first one (status 78, the run's named).
# Endpoints can also be given one by one (--volumes --patches --jobs --cases --exporter
# --metrics). Arguments after -- go to every stage started (e.g. CURVE keys: --curve-client KEY
# --server-key KEY). Dead workers are restarted (up to --restarts times; not one that exits 78,
# a configuration error); join.sh ends when none is left: status 0 when every worker ended
# cleanly (e.g. an evaluator with -- --exit-after-final), 1 when one was given up. Ctrl-C stops
# them all. Logs: --logs DIR; the console shows the workers' errors and warnings as they come.
{   # (the whole script is read before it runs: a git pull during a long run cannot change the running copy)
set -uo pipefail
SRM_SCRIPT=join
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() { sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
(($#)) || { usage >&2; exit 2; }
ROLE=$1; shift
case $ROLE in augmenters|evaluator) ;; -h|--help) usage; exit 0 ;; *) usage >&2; srm_die "unknown role '$ROLE'" ;; esac

MAIN="" COUNT=$(( $(srm_cores) > 1 ? $(srm_cores) - 1 : 1 )) PATCH="" BATCH="" SEED=$((RANDOM + 100000))
DATASET="" WINDOW="" DEVICE=auto RESTARTS=1000 SRM_LOGS=join-logs
V="" P="" J="" C="" E="" M="" EXTRA=()
while (($#)); do
    [[ $1 == -- ]] && { shift; EXTRA=("$@"); break; }
    (($# >= 2)) || srm_die "$1: missing value (see --help)"
    case $1 in
        --main) MAIN=$2 ;;        --count) COUNT=$2 ;;     --patch) PATCH=$2 ;;
        --batch) BATCH=$2 ;;      --seed) SEED=$2 ;;       --dataset) DATASET=$2 ;;
        --window) WINDOW=$2 ;;    --device) DEVICE=$2 ;;   --logs) SRM_LOGS=$2 ;;
        --restarts) RESTARTS=$2 ;;
        --volumes) V=$2 ;;  --patches) P=$2 ;;  --jobs) J=$2 ;;  --cases) C=$2 ;;
        --exporter) E=$2 ;; --metrics) M=$2 ;;
        *) srm_die "unknown option $1 (see --help)" ;;
    esac
    shift 2
done
if [[ -n $MAIN ]]; then
    srm_endpoints tcp "$MAIN"
    V=${V:-$EP_CONN_volumes}; C=${C:-$EP_CONN_cases}; P=${P:-$EP_CONN_patches}
    J=${J:-$EP_CONN_evaljobs}; M=${M:-$EP_CONN_metrics}; E=${E:-$EP_CONN_exporter}
fi
mkdir -p "$SRM_LOGS" || srm_die "cannot create $SRM_LOGS"
SRM_CONSOLE_WARN='augmenter-[0-9]+|evaluator'   # a joined worker's warnings are the main clue here
srm_console_init                # (lines of earlier joins in the same logs are not repeated)

trap 'srm_log "stopping"; srm_stop_all 10; exit 130' INT TERM
trap 'srm_stop_all 5' EXIT
if [[ $ROLE == augmenters ]]; then
    srm_need_bin augmenter
    [[ -n $V && -n $P ]] || srm_die "augmenters need --main or --volumes and --patches"
    [[ -n $PATCH && -n $BATCH ]] || srm_die "augmenters need --patch and --batch (the trainer's)"
    for ((i = 0; i < COUNT; i++)); do
        srm_start "augmenter-$i" "$SRM_BIN/srm-augmenter" --volumes "$V" --patches "$P" --patch "$PATCH" \
            --batch-size "$BATCH" --seed "$((SEED + i))" "${EXTRA[@]}"
    done
else
    srm_need_bin evaluator
    [[ -n $J && -n $C ]] || srm_die "the evaluator needs --main or --jobs and --cases"
    ev=("$SRM_BIN/srm-evaluator" --jobs "$J" --cases "$C" --device "$DEVICE")
    [[ -n $E ]] && ev+=(--exporter "$E")
    [[ -n $M ]] && ev+=(--metrics "$M")
    [[ -n $DATASET ]] && ev+=(--dataset "$DATASET")
    [[ -n $WINDOW ]] && ev+=(--window "$WINDOW")
    srm_start evaluator "${ev[@]}" "${EXTRA[@]}"
fi
srm_log "running; Ctrl-C to stop (logs in $SRM_LOGS)"
lost=0
while :; do
    for name in "${!SRM_PID[@]}"; do
        srm_supervise "$name" "$RESTARTS" || [[ ${SRM_LAST_RC[$name]:-0} == 0 ]] || lost=1
    done
    srm_console_tick                # the workers' errors and warnings (a wrong key, no loader...)
    if ((${#SRM_PID[@]} == 0)); then
        ((lost)) && { srm_log "no worker left: see the logs in $SRM_LOGS"; exit 1; }
        srm_log "every worker ended"; exit 0
    fi
    sleep 1
done
exit
}
