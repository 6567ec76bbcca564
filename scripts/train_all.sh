#!/usr/bin/env bash
# Train the four shipped models: 5-fold CV on the same seeded splits (seed 0), then a final
# all-data model per architecture. Usage: bash scripts/train_all.sh [DATA]
# Logs: runs/<model>-cv.log. Epoch budgets fit a 2-core CPU in about 1.5 hours: Mask R-CNN
# runs beside SegNet -> U-Net, one thread each (two 1-thread runs beat one 2-thread run here).
set -u
cd "$(dirname "$0")/.."
DATA=${1:-../shared/data/covid-semiseg/train}
PY=${PYTHON:-.venv/bin/python}
common=(--data "$DATA" --folds 5 --image-size 192 --seed 0 --final)
if [ "${SKIP_SCN:-0}" != 1 ]; then
  $PY train.py --model smallcovid-net --epochs 80 --lr 2e-3 --run-id smallcovid-net-cv --threads 2 "${common[@]}" > runs/smallcovid-net-cv.log 2>&1
fi
$PY train.py --model mask-rcnn --epochs 18 --lr 5e-4 --run-id mask-rcnn-cv --threads 1 "${common[@]}" > runs/mask-rcnn-cv.log 2>&1 &
$PY train.py --model segnet --epochs 25 --lr 2e-3 --run-id segnet-cv --threads 1 "${common[@]}" > runs/segnet-cv.log 2>&1
$PY train.py --model unet --epochs 25 --lr 1e-3 --run-id unet-cv --threads 1 "${common[@]}" > runs/unet-cv.log 2>&1
wait
