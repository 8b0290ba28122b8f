# recipe.sh -- what the real-data recipes (brats.sh, btcv.sh) share (sourced after lib.sh, not
# run): their command line, the dataset view, running train.sh so that Ctrl-C or SIGTERM still
# ends in a final checkpoint and a report, and srm-report.
#
#   recipe_begin "$@"      DATA_DIR RUN_DIR [--minutes M] [--seed S] [--step-ms MS] [--steps N]
#                          [--device D] [other train.sh options]; sets DATA, RUN, VIEW, SEED,
#                          DEVICE, LEN_ARGS (--max-minutes M, or --steps N), VAL_EVERY (about 16
#                          evaluations per run), CKPT_EVERY (about 4 checkpoints), EXTRA (the rest)
#   recipe_view            RUN/dataset: imagesTr/labelsTr linked to DATA's, and a dataset.json
#                          made by the python program on stdin (argv: source json, view json)
#   recipe_train CMD...    runs CMD (train.sh ...) in the background, forwards TERM/INT as one
#                          TERM, waits; sets TRAIN_RC
#   recipe_report CMD...   runs CMD (srm-report ...) into RUN/report.md; exits with the first
#                          failure of the training or the report
# The caller sets RECIPE_STEP_MS (the step time that sizes the intervals) before recipe_begin.

recipe_usage() { sed -n '2,/^{   #/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

recipe_begin() {
    [[ ${1:-} == -h || ${1:-} == --help ]] && { recipe_usage; exit 0; }
    (($# >= 2)) || { recipe_usage >&2; exit 2; }
    DATA=$(cd "$1" 2>/dev/null && pwd) || srm_die "dataset folder '$1' not found"
    mkdir -p "$2" || srm_die "cannot create run folder '$2'"
    RUN=$(cd "$2" && pwd)
    shift 2
    local resume=0 a held
    for a in "$@"; do [[ $a == --resume ]] && resume=1; done
    # a folder holding a run: refused before its time zero is overwritten (train.sh would refuse it)
    ((resume)) || ! held=$(srm_run_held "$RUN") || srm_die "$RUN holds a run ($held): --resume continues it; a new run needs a folder of its own"
    # time zero of the time-to-Dice table: before anything is loaded (a resume keeps the first's)
    [[ $resume == 1 && -s $RUN/started_at ]] || date +%s.%N >"$RUN/started_at" || srm_die "cannot write $RUN/started_at"
    local minutes=8 step_ms=${RECIPE_STEP_MS:?} steps=""
    SEED=0 DEVICE=gpu EXTRA=()
    while (($#)); do
        case $1 in
            --minutes) minutes=${2:?--minutes needs a value}; shift 2 ;;
            --seed) SEED=${2:?--seed needs a value}; shift 2 ;;
            --step-ms) step_ms=${2:?--step-ms needs a value}; shift 2 ;;
            --steps) steps=${2:?--steps needs a value}; shift 2 ;;
            --device) DEVICE=${2:?--device needs a value}; shift 2 ;;
            *) EXTRA+=("$1"); shift ;;
        esac
    done
    [[ $minutes =~ ^[0-9]+([.][0-9]+)?$ && $step_ms =~ ^[0-9]+([.][0-9]+)?$ && $SEED =~ ^[0-9]+$ ]] ||
        srm_die "--minutes, --step-ms and --seed take numbers"
    LEN_ARGS=(--steps "$steps")
    if [[ -z $steps ]]; then
        steps=$(awk -v m="$minutes" -v s="$step_ms" 'BEGIN { n = int(m * 60000 / s); print n < 1 ? 1 : n }')
        LEN_ARGS=(--max-minutes "$minutes")
        srm_log "budget: $minutes min of training (--max-minutes); about $steps steps at $step_ms ms per step"
    fi
    [[ $steps =~ ^[0-9]+$ && $steps -ge 1 ]] || srm_die "--steps: '$steps' is not a positive integer"
    VAL_EVERY=$(( steps / 16 )); ((VAL_EVERY < 1)) && VAL_EVERY=1
    CKPT_EVERY=$(( steps / 4 )); ((CKPT_EVERY < 1)) && CKPT_EVERY=1    # ~1 GB each at width 48
    VIEW=$RUN/dataset
}

recipe_view() {
    mkdir -p "$VIEW" || srm_die "cannot create $VIEW"
    local sub
    for sub in imagesTr labelsTr; do
        [[ -d $DATA/$sub ]] || srm_die "$DATA/$sub: not found"
        ln -sfn "$DATA/$sub" "$VIEW/$sub" || srm_die "cannot link $VIEW/$sub"
    done
    $SRM_PY - "$DATA/dataset.json" "$VIEW/dataset.json" || srm_die "$DATA/dataset.json: cannot make the view's split"
}

recipe_train() {
    printf '+'; printf ' %q' "$@"; printf '\n'
    # train.sh runs in the background (where bash ignores SIGINT for it), and this script passes
    # SIGTERM or Ctrl-C on as one SIGTERM: train.sh then writes a final checkpoint and stops every
    # stage, and this script waits for that before it reports.
    "$@" &
    local pid=$!
    trap 'kill -TERM "'"$pid"'" 2>/dev/null' TERM INT
    TRAIN_RC=0
    while kill -0 "$pid" 2>/dev/null; do wait "$pid"; TRAIN_RC=$?; done
    trap - TERM INT
    ((TRAIN_RC == 0)) || srm_log "train.sh ended with status $TRAIN_RC; reporting what was recorded"
}

recipe_report() {
    printf '+'; printf ' %q' "$@"; printf '\n'
    "$@" | tee "$RUN/report.md"
    local rrc=${PIPESTATUS[0]}
    ((TRAIN_RC == 0)) || exit "$TRAIN_RC"
    exit "$rrc"
}
