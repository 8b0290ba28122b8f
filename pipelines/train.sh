#!/usr/bin/env bash
# train.sh DATASET RUN_DIR [options] -- the main job: trains SegResMamba on a NIfTI dataset.
# Starts srm-exporter, srm-loader (train split; validation cases on its cases socket), N
# srm-augmenter, srm-trainer and srm-evaluator on ipc endpoints under RUN_DIR/sock (or TCP with
# --tcp), supervises them (a stage that dies is restarted; the trainer with --resume), waits for
# the trainer to finish, lets the evaluator finish the final validation and write the
# predictions, then stops everything. Ctrl-C / SIGTERM: the trainer writes a final checkpoint
# and waits for its ack, then the rest stop; no process is left behind. Logs: RUN_DIR/logs/.
# Results (by srm-exporter): RUN_DIR/checkpoints/, metrics.jsonl, curves.png, predictions/.
{   # (the whole script is read before it runs: a git pull during a long run cannot change the running copy)
set -uo pipefail
SRM_SCRIPT=train
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    cat <<EOF
usage: pipelines/train.sh DATASET RUN_DIR [options]
model:     --preset tiny|demo|full  --width W  --model M|P|R|no-tom
           --classes K  --in-channels C   (default: from DATASET, as srm-inspect --shape reads them)
training:  --patch D,H,W (96,96,96)  --batch B (2)  --steps N (1000)  --lr F (1e-4)
           --max-minutes M (train for M minutes from the trainer's start, the cosine schedule
           fitted to that budget; --steps then only caps it; final checkpoint + validation follow)
           --loss dice|dice-ce|sigmoid-dice  --regions "WT=1,2,3,4;TC=1,3,4;ET=4"
           --val-every N (0: only the final validation; validated steps are also checkpointed,
           so best.* can point at them)  --ckpt-every N (100)  --seed S (0)
           --fold K|all (validate on fold K of the 5-fold split, or of splits_final.json's; past
           its folds, nnU-Net's seeded random 80:20 split; all: train and validate on every case,
           as nnU-Net's fold all; default: the dataset's validation split, else fold 0 when an
           evaluator runs)
           --device auto|cpu|gpu  --resume (continue RUN_DIR from its latest checkpoint)
data:      --augmenters N (max(1, cores-3))  --spacing X,Y,Z|auto|none (auto: the target
           spacing nnU-Net would plan for the training cases, srm-inspect --spacing; default
           none, the cases' own)  --cache DIR
           --norm ct:LO,HI|ct-z:MEAN,STD[,LO,HI]|ct-nnunet|mr-fg|mr-all (ct-nnunet: nnU-Net's
           CT normalisation with the dataset's foreground statistics, srm-inspect --intensities)
           --samples-per-volume N (4)
eval:      --window D,H,W (the patch)  --overlap F (0.5)  --no-evaluator
placement: --tcp HOST:BASEPORT (ports BASE..BASE+5 for volumes cases patches evaljobs metrics
           exporter; a HOST other than loopback needs --allow-remote), --allow-remote,
           --ep-NAME ENDPOINT (one socket elsewhere, e.g. --ep-evaljobs tcp://10.0.0.2:6003),
           --remote-augmenters / --remote-evaluator (start none here: pipelines/join.sh does,
           on the other host)
per stage: --trainer-args "..." --loader-args "..." --augmenter-args "..." --evaluator-args "..."
           --exporter-args "..."   (appended to that stage's command line)
other:     --restarts N (5: restarts allowed per stage)  --final-timeout S (900)
EOF
}

[[ ${1:-} == -h || ${1:-} == --help ]] && { usage; exit 0; }
(($# >= 2)) || { usage >&2; exit 2; }
DATASET=$(cd "$1" 2>/dev/null && pwd) || srm_die "dataset folder '$1' not found"
mkdir -p "$2" || srm_die "cannot create run folder '$2'"
RUN=$(cd "$2" && pwd)
shift 2

PRESET="" WIDTH="" MODEL="" CLASSES="" INCH="" PATCH=96,96,96 BATCH=2 STEPS="" MAX_MIN="" LR="" LOSS="" REGIONS=""
FOLD="" VAL_EVERY=0 CKPT_EVERY=100 SEED=0 DEVICE=auto RESUME=0 NAUG="" SPACING="" NORM="" CACHE="" SPV=""
WINDOW="" OVERLAP=0.5 EVALUATOR=1 TCP="" ALLOW_REMOTE=0 REMOTE_AUG=0 REMOTE_EVAL=0
TRAINER_ARGS="" LOADER_ARGS="" AUG_ARGS="" EVAL_ARGS="" EXPORTER_ARGS="" RESTARTS=5 FINAL_TIMEOUT=900
declare -A EP_OVERRIDE=()
while (($#)); do
    opt=$1
    case $opt in
        --no-evaluator) EVALUATOR=0; shift; continue ;;
        --resume) RESUME=1; shift; continue ;;
        --allow-remote) ALLOW_REMOTE=1; shift; continue ;;
        --remote-augmenters) REMOTE_AUG=1; shift; continue ;;
        --remote-evaluator) REMOTE_EVAL=1; shift; continue ;;
        -h|--help) usage; exit 0 ;;
    esac
    (($# >= 2)) || srm_die "$opt: missing value (or unknown option; see --help)"
    val=$2; shift 2
    case $opt in
        --preset) PRESET=$val ;;            --width) WIDTH=$val ;;
        --model) MODEL=$val ;;              --classes) CLASSES=$val ;;
        --in-channels) INCH=$val ;;         --patch) PATCH=$val ;;
        --batch) BATCH=$val ;;              --steps) STEPS=$val ;;
        --max-minutes) MAX_MIN=$val ;;
        --lr) LR=$val ;;                    --loss) LOSS=$val ;;
        --regions) REGIONS=$val ;;          --val-every) VAL_EVERY=$val ;;
        --ckpt-every) CKPT_EVERY=$val ;;    --seed) SEED=$val ;;
        --device) DEVICE=$val ;;            --augmenters) NAUG=$val ;;
        --spacing) SPACING=$val ;;          --norm) NORM=$val ;;
        --cache) CACHE=$val ;;              --samples-per-volume) SPV=$val ;;
        --window) WINDOW=$val ;;            --overlap) OVERLAP=$val ;;
        --tcp) TCP=$val ;;                  --restarts) RESTARTS=$val ;;
        --final-timeout) FINAL_TIMEOUT=$val ;; --fold) FOLD=$val ;;
        --trainer-args) TRAINER_ARGS=$val ;;    --loader-args) LOADER_ARGS=$val ;;
        --augmenter-args) AUG_ARGS=$val ;;      --evaluator-args) EVAL_ARGS=$val ;;
        --exporter-args) EXPORTER_ARGS=$val ;;
        --ep-*) name=${opt#--ep-}
                [[ " ${SRM_SOCKETS[*]} " == *" $name "* ]] || srm_die "$opt: no socket '$name' (${SRM_SOCKETS[*]})"
                EP_OVERRIDE[$name]=$val ;;
        *) srm_die "unknown option $opt (see --help)" ;;
    esac
