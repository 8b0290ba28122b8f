#!/usr/bin/env bash
# test_bad_corpus_valgrind.sh -- the NIfTI reader under valgrind memcheck: no invalid access,
# no uninitialised read, no definite leak, on every bad corpus file and the whole NIfTI test.
#   1. $BUILD/tests/test_nifti (good + bad corpus, write/read round trips, reorientation)
#   2. $BIN/srm-inspect on each file of tests/corpus/bad/EXPECTED.txt: exit status 1 (a clean
#      refusal with a message), never a crash and never a valgrind error (exit 99).
# Ends with "N passed, N failed". About 25 s on 2 cores.
set -u
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}; BIN=${BIN:-bin}
VG=(valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite)
pass=0; fail=0
if ! command -v valgrind >/dev/null; then
  echo "FAIL valgrind not installed (scripts/install-deps.sh installs it)"; echo "0 passed, 1 failed"; exit 1
fi
log=$(mktemp); trap 'rm -f "$log"' EXIT
if "${VG[@]}" "$BUILD/tests/test_nifti" >"$log" 2>&1; then
  pass=$((pass + 1)); echo "ok   test_nifti under valgrind"
else
  fail=$((fail + 1)); echo "FAIL test_nifti under valgrind"; grep -v '^\*\*\|^  - read' "$log" | tail -n 20
fi
while read -r name want; do
  case "$name" in ''|'#'*) continue ;; esac
  "${VG[@]}" "$BIN/srm-inspect" "tests/corpus/bad/$name" >/dev/null 2>"$log"; rc=$?
  if [ "$rc" -eq 1 ] && grep -q "^E: .*$name.*$want" "$log"; then
    pass=$((pass + 1)); echo "ok   $name"
  else
    fail=$((fail + 1)); echo "FAIL $name: exit $rc"; tail -n 20 "$log"
  fi
done < tests/corpus/bad/EXPECTED.txt
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
