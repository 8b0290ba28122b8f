#!/usr/bin/env bash
# gpu_session.sh BUILD [budget_s] -- one device-tool call of the GPU performance work (issues 5
# and 7, METHOD.md "fit the lease"): srm-bench first (clean timings), then the GPU tests, then an
# Nsight Compute pass: the time of every kernel of the bench's first steps summed by kernel name
# (normalised per training step by the Adam launches). Logs go to $OUT (or /tmp/gpu_session); a short table is printed last.
# BUILD is the build folder of `make CUDA=1 BUILD=... BIN=BUILD/bin`.
set -uo pipefail
cd "$(dirname "$0")/.."
B=${1:?usage: gpu_session.sh BUILD [budget_s]}
O=${OUT:-/tmp/gpu_session}; mkdir -p "$O"
t0=$(date +%s)
left() { echo $(( ${2:-400} - ($(date +%s) - t0) )); }
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv,noheader
timeout 150 "$B/bin/srm-bench" > "$O/bench.txt" 2> "$O/bench.err"; echo "bench rc=$?"
for t in ops mamba; do
  timeout 120 "$B/tests/gpu/test_gpu_$t" > "$O/test_$t.txt" 2>&1; echo "test_gpu_$t rc=$?"
done
mt=$(( $(left x ${2:-390}) - 90 )); [ $mt -lt 20 ] && mt=20
timeout $mt "$B/tests/gpu/test_gpu_model" > "$O/test_model.txt" 2>&1; echo "test_gpu_model rc=$?"
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
nt=$(( $(left x ${2:-390}) - 15 ))
if [ -n "$NCU" ] && [ $nt -gt 20 ]; then
  timeout $nt "$NCU" --csv --metrics gpu__time_duration.sum -c 2000 "$B/bin/srm-bench" --steps 1 \
    --warm 0 > "$O/ncu_all.csv" 2> "$O/ncu_all.err"; echo "ncu all rc=$?"
fi
echo "==== bench"; cat "$O/bench.txt"
echo "==== tests"; for t in ops mamba model; do grep -E "passed|FAIL|logits" "$O/test_$t.txt" | tail -12; done
grep -E "instancenorm|groupnorm" "$O/test_ops.txt" | tail -4
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
for k, v in t.most_common(28): print("%8.2f ms %6d  %s" % (v / steps, n[k] // steps, k[:70]))
PY
fi
echo "elapsed $(( $(date +%s) - t0 )) s"