done
[[ $PATCH =~ ^[0-9]+$ ]] && PATCH=$PATCH,$PATCH,$PATCH
[[ $PATCH =~ ^[0-9]+,[0-9]+,[0-9]+$ ]] || srm_die "--patch: '$PATCH' is not D,H,W"
[[ -n $STEPS || -n $MAX_MIN ]] || STEPS=1000
[[ -z $STEPS || $STEPS =~ ^[0-9]+$ ]] && [[ $BATCH =~ ^[0-9]+$ ]] || srm_die "--steps and --batch take integers"
[[ -z $MAX_MIN || $MAX_MIN =~ ^[0-9]*[.]?[0-9]+$ ]] || srm_die "--max-minutes: '$MAX_MIN' is not a number"
# A remote evaluator runs with join.sh's settings; the job carries only the patch (its window).
((REMOTE_EVAL)) && [[ -n $WINDOW || $OVERLAP != 0.5 || -n $EVAL_ARGS ]] &&
    srm_log "WARNING: --window, --overlap and --evaluator-args are for a local evaluator: give them to join.sh evaluator on the other host"
# (the augmenters get (SEED + a resumed step) * 1000 + i: 15 digits keep that inside 2^63)
[[ $SEED =~ ^[0-9]{1,15}$ ]] || srm_die "--seed: '$SEED' is not a non-negative integer of at most 15 digits"
srm_need_bin exporter loader augmenter trainer inspect
((EVALUATOR)) && srm_need_bin evaluator

# Classes and channels from the dataset when not given, and its validation cases: srm-inspect
# --shape reads them as the loader does (declared labels' largest value + 1, nnU-Net regions
# included; without dataset.json the label files' largest value + 1 and the channel files).
shape=$("$SRM_BIN/srm-inspect" --dataset "$DATASET" --shape 2>&1) || srm_die "$shape"
read -r dc dk from nval nfolds folds_from f0t f0v ign gaps < <($SRM_PY -c 'import json, sys; o = json.loads(sys.argv[1]); print(o["channels"], o["classes"], o["classes_from"].replace(" ", "_"), o["validation"], o["folds"], o["folds_from"].replace(" ", "_"), o["fold0_train"], o["fold0_val"], "-" if o["ignore"] is None else o["ignore"], ",".join(map(str, o["undeclared"])) or "-")' "$shape") ||
    srm_die "srm-inspect --shape: unexpected answer '$shape'"
fold0_error=$($SRM_PY -c 'import json, sys; print(json.loads(sys.argv[1])["fold0_error"] or "")' "$shape")
ds_regions=$($SRM_PY -c 'import json, sys; print(json.loads(sys.argv[1])["regions"] or "")' "$shape")
# dataset.json declaring nnU-Net regions (a label that is a list of values) means region-based
# training, as nnU-Net does it: one sigmoid output a region, the sigmoid Dice loss, and each
# region written as its regions_class_order label -- unless the command line says otherwise
# (the choice is kept in RUN/regions.auto: a resume trains as its first run did)
# TRAINED: a resume of a run that holds checkpoints or metrics; only such a run's first choices
# (regions, preprocessing, cases) bind it -- one that never trained may choose again.
TRAINED=0
((RESUME)) && srm_run_held "$RUN" >/dev/null && TRAINED=1
AUTO_REGIONS=""
if ((RESUME)) && [[ -z $REGIONS && -s $RUN/regions.auto ]]; then
    REGIONS=$(<"$RUN/regions.auto") LOSS=sigmoid-dice
    srm_log "resuming with the first run's regions from $DATASET: --loss sigmoid-dice --regions \"$REGIONS\""
