#!/usr/bin/env bash
# test_soak.sh -- the short soak of issue 8 inside `make test`: scripts/soak.sh for
# SRM_SOAK_MINUTES (default 2) minutes, resident memory of every stage sampled every 3 s, the
# trainer SIGSTOPped for a fifth of the measured time (back-pressure). Passes when every stage's
# steady memory stays within 5 % and nothing was restarted (scripts/soak.sh's verdict). The long
# version (>= 30 minutes, a sample per minute) is `make soak`. Prints "N passed, N failed".
set -u
BIN=${BIN:-bin}
export BIN
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
csv=$(mktemp /tmp/srm-soak-XXXXXX.csv)
trap 'rm -f "$csv"' EXIT
if bash "$ROOT/scripts/soak.sh" --minutes "${SRM_SOAK_MINUTES:-2}" --interval 3 --warmup 20 --out "$csv"; then
  stopped=$(grep -c ',stopped,' "$csv")
  if [ "$stopped" -ge 3 ]; then echo "1 passed, 0 failed"; exit 0; fi
  echo "FAIL only $stopped samples while the trainer was stopped"
else
  echo "FAIL scripts/soak.sh: memory not flat, a stage restarted, or the run failed"
  cat "$csv"
fi
echo "0 passed, 1 failed"
exit 1
