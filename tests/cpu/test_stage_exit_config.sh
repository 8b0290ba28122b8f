#!/usr/bin/env bash
# test_stage_exit_config.sh -- the real stages end with status 78 (sysexits' EX_CONFIG) on what
# no restart can cure, so train.sh and join.sh (lib.sh srm_supervise) stop instead of restarting
# them over and over: bad arguments (loader, augmenter, exporter, trainer, the evaluator's service
# mode), a dataset
# that does not exist or has no usable training case (loader), a CURVE key file that does not exist (augmenter, loader,
# exporter, trainer, evaluator); and
# join.sh with such an augmenter ends at once, status 1, saying it was not restarted; an augmenter
# cutting another patch or batch than the loader says the run trains on (status 78).
set -u
source "$(dirname "$0")/../pipeline_test.sh"
pipeline_test_setup exitconfig 2 0 3 loader augmenter exporter trainer evaluator

st() { "$@" >"$TMP/out" 2>&1; echo $?; }
for s in loader augmenter exporter trainer evaluator; do
    extra=()
    [[ $s == evaluator ]] && extra=(--jobs "ipc://$TMP/j")     # its service mode (file mode: predict.sh's statuses)
    rc=$(st "$BIN/srm-$s" "${extra[@]}" --no-such-flag 1)
    check "[[ $rc == 78 ]]" "srm-$s with an unknown flag: status 78 (got $rc)"
done
rc=$(st timeout 20 "$BIN/srm-trainer" --loss sigmoid-dice --regions "A=1,2;B=2,3" --patches "ipc://$TMP/p0")
check "[[ $rc == 78 ]] && grep -q 'A and B overlap without one holding the other' '$TMP/out'" \
    "srm-trainer with regions that overlap without nesting: status 78 (got $rc)"
# --device gpu where no GPU can be had (a CPU build, or a host without a usable one): lasting,
# so no restarts (train.sh restarted it five times)
rc=$(st timeout 60 "$BIN/srm-trainer" --device gpu --preset tiny --model P --patch 32 --patches "ipc://$TMP/pg")
check "[[ $rc == 78 ]] && grep -q -- '--device gpu: \(this srm-trainer was built without CUDA\|no usable CUDA device\)' '$TMP/out'" \
    "srm-trainer --device gpu without a GPU: status 78 (got $rc: $(tail -n 1 "$TMP/out"))"
rc=$(st timeout 20 "$BIN/srm-loader" --dataset "$TMP/nowhere" --volumes "ipc://$TMP/v")
check "[[ $rc == 78 ]] && grep -q '$TMP/nowhere' '$TMP/out'" "srm-loader with a missing dataset: status 78, the folder named (got $rc)"
# every training case unusable (labels outside the declared classes): no restart would help
cp -r "$TMP/data" "$TMP/badlab"
/usr/bin/python3 -c '
import glob, sys, numpy as np, nibabel as nib
for f in glob.glob(sys.argv[1] + "/labelsTr/*.nii.gz"):
    im = nib.load(f)
    nib.save(nib.Nifti1Image(np.full(im.shape, 9, np.uint8), im.affine), f)
' "$TMP/badlab"
rc=$(st timeout 60 "$BIN/srm-loader" --dataset "$TMP/badlab" --volumes "ipc://$TMP/v2")
check "[[ $rc == 78 ]] && grep -q 'no usable case in .train. (2 skipped; the first, case phantom_00[01]: .*labelsTr/phantom_00[01].nii.gz: label value 9' '$TMP/out'" \
    "srm-loader with no usable training case: status 78, the first case's file and why named (got $rc)"
rc=$(st timeout 20 "$BIN/srm-augmenter" --volumes tcp://127.0.0.1:1 --patches tcp://127.0.0.1:2 --patch 32 \
    --curve-client "$TMP/none.key" --server-key "$TMP/none.pub")
check "[[ $rc == 78 ]] && grep -q 'none' '$TMP/out'" "srm-augmenter with a missing CURVE key file: status 78, the file named (got $rc)"

bash scripts/keys.sh "$TMP/keys" client >/dev/null 2>&1
auth=$TMP/keys/authorized_keys                # a good authorised-keys file: only the secret key is missing
check "[[ -s $auth ]]" "scripts/keys.sh made $auth"
rc=$(st timeout 20 "$BIN/srm-loader" --dataset "$TMP/data" --volumes tcp://127.0.0.1:0 --curve-server "$TMP/none.key" \
    --authorized "$auth")
check "[[ $rc == 78 ]] && grep -q 'none.key' '$TMP/out'" "srm-loader with a missing CURVE secret key file: status 78, the file named (got $rc)"
rc=$(st timeout 20 "$BIN/srm-exporter" --run-dir "$TMP/xrun" --bind tcp://127.0.0.1:0 --allow-remote \
    --curve-server "$TMP/none.key" --authorized "$auth")