elif [[ -n $ds_regions && -z $REGIONS ]]; then
    if ((TRAINED)); then
        srm_log "WARNING: $DATASET declares nnU-Net regions, but $RUN began training classes (before regions were taken from dataset.json): resuming so"
    elif [[ -z $CLASSES && ( -z $LOSS || $LOSS == sigmoid-dice ) ]]; then
        REGIONS=$ds_regions LOSS=sigmoid-dice AUTO_REGIONS=$ds_regions
        srm_log "$DATASET declares nnU-Net regions: region-based training, --loss sigmoid-dice --regions \"$REGIONS\""
    else
        srm_log "WARNING: $DATASET declares nnU-Net regions ($ds_regions), but --classes / --loss ask for classes: training classes"
    fi
fi
[[ $gaps == - || -n $CLASSES || -n $REGIONS ]] ||
    srm_log "WARNING: label value(s) $gaps of 0..$((dk - 1)) declared by no label of $DATASET: the model gets an output for each, which no voxel trains, and a case whose label file holds one is skipped (nnU-Net wants consecutive labels)"
[[ $ign == - ]] || srm_log "label $ign is nnU-Net's \"ignore\": those voxels are left out of the loss, the crops' centres and the scores"
if [[ -n $REGIONS ]]; then
    # label values of the dataset in no region: background for every region, in training and in
    # scoring alike (nnU-Net's rule) -- said, since a forgotten one is a quiet mistake
    outside=$($SRM_PY -c '
import sys
held = set()
for part in sys.argv[1].split(";"):
    vals = part.split("=", 1)[-1].split(":")[0]
    held.update(int(v) for v in vals.split(",") if v.strip().isdigit())
print(",".join(str(v) for v in range(1, int(sys.argv[2])) if v not in held))' "$REGIONS" "$dk" 2>/dev/null)
    [[ -z $outside ]] || srm_log "WARNING: label value(s) $outside of $DATASET are in no region of --regions: background for every region, in training and in the scores"
fi
if [[ -z $CLASSES && -n $REGIONS ]]; then
    IFS=';' read -ra _parts <<<"$REGIONS"
    srm_log "label values 0..$((dk - 1)) (${from//_/ } of $DATASET), $dc channel(s); the model has ${#_parts[@]} sigmoid outputs, one a region of --regions"
elif [[ -z $CLASSES ]]; then
    srm_log "$dk classes (${from//_/ } of $DATASET), $dc channel(s)"
fi
CLASSES=${CLASSES:-$dk}; INCH=${INCH:-$dc}
# A resumed run keeps the preprocessing its first run trained with (RUN/prep.args): another
# --spacing or --norm now would train the rest of the run on other inputs (and predict.sh would
# apply the last one to weights trained mostly on the first). A run that never trained is free.
NORM_RESOLVED="" SPACING_RESOLVED=""
if ((TRAINED)) && [[ -s $RUN/prep.args ]]; then
    first_sp=$(sed -n 's/^spacing=//p' "$RUN/prep.args") first_norm=$(sed -n 's/^norm=//p' "$RUN/prep.args")
    [[ -z $SPACING || $SPACING == "$first_sp" ]] ||
        srm_die "$RUN trained with --spacing ${first_sp:-(none given)}: resume without --spacing, or with the same"
    [[ -z $NORM || $NORM == "$first_norm" ]] ||
        srm_die "$RUN trained with --norm ${first_norm:-(none given)}: resume without --norm, or with the same"
    SPACING=$first_sp NORM=$first_norm NORM_RESOLVED=$(sed -n 's/^norm_resolved=//p' "$RUN/prep.args")
    SPACING_RESOLVED=$(sed -n 's/^spacing_resolved=//p' "$RUN/prep.args")
    srm_log "resuming with the first run's preprocessing: --spacing ${SPACING:-(default)} --norm ${NORM:-(default)}"
fi
NORM_GIVEN=$NORM SPACING_GIVEN=$SPACING
# --spacing auto: the target spacing nnU-Net plans for the training cases (median spacing, the
# 10th percentile on a thick-slice axis: srm-inspect --spacing); a resume keeps the first run's.
if [[ $SPACING == auto && -n $SPACING_RESOLVED ]]; then
    SPACING=$SPACING_RESOLVED
elif [[ $SPACING == auto ]]; then
    plan=$("$SRM_BIN/srm-inspect" --dataset "$DATASET" --spacing) || srm_die "--spacing auto: no spacing plan of $DATASET"
    plan=$($SRM_PY -c 'import json, sys; o = json.loads(sys.argv[1])
print(o["spacing_arg"], o["cases"], o["thick_slice_axis"], ",".join("%g" % v for v in o["median_spacing"]))' "$plan") ||
        srm_die "srm-inspect --spacing: unexpected answer '$plan'"
    read -r SPACING n_plan thick_plan med_plan <<<"$plan"
    srm_log "--spacing auto: $SPACING (nnU-Net's plan over $n_plan training cases: median spacing $med_plan$( ((thick_plan < 0)) || echo ", thick-slice axis $thick_plan at its 10th percentile"))"
fi
# --norm ct-nnunet: nnU-Net's CT normalisation (clip to the foreground's 0.5 / 99.5 percentiles,
# z-score with its mean and std) from the dataset's intensity fingerprint; the same figures on
# every run of the same cases, and the checkpoints carry them for predict.sh (a resume takes the
# first run's figures).
if [[ $NORM == ct-nnunet && -n $NORM_RESOLVED ]]; then
    NORM=$NORM_RESOLVED
elif [[ $NORM == ct-nnunet ]]; then
    fp=$("$SRM_BIN/srm-inspect" --dataset "$DATASET" --intensities) || srm_die "--norm ct-nnunet: no intensity fingerprint of $DATASET"
    NORM=$($SRM_PY -c 'import json, sys; o = json.loads(sys.argv[1]); print(o["ct_norm"] or "-" + o["ct_norm_why_not"])' "$fp") ||
        srm_die "srm-inspect --intensities: unexpected answer '$fp'"
    [[ $NORM == -* ]] && srm_die "--norm ct-nnunet: not for $DATASET: ${NORM#-}"
    srm_log "--norm ct-nnunet: $NORM (foreground mean, std, 0.5 and 99.5 percentiles of the training cases)"
fi
# Validation cases: the dataset's declared validation split; else, as nnU-Net, fold 0 of its
# 5-fold split (splits_final.json, MSD fold keys, or generated), when an evaluator will use them.
# A resumed run keeps the cases its first run chose (RUN/cases.args), whatever the defaults say
# now (one that never trained may choose again); a run from before that file was kept trained on
# the declared split.
# ("--loader-args" in it: the loader's own arguments chose them, and must again.)
SPLIT_ARGS=(--split train --val-split validation)
[[ -z $FOLD || $FOLD =~ ^(0|[1-9][0-9]{0,2}|all)$ ]] || srm_die "--fold: '$FOLD' is not a fold number (0..999) or all"
LOADER_CHOOSES=0
[[ " $LOADER_ARGS " =~ \ --(split|val-split|fold)\  ]] && LOADER_CHOOSES=1
FIRST=""
((TRAINED)) && [[ -s $RUN/cases.args ]] && FIRST=$(<"$RUN/cases.args")
if [[ $FIRST == --loader-args ]]; then
    ((LOADER_CHOOSES)) && [[ -z $FOLD ]] ||
        srm_die "$RUN chose its cases with --loader-args: resume with the same --loader-args (and no --fold)"
    SPLIT_ARGS=()
elif [[ -n $FIRST ]]; then
    read -ra SPLIT_ARGS <<<"$FIRST"
    if [[ -n $FOLD && $FIRST != "--fold $FOLD --val-split fold$FOLD/val" ]] || ((LOADER_CHOOSES)); then
        srm_die "$RUN trained on the cases of '$FIRST': another choice now would validate on cases it trained on"
    fi
    srm_log "resuming with the first run's cases: $FIRST"
elif [[ -z $FOLD ]] && ((TRAINED)); then
    ((LOADER_CHOOSES)) && SPLIT_ARGS=()         # (started before cases.args: as it chose then)
elif [[ -n $FOLD ]]; then
    ((LOADER_CHOOSES)) && srm_die "--fold and a split in --loader-args: give one of them"
    SPLIT_ARGS=(--fold "$FOLD" --val-split "fold$FOLD/val")
    if [[ $FOLD == all ]]; then
        srm_log "--fold all: training and validating on every labelled training case, as nnU-Net's fold all (its scores are on cases it trained on)"
    elif ((FOLD >= nfolds)) && [[ $folds_from != fold_keys ]]; then
        srm_log "--fold $FOLD is past the $nfolds folds ($folds_from): as nnU-Net does, a seeded random 80:20 split of the training cases"
    fi
elif ((LOADER_CHOOSES)); then
    SPLIT_ARGS=()                               # the loader's own arguments choose the cases
elif ((nval == 0)) && ((EVALUATOR || REMOTE_EVAL)); then
    # declared folds (splits_final.json, MSD fold keys) that fail stop the run: training on every
    # case instead would train on the validation cases the user meant
    [[ -z $fold0_error ]] || srm_die "no validation split declared, and fold 0 cannot be made: $fold0_error"
    if ((f0v > 0 && f0t > 0)); then
        SPLIT_ARGS=(--fold 0 --val-split fold0/val)
        case $folds_from in
            generated) what="nnU-Net's generated $nfolds-fold split"
                ((nfolds < 5)) && what="a generated $nfolds-fold split, one case a fold (nnU-Net's 5 folds need 5 cases)" ;;
            fold_keys) what="the $nfolds folds of dataset.json's fold keys" ;;
            *) what="the $nfolds folds of splits_final.json" ;;
        esac
        srm_log "no validation split declared: fold 0 of $what ($f0t training, $f0v validation cases; --fold K for another; srm-inspect --dataset DIR --folds lists them)"
    else
        srm_log "no validation split declared and too few cases for folds: training on every case, no validation"
    fi
