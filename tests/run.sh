#!/usr/bin/env bash
# run.sh -- run one suite of tests and add up their "N passed, N failed" lines.
#   tests/run.sh cpu   every $BUILD/tests/test_* binary, then tests/cpu/*.sh and tests/cpu/*.py
#   tests/run.sh gpu   every $BUILD/tests/gpu/test_* binary, then tests/gpu/*.sh
# A test that prints no summary line counts as one failure if it exits non-zero and one pass if
# it exits zero. The last line printed is the total: "N passed, N failed".
# SRM_TEST_FILTER=regex runs only the tests whose name matches.
set -u
suite=${1:-cpu}
BUILD=${BUILD:-build}
export BUILD BIN=${BIN:-bin}
# libgomp threads spin while waiting by default; on a 2-core machine shared by several test
# processes that costs 3-10x. Passive waiting changes no arithmetic.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
cd "$(dirname "$0")/.."
if [ "$suite" = gpu ]; then
  list=$(ls "$BUILD"/tests/gpu/test_* 2>/dev/null | grep -v '\.[od]$'; ls tests/gpu/*.sh 2>/dev/null)
else
  list=$(ls "$BUILD"/tests/test_* 2>/dev/null | grep -v '\.[od]$'; ls tests/cpu/*.sh tests/cpu/*.py 2>/dev/null)
fi
total_p=0; total_f=0; failed_names=()
for t in $list; do
  name=$(basename "$t")
  if [ -n "${SRM_TEST_FILTER:-}" ] && ! [[ $name =~ $SRM_TEST_FILTER ]]; then continue; fi
  echo "=== $name"
  start=$(date +%s)
  case "$t" in
    *.py) out=$(/usr/bin/python3 "$t" 2>&1); rc=$? ;;
    *.sh) out=$(bash "$t" 2>&1); rc=$? ;;
    *)    out=$("$t" 2>&1); rc=$? ;;
  esac
  printf '%s\n' "$out" | grep -v '^ok  ' | tail -n 40
  line=$(printf '%s\n' "$out" | grep -E '^([A-Za-z]+: )?[0-9]+ passed, [0-9]+ failed' | tail -n 1)
  if [ -n "$line" ]; then
    p=$(echo "$line" | sed -E 's/^([A-Za-z]+: )?([0-9]+) passed, ([0-9]+) failed.*/\2/')
    f=$(echo "$line" | sed -E 's/^([A-Za-z]+: )?([0-9]+) passed, ([0-9]+) failed.*/\3/')
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
  else
    if [ "$rc" -eq 0 ]; then p=1; f=0; else p=0; f=1; fi
  fi
  total_p=$((total_p + p)); total_f=$((total_f + f))
  [ "$f" -gt 0 ] && failed_names+=("$name")
  echo "--- $name: $p passed, $f failed ($(( $(date +%s) - start ))s)"
done
[ ${#failed_names[@]} -gt 0 ] && echo "failing: ${failed_names[*]}"
echo "$total_p passed, $total_f failed"
[ "$total_f" -eq 0 ] && [ "$total_p" -gt 0 ]