check "[[ $rc == 78 ]] && grep -q 'none.key' '$TMP/out'" "srm-exporter with a missing CURVE secret key file: status 78, the file named (got $rc)"
rc=$(st timeout 20 "$BIN/srm-trainer" --patches tcp://127.0.0.1:0 --allow-remote --curve-server "$TMP/none.key" \
    --authorized "$auth")
check "[[ $rc == 78 ]] && grep -q 'none.key' '$TMP/out'" "srm-trainer with a missing CURVE secret key file: status 78, the file named (got $rc)"
rc=$(st timeout 20 "$BIN/srm-trainer" --patches "ipc://$TMP/p" --exporter tcp://127.0.0.1:1 --curve-client "$TMP/keys/client.key" \
    --server-key "$TMP/none.pub")
check "[[ $rc == 78 ]] && grep -q 'none.pub' '$TMP/out'" "srm-trainer with a missing server key file: status 78, the file named (got $rc)"
rc=$(st timeout 20 "$BIN/srm-evaluator" --jobs tcp://127.0.0.1:1 --cases tcp://127.0.0.1:2 --curve-client "$TMP/none.key" \
    --server-key "$TMP/none.pub")
check "[[ $rc == 78 ]] && grep -q 'none.key' '$TMP/out'" "srm-evaluator (service) with a missing CURVE key file: status 78, the file named (got $rc)"

start=$(date +%s)
timeout 60 bash pipelines/join.sh augmenters --main 127.0.0.1:1 --count 1 --patch 32,32,32 --batch 1 \
    --logs "$TMP/jlogs" -- --curve-client "$TMP/none.key" --server-key "$TMP/none.pub" >"$TMP/join.out" 2>&1
rc=$? took=$(($(date +%s) - start))
check "[[ $rc == 1 ]] && ((took < 20))" "join.sh with an augmenter that cannot start: status 1 in ${took}s (got $rc)"
check "grep -q 'configuration error (status 78): not restarted' '$TMP/join.out'" "join.sh says the augmenter was not restarted"
check "grep -q '\[augmenter-0\] E: .*none' '$TMP/join.out'" "join.sh's console shows the augmenter's error (the key file)"
check "! grep -q 'restarting it' '$TMP/join.out'" "no restart loop"

# The loader sends the run's patch and batch with its training volumes (train.sh passes the
# trainer's): an augmenter cutting another size -- every batch of which the trainer would drop --
# stops with 78 saying what to start it with; one cutting the same size runs on.
"$BIN/srm-loader" --dataset "$TMP/data" --volumes "ipc://$TMP/geo_v" --trainer-patch 32,32,16 --trainer-batch 2 \
    >"$TMP/geo_loader.out" 2>&1 &
loader=$!
rc=$(st timeout 60 "$BIN/srm-augmenter" --volumes "ipc://$TMP/geo_v" --patches "ipc://$TMP/geo_p" --patch 32 --batch-size 2)
check "[[ $rc == 78 ]] && grep -q 'trains on batches of 2 patches of 32x32x16.*this augmenter cuts 2 of 32x32x32: start it with --patch 32,32,16 --batch-size 2' '$TMP/out'" \
    "srm-augmenter with another patch than the run's: status 78, the run's named (got $rc)"
rc=$(st timeout 60 "$BIN/srm-augmenter" --volumes "ipc://$TMP/geo_v" --patches "ipc://$TMP/geo_p" --patch 32,32,16 --batch-size 1)
check "[[ $rc == 78 ]] && grep -q 'start it with --patch 32,32,16 --batch-size 2' '$TMP/out'" \
    "srm-augmenter with another batch than the run's: status 78 (got $rc)"
rc=$(st timeout 8 "$BIN/srm-augmenter" --volumes "ipc://$TMP/geo_v" --patches "ipc://$TMP/geo_p" --patch 32,32,16 --batch-size 2 \
    --stats-every 1)
check "[[ $rc == 124 ]] && grep -q 'volumes [1-9][0-9]* new' '$TMP/out' && ! grep -q 'trains on' '$TMP/out'" \
    "srm-augmenter with the run's patch and batch takes the volumes and runs on (got $rc)"
timeout 60 bash pipelines/join.sh augmenters --volumes "ipc://$TMP/geo_v" --patches "ipc://$TMP/geo_p" --count 1 \
    --patch 64,64,64 --batch 2 --logs "$TMP/jlogs2" >"$TMP/join2.out" 2>&1
rc=$?
check "[[ $rc == 1 ]] && grep -q 'configuration error (status 78): not restarted' '$TMP/join2.out' && grep -q 'join.sh: --patch 32,32,16 --batch 2' '$TMP/join2.out'" \
    "join.sh with augmenters of the wrong --patch stops, showing the run's (got $rc)"
kill -TERM $loader; wait $loader
check_summary
