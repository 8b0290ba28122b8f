#!/usr/bin/env bash
# evaluate.sh -- score a trained model on a dataset (srm-evaluator in file mode).
#   pipelines/evaluate.sh MODEL DATASET [--split S] [--out DIR] [evaluator options]
# Segments every case of the selection (default: the dataset's validation split; also "all",
# "train", "test", "foldK/val"), preprocessed as the loader does (--spacing, --norm), maps each
# prediction back to its source grid and prints, per case, the Dice of every foreground class
# (null: absent from both reference and prediction) with their mean and HD95 in mm, then a
# "mean" line over the cases:
#   case ID: dice 1=0.9512 2=0.8010 3=null mean=0.8761 hd95 1=1.41 2=2.00 3=null
#   mean (3 of 3 cases): dice 1=... mean=...
# (each class's mean over the cases it is defined in; mean= the mean of the cases' means, MONAI's
# DiceMetric reduction -- nnU-Net's foreground_mean averages the class means instead; a case
# without a reference, e.g. from imagesTs, is predicted and counted apart)
# --out DIR also keeps the label maps. MODEL may be an ensemble (f0.ckpt,f1.ckpt,...: logits
# averaged); --mirror and other options as for predict.sh (srm-evaluator --help).
# Exit status: 0 all cases scored, 1 nothing could run, 2 some cases failed (named).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${BIN:-$root/bin}
case "$bin" in /*) ;; *) bin=$root/$bin ;; esac
case "${1:-}" in -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; esac
if [ $# -lt 2 ]; then sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 1; fi
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}     # as predict.sh: idle threads sleep
model=$1 dataset=$2
shift 2
IFS=, read -ra models <<<"$model"
[ ${#models[@]} -gt 0 ] || { echo "evaluate.sh: no model given" >&2; exit 1; }
for m in "${models[@]}"; do
    [ -f "$m" ] || { echo "evaluate.sh: $m: no such model file" >&2; exit 1; }
done
[ -d "$dataset" ] || { echo "evaluate.sh: $dataset: no such dataset folder" >&2; exit 1; }
exe=$bin/srm-evaluator
[ -x "$exe" ] || { echo "evaluate.sh: $exe not found: run 'make' first" >&2; exit 1; }
exec "$exe" --model "${models[@]}" --dataset "$dataset" "$@"
