#!/usr/bin/env bash
# The shipped recipe for all four models on one CUDA GPU: 5-fold CV on the seed-0 splits
# + a final all-data model each, 256 px, mixed precision (fp16 autocast), trained to a
# plateau (warm restarts, early stop per fold; the caps are the training queue's
# --plateau-max, so a fold stops at its plateau, not at a cap). Sized for about 9 minutes on one large GPU (16 CPU cores feed the four
# runs, which share the GPU); a run cut by BUDGET_S resumes with train.py --resume.
#
#   OUT=/tmp/gpu-out bash scripts/train_gpu.sh DATA
#
# Writes $OUT/runs/<model>-gpu/ (the run folders), $OUT/logs/<model>.log, and
# $OUT/weights/<model>.safetensors + .json (the final models, via ship_weights.py).
set -u
cd "$(dirname "$0")/.."
DATA=${1:?labeled folder}
OUT=${OUT:?set OUT to the output folder}
PY=${PYTHON:-.venv/bin/python}
BUDGET_S=${BUDGET_S:-510}   # hard stop per run; an interrupted run can be resumed with --resume
mkdir -p "$OUT/runs" "$OUT/logs" "$OUT/weights"
common=(--data "$DATA" --folds 5 --seed 0 --final --device cuda --image-size 256 --threads 4 --out "$OUT/runs")
run() {  # name, then train.py flags
  local name=$1; shift
  timeout "$BUDGET_S" $PY train.py --model "$name" --run-id "$name-gpu" "${common[@]}" "$@" \
    > "$OUT/logs/$name.log" 2>&1
  echo "$name: exit $? after ${SECONDS}s" >> "$OUT/logs/summary.txt"
}
# Warm-restart cycles; each fold stops after a whole cycle without a better validation Dice
# (--epochs is a cap), so every model is trained to its plateau (summary.json -> plateau).
run smallcovid-net --schedule restarts --cycle-epochs 25 --epochs 3175 --copy-paste 0.5 --lr 2e-3 --model-option decoder_convs=1 &
run unet --schedule restarts --cycle-epochs 20 --epochs 1260 --copy-paste 0.5 --lr 1e-3 &
run segnet --schedule restarts --cycle-epochs 20 --epochs 2540 --lr 2e-3 &
run mask-rcnn --schedule restarts --cycle-epochs 10 --epochs 310 --lr 2e-3 &
wait
for name in smallcovid-net unet segnet mask-rcnn; do
  run_dir="$OUT/runs/$name-gpu"
  [ -f "$run_dir/summary.json" ] || continue
  # SegNet's card averages 8 test-time views (inference only): its folds are scored under them.
  if [ "$name" = segnet ]; then
    $PY scripts/rescore_run.py "$run_dir" --model-option tta=d4 >> "$OUT/logs/ship.log" 2>&1 && run_dir="$run_dir-tta-d4"
  fi
  fp16=(); [ "$name" = smallcovid-net ] || fp16=(--fp16)
  # SmallCovid-Net's five fold models (under 1 MB in fp16) ship for the fold-ensemble option.
  [ "$name" = smallcovid-net ] && fp16+=(--folds --folds-fp16)
  $PY scripts/ship_weights.py "$run_dir" --out "$OUT/weights" "${fp16[@]}" >> "$OUT/logs/ship.log" 2>&1
done
cat "$OUT/logs/summary.txt"