fi
[[ -n $NAUG ]] || { NAUG=$(( $(srm_cores) - 3 )); ((NAUG < 1)) && NAUG=1; }
[[ $NAUG =~ ^[0-9]+$ ]] && { ((NAUG > 0 || REMOTE_AUG)); } ||
    srm_die "--augmenters: '$NAUG': give at least 1 (or --remote-augmenters and start them with join.sh)"

SRM_LOGS=$RUN/logs
mkdir -p "$SRM_LOGS" "$RUN/spool" "$RUN/cache" || srm_die "cannot create folders under $RUN"
if [[ -n $TCP ]]; then srm_endpoints tcp "$TCP"; else srm_endpoints ipc "$RUN"; fi
for name in "${!EP_OVERRIDE[@]}"; do
    printf -v "EP_BIND_$name" '%s' "${EP_OVERRIDE[$name]}"
    printf -v "EP_CONN_$name" '%s' "${EP_OVERRIDE[$name]}"
done
REMOTE_FLAG=()
for name in "${SRM_SOCKETS[@]}"; do
    ep_var=EP_BIND_$name
    srm_is_local_bind "${!ep_var}" || { ((ALLOW_REMOTE)) || srm_die "endpoint ${!ep_var} is not on loopback: add --allow-remote"; }
done
((ALLOW_REMOTE)) && REMOTE_FLAG=(--allow-remote)

