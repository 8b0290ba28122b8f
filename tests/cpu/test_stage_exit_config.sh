#!/usr/bin/env bash
# test_stage_exit_config.sh -- the real stages end with status 78 (sysexits' EX_CONFIG) on what
# no restart can cure, so train.sh and join.sh (lib.sh srm_supervise) stop instead of restarting
# them over and over: bad arguments (loader, augmenter, exporter, trainer, the evaluator's service
# mode), a dataset
# that does not exist or has no usable training case (loader), a CURVE key file that does not exist (augmenter, loader,
# exporter, trainer, evaluator); and
# join.sh with such an augmenter ends at once, status 1, saying it was not restarted.
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
check_summary
