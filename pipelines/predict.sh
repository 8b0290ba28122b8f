#!/usr/bin/env bash
# predict.sh -- segment new images with a trained model (srm-evaluator in file mode).
#   pipelines/predict.sh MODEL OUT_DIR IMAGE... [evaluator options]
# MODEL: a native checkpoint (.ckpt) or a safetensors file (ours, or weights trained elsewhere
# with the names of params_M_btcv.txt: then give --variant/--width/--classes); several, comma-
# separated (f0.ckpt,f1.ckpt,...): an ensemble, their logits averaged as nnU-Net ensembles its
# folds. --mirror adds nnU-Net's test-time mirroring (8 passes a window); --continue finishes a
# job stopped part way (predictions already in OUT_DIR are left as they are). Each IMAGE (NIfTI,
# 4D = channels) gives OUT_DIR/<name>.nii.gz on that image's own grid (same dims and affine): a
# uint8 label map, or with --logits the float32 logits (classes on the 4th axis). nnU-Net's one
# file per channel, CASE_0000.nii.gz CASE_0001.nii.gz ..., is one case: OUT_DIR/CASE.nii.gz (so is
# a lone CASE_0000 for a one-channel model; a series img_0000, img_0001 ... stays one case a file).
# Options after the images go to srm-evaluator (--window D,H,W, --overlap, --blend, --sw-batch,
# --device, --spacing, --norm, --regions ...; see `srm-evaluator --help`). Each image gets the
# preprocessing the model was trained with: srm-trainer keeps the loader's settings (spacing,
# each channel's modality and normalisation) in every checkpoint and export. --spacing / --norm
# override them, and are needed for weights that carry none (trained elsewhere: a warning says so).
# Exit status: 0 all images done, 1 nothing could run, 2 some images failed (named on stderr).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${BIN:-$root/bin}
case "$bin" in /*) ;; *) bin=$root/$bin ;; esac
usage() { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 1; }
case "${1:-}" in -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; esac
[ $# -ge 3 ] || usage
# Its OpenMP threads sleep when idle instead of spinning: on a host where other work runs (a
# training, augmenters) spinning threads steal each other's cores (3-4x slower, measured)
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
model=$1 out=$2
shift 2
images=()
while [ $# -gt 0 ] && [ "${1#--}" = "$1" ]; do images+=("$1"); shift; done
[ ${#images[@]} -gt 0 ] || usage
IFS=, read -ra models <<<"$model"
[ ${#models[@]} -gt 0 ] || usage
for m in "${models[@]}"; do
    [ -f "$m" ] || { echo "predict.sh: $m: no such model file" >&2; exit 1; }
done
for f in "${images[@]}"; do
    [ -d "$f" ] && { echo "predict.sh: $f: a folder, not an image file (give its files: $f/*.nii.gz)" >&2; exit 1; }
    [ -f "$f" ] || { echo "predict.sh: $f: no such image" >&2; exit 1; }
done
exe=$bin/srm-evaluator
[ -x "$exe" ] || { echo "predict.sh: $exe not found: run 'make' first" >&2; exit 1; }
mkdir -p "$out"
exec "$exe" --model "${models[@]}" --out "$out" --images "${images[@]}" "$@"