# ---- the stages' command lines ---------------------------------------------------------------
MODEL_ARGS=()
[[ -n $PRESET ]] && MODEL_ARGS+=(--preset "$PRESET")
[[ -n $WIDTH ]] && MODEL_ARGS+=(--width "$WIDTH")
[[ -n $MODEL ]] && MODEL_ARGS+=(--model "$MODEL")
MODEL_ARGS+=(--in-channels "$INCH")
[[ -n $REGIONS ]] || MODEL_ARGS+=(--classes "$CLASSES")
EVAL_MODEL_ARGS=("${MODEL_ARGS[@]}")          # the evaluator spells --model as --variant
for i in "${!EVAL_MODEL_ARGS[@]}"; do [[ ${EVAL_MODEL_ARGS[$i]} == --model ]] && EVAL_MODEL_ARGS[$i]=--variant; done
LOSS_ARGS=()
[[ -n $LOSS ]] && LOSS_ARGS+=(--loss "$LOSS")
[[ -n $REGIONS ]] && LOSS_ARGS+=(--regions "$REGIONS")
PREP_ARGS=()
[[ -n $SPACING ]] && PREP_ARGS+=(--spacing "$SPACING")
[[ -n $NORM ]] && PREP_ARGS+=(--norm "$NORM")

read -ra X_TRAINER <<<"$TRAINER_ARGS"; read -ra X_LOADER <<<"$LOADER_ARGS"
read -ra X_AUG <<<"$AUG_ARGS"; read -ra X_EVAL <<<"$EVAL_ARGS"; read -ra X_EXPORTER <<<"$EXPORTER_ARGS"
# The run's patch and batch are train.sh's own (the loader announces them to the augmenters): one
# given to a single stage would part it from the others -- a trainer dropping every batch
for a in "${X_TRAINER[@]}" "${X_AUG[@]}"; do
    case $a in --patch|--batch|--batch-size)
        srm_die "$a inside --trainer-args / --augmenter-args: give --patch / --batch to train.sh itself (it sets the trainer's, the augmenters' and the loader's alike)" ;;
    esac
done

trainer_cmd() {
    local cmd=("$SRM_BIN/srm-trainer" "${MODEL_ARGS[@]}" "${LOSS_ARGS[@]}" --patch "$PATCH" --batch "$BATCH"
        --val-every "$VAL_EVERY" --ckpt-every "$CKPT_EVERY" --seed "$SEED" --device "$DEVICE"
        --patches "$EP_BIND_patches" --evaljobs "$EP_BIND_evaljobs" --metrics "$EP_BIND_metrics"
        --exporter "$EP_CONN_exporter" --spool "$RUN/spool" --preprocessing "$RUN/preprocessing.json"
        --run-id "$RUN_ID" "${REMOTE_FLAG[@]}")
    [[ -n $LR ]] && cmd+=(--lr "$LR")
    [[ -n $STEPS ]] && cmd+=(--steps "$STEPS")
    [[ -n $MAX_MIN ]] && cmd+=(--max-minutes "$MAX_MIN")
    ((EVALUATOR || REMOTE_EVAL)) || cmd+=(--final-eval-timeout 0)
    [[ $1 == resume ]] && cmd+=(--resume)
    cmd+=("${X_TRAINER[@]}")
    srm_start trainer "${cmd[@]}"
}

stop_everything() {
    # The trainer first (final checkpoint + ack need the exporter), the exporter last.
    srm_stop trainer 120
    local name
    for name in "${!SRM_PID[@]}"; do [[ $name == exporter ]] || srm_stop "$name" 10 & done
    wait_others
    srm_stop exporter 30
}
wait_others() {
    local name
    # the srm_stop subshells above: wait for them, then reap what they stopped
    for name in "${!SRM_PID[@]}"; do
        [[ $name == exporter ]] && continue
        while kill -0 "${SRM_PID[$name]}" 2>/dev/null; do sleep 0.2; done
        wait "${SRM_PID[$name]}" 2>/dev/null
        unset 'SRM_PID[$name]'
    done
}

