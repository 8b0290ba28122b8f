# tally.sh -- sourced by the shell tests: the settings they share (BUILD, the build folder of the
# test binaries and tools; BIN, the stage binaries, exported for pipelines/*.sh; ROOT, the
# checkout this file sits in), the pass/fail tally (ok MSG and bad MSG count and print one check;
# finish prints the "N passed, N failed" line tests/run.sh sums and exits 0 only when nothing
# failed) and need_exec.
BUILD=${BUILD:-build}
BIN=${BIN:-bin}
export BIN
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
pass=0; fail=0
ok()  { pass=$((pass + 1)); echo "ok   $*"; }
bad() { fail=$((fail + 1)); echo "FAIL $*"; }
finish() { echo "$pass passed, $fail failed"; [ "$fail" -eq 0 ]; exit $?; }
# need_exec PATH...: every PATH must be an executable (a stage or a tool the test runs); the first
# that is not fails the test here.
need_exec() {
    local p
    for p in "$@"; do [ -x "$p" ] || { bad "$p not built (make; make tools)"; finish; }; done
}
