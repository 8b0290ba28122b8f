# pipeline_test.sh -- the preamble the shell tests of the pipeline share (sourced by
# tests/cpu/test_train_pipeline.sh, test_trainer_budget.sh, test_trainer_resume.sh, the kill tests
# ...; it lives out of tests/cpu/ so that tests/run.sh does not run it as a test):
#   pipeline_test_setup TAG CASES VAL SEED STAGE...
# cds to the repository root, makes BIN absolute and exports it, makes $TMP (removed on exit),
# fails the test ("0 passed, 1 failed") when a stage binary is missing, and writes CASES phantoms
# of size 32 (VAL for validation, seed SEED) into $TMP/data. pipeline_wait (below) waits for a log
# line while the pipeline runs. check / check_summary (below) count and report the checks.
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

# pipeline_wait LOG REGEX PID [TENTHS]: poll LOG every 0.1 s until a line matches REGEX (status
# 0), or PID has ended or TENTHS (3000) polls passed (status 1).
pipeline_wait() {
    local log=$1 re=$2 pid=$3 n=${4:-3000} i
    for ((i = 0; i < n; i++)); do
        grep -qE "$re" "$log" 2>/dev/null && return 0
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

# check CONDITION TEXT: evaluate CONDITION, print "ok   TEXT" or "FAIL TEXT" and count it.
# check_summary: the "N passed, N failed" line tests/run.sh reads; non-zero status on a failure.
passed=0 failed=0
check() { if eval "$1"; then echo "ok   $2"; passed=$((passed + 1)); else echo "FAIL $2"; failed=$((failed + 1)); fi; }
check_summary() { echo "$passed passed, $failed failed"; ((failed == 0)); }