# A stage that is gone for good (its restarts used up, a configuration error, or it ended by
# itself) leaves the trainer waiting forever: stop the run (final checkpoint first) and say why.
# Losing one augmenter of several is survivable, losing the last one is not; an evaluator that
# crashed again and again leaves training going on without validation (eval jobs never block the
# trainer; it skips the final validation after --final-eval-timeout), one that cannot start
# (bad arguments) stops the run.
stage_lost() {
    local name=$1 why
    why=$(grep -a '^E: ' "$SRM_LOGS/$name.log" 2>/dev/null | tail -n 1)
    if [[ $name == augmenter-* ]]; then
        local left=0 n
        for n in "${!SRM_PID[@]}"; do [[ $n == augmenter-* ]] && left=$((left + 1)); done
        if ((left > 0 || REMOTE_AUG)); then
            srm_log "$name stopped for good${why:+ ($why)}; going on with $left local augmenter(s)"
            return
        fi
    fi
    if [[ $name == evaluator && ${SRM_LAST_RC[evaluator]:-} != 78 ]]; then
        srm_log "warning: the evaluator stopped for good${why:+ ($why)}: training goes on without validation (see $SRM_LOGS/evaluator.log)"
        return
    fi
    srm_log "error: $name stopped for good${why:+: $why}; stopping the run (see $SRM_LOGS/$name.log)"
    trap - INT TERM
    stop_everything
    trap - EXIT
    srm_log "stopped; checkpoints so far in $RUN/checkpoints (fix the cause, then --resume)"
    exit 1
}

INTERRUPTED=0
on_signal() {
    INTERRUPTED=1
    srm_log "interrupted: stopping the trainer (final checkpoint), then the other stages"
    stop_everything
    srm_log "stopped; results in $RUN"
    exit 130
}
trap on_signal INT TERM
trap 'srm_stop_all 5' EXIT

# ---- one pipeline a run folder -------------------------------------------------------------------
# The stages of a previous run on RUN still stopping (its script was killed: they follow it, see
# lib.sh) get SRM_RUN_WAIT_S (60) s; a second pipeline beside a live one would mix two runs.
lock=$RUN/.exporter.lock
# (flock -E 75: busy is 75; another failure -- a filesystem without locks -- skips the check, as
# the stages themselves then do)
if [[ -e $lock ]] && command -v flock >/dev/null; then
    for ((i = 0; i < ${SRM_RUN_WAIT_S:-60}; i++)); do
        flock -n -E 75 "$lock" true 2>/dev/null; busy=$?
        ((busy == 75)) || break
        ((i)) || srm_log "waiting for the pipeline still running on $RUN (srm-exporter pid $(head -c 16 "$lock" | tr -d '\n')) to stop"
        sleep 1
    done
    ((busy != 75)) || srm_die "$RUN is in use by a running pipeline (srm-exporter pid $(head -c 16 "$lock" | tr -d '\n')): stop it first"
fi
# A folder that holds a run is continued with --resume, never started over: a fresh run there
# would append to its metrics.jsonl and mix its checkpoints with the old ones (retention and
# best.ckpt go by step, so the old run's higher steps would win).
if ! ((RESUME)) && held=$(srm_run_held "$RUN"); then
    srm_die "$RUN holds a run ($held): --resume continues it; a new run needs a folder of its own"
fi

