#!/usr/bin/env bash
# gpu_session.sh BUILD [budget_s] [model_seed] -- one device-tool call of the GPU performance work
# (issues 5 and 7, METHOD.md "fit the lease"), in priority order: the Mamba GPU tests; an Nsight
# Compute profile of the first launch of each selective-scan kernel at the level-0 shape (the
# scan timing of test_gpu_mamba: N 1, L 64^3, E 96, bf16; sections SpeedOfLight, Occupancy,
# WarpStateStats, MemoryWorkloadAnalysis, SourceCounters); test_gpu_ops; test_gpu_model (its
# seed fixed so that logits errors compare between runs); srm-bench (--steps 20 --warm 5); and,
# when time is left, an ncu pass summing every kernel of one bench step by name.
# Logs go to $OUT (or /tmp/gpu_session); a short table is printed last.
# BUILD is the build folder of `make CUDA=1 BUILD=... BIN=BUILD/bin` (tests in BUILD/tests/gpu).
set -uo pipefail
cd "$(dirname "$0")/.."
B=${1:?usage: gpu_session.sh BUILD [budget_s] [model_seed]}
BUDGET=${2:-400}
SEED=${3:-1795755236}
O=${OUT:-/tmp/gpu_session}; mkdir -p "$O"
t0=$(date +%s)
left() { echo $(( BUDGET - ($(date +%s) - t0) )); }
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv,noheader
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)

timeout 100 "$B/tests/gpu/test_gpu_mamba" > "$O/test_mamba.txt" 2>&1; echo "test_gpu_mamba rc=$? $(( $(date +%s) - t0 )) s"
if [ -n "$NCU" ]; then
  SRM_TEST_ONLY_TIMING=1 SRM_TEST_REPS=1 timeout 90 "$NCU" -f -o "$O/scan_prof" -k regex:scan_ -c 8 \
    --section SpeedOfLight --section Occupancy --section WarpStateStats \
    --section MemoryWorkloadAnalysis --section SourceCounters --section LaunchStats \
    "$B/tests/gpu/test_gpu_mamba" > "$O/ncu_scan.log" 2>&1; echo "ncu scan rc=$? $(( $(date +%s) - t0 )) s"
  "$NCU" --import "$O/scan_prof.ncu-rep" --page details > "$O/scan_details.txt" 2>&1
fi
timeout 60 "$B/tests/gpu/test_gpu_ops" > "$O/test_ops.txt" 2>&1; echo "test_gpu_ops rc=$? $(( $(date +%s) - t0 )) s"
mt=$(( $(left) - 110 )); [ $mt -lt 30 ] && mt=30
SRM_TEST_SEED=$SEED timeout $mt "$B/tests/gpu/test_gpu_model" > "$O/test_model.txt" 2>&1; echo "test_gpu_model rc=$? $(( $(date +%s) - t0 )) s"
bt=$(( $(left) - 5 )); [ $bt -lt 30 ] && bt=30
timeout $bt "$B/bin/srm-bench" > "$O/bench.txt" 2> "$O/bench.err"; echo "bench rc=$? $(( $(date +%s) - t0 )) s"
nt=$(( $(left) - 10 ))
if [ -n "$NCU" ] && [ $nt -gt 40 ]; then
  timeout $nt "$NCU" --csv --metrics gpu__time_duration.sum -c 2000 "$B/bin/srm-bench" --steps 1 \
    --warm 0 > "$O/ncu_all.csv" 2> "$O/ncu_all.err"; echo "ncu all rc=$?"
fi

echo "==== bench"; cat "$O/bench.txt"
echo "==== tests"
for t in mamba ops model; do grep -E "passed|FAIL|logits|determinism" "$O/test_$t.txt" | tail -14; done
grep -E "^scan level|^mamba layer" "$O/test_mamba.txt"
if [ -s "$O/scan_details.txt" ]; then
  echo "==== scan kernels (ncu, first launches at level 0)"
  grep -E "^  scan_|Duration|Registers Per|Achieved Occupancy|Theoretical Occupancy|Memory Throughput|Compute \(SM\) Throughput|Warp Cycles Per Issued|L1/TEX Hit|Mem Busy" "$O/scan_details.txt" | head -80
fi
if [ -s "$O/ncu_all.csv" ]; then
  echo "==== kernels (ncu, ms per step)"
  python3 - "$O/ncu_all.csv" <<'PY'
import csv, sys, collections
rows = [r for r in csv.reader(open(sys.argv[1])) if len(r) > 10]
h = rows[0]; ki = h.index("Kernel Name"); vi = h.index("Metric Value"); ui = h.index("Metric Unit")
t = collections.Counter(); n = collections.Counter()
for r in rows[1:]:
    try: v = float(r[vi].replace(",", ""))
    except ValueError: continue
    v *= {"nsecond": 1e-6, "usecond": 1e-3, "msecond": 1.0}.get(r[ui], 1e-6)
    k = r[ki].split("(")[0].split("<")[0]; t[k] += v; n[k] += 1
steps = max(1, sum(c for k, c in n.items() if "adam" in k.lower()))
print("steps (adam launches):", steps, " total ms/step: %.1f" % (sum(t.values()) / steps))
for k, v in t.most_common(24): print("%8.2f ms %6d  %s" % (v / steps, n[k] // steps, k[:70]))
PY
fi
echo "elapsed $(( $(date +%s) - t0 )) s"
