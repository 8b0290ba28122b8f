#!/usr/bin/env bash
# bench.sh [srm-bench options] -- run the GPU benchmark of issue 7 (`make bench`): prints the
# card, the cuDNN version loaded and one table (training steps, peak memory, inference, scans,
# per-kind breakdown, sliding window). Needs an NVIDIA GPU. The table goes to stdout; the
# progress lines to stderr. BIN selects the binary folder (default bin).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${BIN:-bin}/srm-bench
[ -x "$bin" ] || { echo "bench.sh: $bin not built (make CUDA=1 $bin)" >&2; exit 1; }
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total \
  --format=csv,noheader >&2 || true
echo "date: $(date -u +%Y-%m-%dT%H:%MZ)"
exec "$bin" "$@"
