#!/usr/bin/env bash
# test_join_supervise.sh -- pipelines/join.sh's supervision of its workers (lib.sh srm_supervise),
# with stand-in stage binaries (shell scripts in a fake BIN) so that each way of ending is exact:
#   - workers that end cleanly (exit 0: an evaluator's --exit-after-final): join.sh ends, status 0;
#   - a worker that exits 78 (a configuration error) is not restarted: join.sh ends, status 1;
#   - a worker that dies (exit 3) is restarted --restarts times, then join.sh ends, status 1.
# Before lib.sh dropped a worker gone for good from its list, join.sh restarted a cleanly ended
# worker for ever and never reached its "no worker left" line.
set -u
cd "$(dirname "$0")/../.." || exit 1
source tests/pipeline_test.sh                    # check, check_summary
T=$(mktemp -d /tmp/srm-join-XXXXXX)
trap 'rm -rf "$T"' EXIT

fake() {    # fake NAME STATUS: BIN/srm-NAME logs its start, waits 0.5 s and exits STATUS
    mkdir -p "$T/bin"
    printf '#!/bin/sh\necho started >>"%s/starts"\nsleep 0.5\nexit %s\n' "$T" "$2" >"$T/bin/srm-$1"
    chmod +x "$T/bin/srm-$1"
}
run_join() {    # run_join ROLE STATUS [join.sh options...]: sets rc, starts
    local role=$1 status=$2
    shift 2
    rm -f "$T/starts"
    fake evaluator "$status"; fake augmenter "$status"
    if [[ $role == evaluator ]]; then
        BIN=$T/bin timeout 60 bash pipelines/join.sh evaluator --jobs ipc://$T/j --cases ipc://$T/c --logs "$T/logs" "$@" \
            >"$T/join.out" 2>&1
    else
        BIN=$T/bin timeout 60 bash pipelines/join.sh augmenters --volumes ipc://$T/v --patches ipc://$T/p --patch 32,32,32 \
            --batch 1 --count 2 --logs "$T/logs" "$@" >"$T/join.out" 2>&1
    fi
    rc=$?
    starts=$(wc -l <"$T/starts" 2>/dev/null || echo 0)
}

run_join evaluator 0
check "[[ $rc == 0 && $starts == 1 ]] && grep -q 'every worker ended' '$T/join.out'" \
    "an evaluator that ends cleanly: join.sh ends with status 0 (rc $rc, $starts start(s))"
run_join augmenters 0
check "[[ $rc == 0 && $starts == 2 ]]" "two augmenters that end cleanly: status 0 (rc $rc, $starts starts)"
run_join evaluator 78 --restarts 3
check "[[ $rc == 1 && $starts == 1 ]] && grep -q 'configuration error (status 78): not restarted' '$T/join.out'" \
    "an evaluator exiting 78 is not restarted: status 1 (rc $rc, $starts start(s))"
run_join evaluator 3 --restarts 2
check "[[ $rc == 1 && $starts == 3 ]] && grep -q 'no worker left' '$T/join.out'" \
    "an evaluator that dies: restarted twice, then status 1 (rc $rc, $starts starts)"
if ((failed)); then cat "$T/join.out"; fi
check_summary
