#!/usr/bin/env bash
# test_script_edit.sh -- a pipeline script edited while it runs (a git pull during a long run)
# keeps doing what it started: bash reads a script as it goes, so train.sh once died at its end
# with a syntax error (exit 2) after training had finished, when its file changed under it. The
# long-running scripts are one brace group, read whole before they start. Here a copy of
# pipelines/ runs train.sh (tiny, 10 steps) and its train.sh is cut short after the run began:
# the run still ends with exit 0 and its closing "done" line.
set -u
source "$(dirname "$0")/../pipeline_test.sh"
pipeline_test_setup scriptedit 3 1 9 exporter loader augmenter trainer

cp -r pipelines "$TMP/pipelines"
RUN=$TMP/run
bash "$TMP/pipelines/train.sh" "$TMP/data" "$RUN" --preset tiny --patch 32 --batch 1 --steps 10 --ckpt-every 5 \
    --augmenters 1 --no-evaluator >"$TMP/train.out" 2>&1 &
pid=$!
pipeline_wait "$TMP/train.out" 'started trainer' $pid || true
head -c 3000 pipelines/train.sh >"$TMP/pipelines/train.sh"      # the file now ends mid-script
echo 'echo EDITED-COPY-RAN; exit 3' >>"$TMP/pipelines/train.sh"
wait $pid
rc=$?
check "[[ $rc == 0 ]]" "train.sh finished with exit 0 although its file changed under it (exit $rc)"
check "grep -q 'done: $RUN' '$TMP/train.out' && ! grep -q 'EDITED-COPY-RAN\|syntax error' '$TMP/train.out'" \
    "the running copy went on to its own end"
check_summary