# ---- the data stream's seed ----------------------------------------------------------------------
# The loader's shuffle and the augmenters' draws follow the seed from their start, so a resumed
# run with the same seed would see the first run's patches again, in the same order. A resume
# from step S seeds them with SEED + S: a stream of its own (the trainer's state comes from the
# checkpoint). In-run restarts of a stage keep the seed (the loader, the augmenters go on).
# Without a checkpoint step to go by (no latest link, no step-N file) the clock seeds it.
DATA_SEED=$SEED
if ((RESUME)); then
    # the step the trainer will most likely resume from: the newer of latest and the spool's
    # newest file (it verifies them, and falls back to an older intact one when they are damaged)
    last=$(readlink "$RUN/checkpoints/latest.ckpt" 2>/dev/null)
    [[ $last =~ step-0*([0-9]+)\.ckpt$ ]] ||
        last=$(ls "$RUN/checkpoints" 2>/dev/null | grep -E '^step-[0-9]+\.ckpt$' | sort | tail -n 1)
    spooled=$(ls "$RUN/spool" 2>/dev/null | grep -E '^step-[0-9]+\.ckpt$' | sort | tail -n 1)
    [[ $spooled > ${last##*/} ]] && last=$spooled
    if [[ $last =~ step-0*([0-9]+)\.ckpt$ ]]; then
        DATA_SEED=$((SEED + BASH_REMATCH[1]))
        srm_log "resuming from the newest checkpoint, step ${BASH_REMATCH[1]} (the trainer's log says which it took): the data stream is seeded $DATA_SEED (not the first run's again)"
    else
        DATA_SEED=$((SEED + $(date +%s)))
        srm_log "resuming without a checkpoint step in $RUN/checkpoints: the data stream is seeded $DATA_SEED (from the clock)"
    fi
fi

# ---- start, in binding order ------------------------------------------------------------------
srm_console_init
what="$CLASSES classes"
[[ -n $REGIONS ]] && what="regions $REGIONS"
augs="$NAUG augmenter(s)"
((REMOTE_AUG)) && augs="augmenters on other hosts (join.sh)"
srm_log "dataset $DATASET, run $RUN: $what, $INCH channel(s), patch $PATCH, batch $BATCH, ${STEPS:-no cap on the} steps${MAX_MIN:+, $MAX_MIN minutes}$( ((RESUME)) && echo " (a resume keeps its first run's schedule)"), $augs"
# The run's id, kept for its resumes: in every eval job, echoed in the metrics and predictions of
# the job, so that the trainer and the exporter take no results of another run (an evaluator
# joined with join.sh outlives a run, and the next one may use the same port).
[[ -s $RUN/run.id ]] || od -An -N8 -tx1 /dev/urandom | tr -d ' \n' >"$RUN/run.id" || srm_die "cannot write $RUN/run.id"
RUN_ID=$(<"$RUN/run.id")
[[ $RUN_ID =~ ^[A-Za-z0-9_.:-]{1,63}$ ]] || srm_die "$RUN/run.id: '$RUN_ID' is not a run id (1..63 of A-Z a-z 0-9 _ . : -)"
srm_start exporter "$SRM_BIN/srm-exporter" --run-dir "$RUN" --bind "$EP_BIND_exporter" --run-id "$RUN_ID" "${REMOTE_FLAG[@]}" "${X_EXPORTER[@]}"
if ((LOADER_CHOOSES)); then echo --loader-args; else printf '%s\n' "${SPLIT_ARGS[*]}"; fi >"$RUN/cases.args" ||
    srm_die "cannot write $RUN/cases.args"
printf 'spacing=%s\nspacing_resolved=%s\nnorm=%s\nnorm_resolved=%s\n' "$SPACING_GIVEN" "$SPACING" "$NORM_GIVEN" "$NORM" >"$RUN/prep.args" ||
    srm_die "cannot write $RUN/prep.args"
[[ -z $AUTO_REGIONS ]] || printf '%s\n' "$AUTO_REGIONS" >"$RUN/regions.auto" || srm_die "cannot write $RUN/regions.auto"
# A fold's cases are kept with the run (RUN/splits_final.json, the dataset's folds when it began)
# and a resume trains and validates on those, whatever the dataset's folds are now: new cases,
# or a generated split that changed with this system (it follows nnU-Net's since 2026-11-28).
# (A fold past the split's is kept too: the file then runs on to it, nnU-Net's 80:20 splits.)
KEPT_FOLD=$(printf '%s\n' "${SPLIT_ARGS[@]}" | sed -n '/^--fold$/{n;p;q}')
if [[ -n $KEPT_FOLD && $KEPT_FOLD != all ]]; then
    if [[ ! -s $RUN/splits_final.json ]]; then
        "$SRM_BIN/srm-inspect" --dataset "$DATASET" --folds --through "$KEPT_FOLD" >"$RUN/splits_final.json.tmp" 2>"$SRM_LOGS/folds.err" &&
            mv "$RUN/splits_final.json.tmp" "$RUN/splits_final.json" ||
            srm_die "cannot keep the run's folds in $RUN/splits_final.json: $(tail -n 1 "$SRM_LOGS/folds.err")"
        ((RESUME)) && srm_log "WARNING: $RUN began before its folds were kept: $RUN/splits_final.json holds the dataset's folds as they are now; if they changed since (new cases, or a generated split made before it followed nnU-Net's), validation cases of this resume may have been trained on"
    fi
    SPLIT_ARGS+=(--splits "$RUN/splits_final.json")
fi
srm_start loader "$SRM_BIN/srm-loader" --dataset "$DATASET" "${SPLIT_ARGS[@]}" \
    --volumes "$EP_BIND_volumes" --cases "$EP_BIND_cases" --cache "${CACHE:-$RUN/cache}" --seed "$DATA_SEED" \
    --classes "$CLASSES" --trainer-patch "$PATCH" --trainer-batch "$BATCH" --write-preprocessing "$RUN/preprocessing.json" "${PREP_ARGS[@]}" "${REMOTE_FLAG[@]}" \
    "${X_LOADER[@]}"
# (what this invocation's trainer writes: its log is appended to across resumes)
TRAINER_LOG_FROM=$(($(stat -c %s "$SRM_LOGS/trainer.log" 2>/dev/null || echo 0) + 1)) T_START=$(date +%s)
if ((RESUME)); then trainer_cmd resume; else trainer_cmd fresh; fi
if ! ((REMOTE_AUG)); then
    for ((i = 0; i < NAUG; i++)); do
        aug=("$SRM_BIN/srm-augmenter" --volumes "$EP_CONN_volumes" --patches "$EP_CONN_patches" --patch "$PATCH"
             --batch-size "$BATCH" --seed "$((DATA_SEED * 1000 + i))")
        [[ -n $SPV ]] && aug+=(--samples-per-volume "$SPV")
        srm_start "augmenter-$i" "${aug[@]}" "${X_AUG[@]}"
    done
fi
if ((EVALUATOR)) && ! ((REMOTE_EVAL)); then
    ev=("$SRM_BIN/srm-evaluator" --jobs "$EP_CONN_evaljobs" --cases "$EP_CONN_cases" --exporter "$EP_CONN_exporter"
        --metrics "$EP_CONN_metrics" --dataset "$DATASET" --window "${WINDOW:-$PATCH}" --overlap "$OVERLAP"
        --device "$DEVICE" "${EVAL_MODEL_ARGS[@]}")
    [[ -n $REGIONS ]] && ev+=(--regions "$REGIONS")
    srm_start evaluator "${ev[@]}" "${PREP_ARGS[@]}" "${X_EVAL[@]}"
fi

# ---- supervise until the trainer is done ---------------------------------------------------------
NOT_DURABLE=0
while :; do
    if ! srm_alive trainer; then
        rc=$(srm_reap trainer)
        unset 'SRM_PID[trainer]'
        [[ $rc == 0 ]] && break
        # 75: the run ended, but the exporter did not take its final checkpoint (a full disk): a
        # restart would end the same way; said at the end, and the run fails
        [[ $rc == 75 ]] && { NOT_DURABLE=1; break; }
        [[ $rc == 78 ]] && stage_lost trainer       # a configuration error: a restart cannot cure it
        n=${SRM_RESTARTS[trainer]:-0}
        ((n < RESTARTS)) || srm_die "the trainer died (status $rc) after $n restarts; see $SRM_LOGS/trainer.log"
        SRM_RESTARTS[trainer]=$((n + 1))
        srm_log "the trainer died (status $rc): restarting it with --resume ($((n + 1))/$RESTARTS)"
        trainer_cmd resume
    fi
    for name in "${!SRM_PID[@]}"; do
        [[ $name == trainer ]] && continue
        srm_supervise "$name" "$RESTARTS" >/dev/null || stage_lost "$name"
    done
    srm_console_tick
    sleep 1
done
srm_console_tick
srm_log "the trainer finished"

# ---- the final validation's predictions ------------------------------------------------------------
# The trainer waited for the final validation metrics, which the evaluator sent it directly; their
# copy for metrics.jsonl and one prediction per validation case go to the exporter, and may still
# be on their way. Wait (bounded) until the final validation's line and then the predictions are
# all on disk.
if ((EVALUATOR)) && ! ((REMOTE_EVAL)); then
    # (the cases scored, and those the final validation could not score, with the first reason;
    # final: 1 once the newest evaluator line is the final validation's)
    final_scores() {
        $SRM_PY - "$RUN/metrics.jsonl" "$T_START" "${FINAL_STEP:--1}" <<'EOF' 2>/dev/null
import json, sys
best = None
for line in open(sys.argv[1]):
    try:
        o = json.loads(line)
    except ValueError:              # a line the exporter is appending right now
        continue
    if o.get("source") == "evaluator" and (best is None or o["step"] >= best["step"]):
        best = o
extra = (best or {}).get("extra") or {}
failed = extra.get("failed") or []
first = failed[0] if failed else {}
# final: this invocation's (a resumed run's metrics.jsonl holds the earlier ones' lines too), or
# the one of this final step already filed (a resume of a finished run: its copy is a duplicate)
final = bool(extra.get("final")) and (best["wall_time"] >= float(sys.argv[2]) - 5 or best["step"] == int(sys.argv[3]))
print(int(final), len(best.get("cases") or []) if best else 0, len(failed),
      ("%s: %s" % (first.get("case_id", "?"), first.get("error", "?"))).replace("\n", " ") if failed else "-")
EOF
    }
    # (only when the trainer got the final validation; its copy follows within the evaluator's
    # resend interval unless the exporter is gone)
    got=0
    tail -c +"$TRAINER_LOG_FROM" "$SRM_LOGS/trainer.log" | grep -q '^I: trainer: final validation mean Dice' && got=60
    FINAL_STEP=$(tail -c +"$TRAINER_LOG_FROM" "$SRM_LOGS/trainer.log" | grep -o 'final eval job step [0-9]*' | tail -n 1 | grep -o '[0-9]*$')
    for ((t = 0; ; t++)); do
        read -r final want nfail why < <(final_scores) || { final=0 want=0; }
        ((final || t >= got)) && break
        srm_alive evaluator && srm_alive exporter || break    # gone: what they filed is all there is
        sleep 1
    done
    [[ ${nfail:-0} -gt 0 ]] &&
        srm_log "WARNING: the final validation could not score $nfail case(s); the first: $why"
    if ((want > 0)); then
        have=0
        for ((t = 0; t < FINAL_TIMEOUT; t++)); do
            have=$(find "$RUN/predictions" -maxdepth 1 -name '*.nii.gz' 2>/dev/null | wc -l)
            ((have >= want)) && break
            srm_alive evaluator || break
            srm_supervise exporter "$RESTARTS" >/dev/null || true     # the evaluator resends to a restarted one
            sleep 1
        done
        srm_log "predictions: $have of $want validation cases in $RUN/predictions"
    elif [[ ${nfail:-0} -gt 0 ]]; then
        srm_log "WARNING: the run has no validation result: none of the final validation's $nfail case(s) could be scored (above; $SRM_LOGS/evaluator.log)"
    else
        srm_log "no validation metrics were recorded (see $SRM_LOGS/evaluator.log)"
    fi
fi
trap - INT TERM
stop_everything
trap - EXIT
if ((NOT_DURABLE)); then
    srm_log "ERROR: the run's final checkpoint is not in $RUN/checkpoints ($(grep -a '^E: ' "$SRM_LOGS/trainer.log" | tail -n 1 | cut -c1-300)); when $RUN/spool holds it, make room and run the same command with --resume to file it"
    exit 1
fi
srm_log "done: $RUN (checkpoints/, metrics.jsonl, curves.png, predictions/)"
exit
}
