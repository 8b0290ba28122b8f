# tally.sh -- the pass/fail tally of the shell tests (sourced): ok MSG and bad MSG count and print
# one check, finish prints the "N passed, N failed" line tests/run.sh sums and exits 0 only when
# nothing failed.
pass=0; fail=0
ok()  { pass=$((pass + 1)); echo "ok   $*"; }
bad() { fail=$((fail + 1)); echo "FAIL $*"; }
finish() { echo "$pass passed, $fail failed"; [ "$fail" -eq 0 ]; exit $?; }
