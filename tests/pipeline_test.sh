# pipeline_test.sh -- the preamble the shell tests of the pipeline share (sourced by
# tests/cpu/test_train_pipeline.sh, test_trainer_budget.sh, test_trainer_resume.sh; it lives out
# of tests/cpu/ so that tests/run.sh does not run it as a test):
#   pipeline_test_setup TAG CASES VAL SEED STAGE...
# cds to the repository root, makes BIN absolute and exports it, makes $TMP (removed on exit),
# fails the test ("0 passed, 1 failed") when a stage binary is missing, and writes CASES phantoms
# of size 32 (VAL for validation, seed SEED) into $TMP/data.
pipeline_test_setup() {
    local tag=$1 cases=$2 val=$3 seed=$4 s
    shift 4
    cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
    BIN=${BIN:-bin}
    case $BIN in /*) ;; *) BIN=$PWD/$BIN ;; esac
    export BIN
    TMP=$(mktemp -d "/tmp/srm-$tag-XXXXXX")
    trap 'rm -rf "$TMP"' EXIT
    for s in "$@"; do
        [[ -x $BIN/srm-$s ]] || { echo "FAIL: $BIN/srm-$s not built"; echo "0 passed, 1 failed"; exit 1; }
    done
    /usr/bin/python3 scripts/make_phantoms.py "$TMP/data" --cases "$cases" --val "$val" --size 32 \
        --seed "$seed" >/dev/null || { echo "FAIL: make_phantoms.py"; echo "0 passed, 1 failed"; exit 1; }
}
