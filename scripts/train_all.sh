#!/usr/bin/env bash
# Train the four shipped models: 5-fold CV on the same seeded splits (seed 0), then a final
# all-data model per architecture (the commands recorded in each weights/<name>.json card).
# Usage: bash scripts/train_all.sh [DATA]    Logs: runs/<model>-cv.log
# Budgets fit a 2-core CPU (about 1.5 hours in all on a 2-core AMD EPYC); the three larger
# models train at 160 px, SmallCovid-Net at 192 px (one conv per decoder block). U-Net trains
# in bf16 (1.7x faster, spent on twice the epochs); SegNet stays fp32 (bf16 cost it 0.05
# cross-validated Dice); SmallCovid-Net's shipped weights are fp32 (bf16 measured within noise).
set -eu
cd "$(dirname "$0")/.."
DATA=${1:-${SMALLCOVID_DATA_DIR:?give the labeled folder as the first argument or set SMALLCOVID_DATA_DIR}}
PY=${PYTHON:-.venv/bin/python}
mkdir -p runs
common=(--data "$DATA" --folds 5 --seed 0 --final --threads 2)
if [ "${SKIP_SCN:-0}" != 1 ]; then
  $PY train.py --model smallcovid-net --image-size 192 --epochs 100 --lr 2e-3 --model-option decoder_convs=1 --run-id smallcovid-net-cv "${common[@]}" > runs/smallcovid-net-cv.log 2>&1
fi
$PY train.py --model segnet --image-size 160 --epochs 80 --lr 2e-3 --run-id segnet-cv "${common[@]}" > runs/segnet-cv.log 2>&1
$PY train.py --model unet --image-size 160 --epochs 80 --lr 1e-3 --precision bf16 --run-id unet-cv "${common[@]}" > runs/unet-cv.log 2>&1
$PY train.py --model mask-rcnn --image-size 160 --epochs 30 --lr 2e-3 --run-id mask-rcnn-cv "${common[@]}" > runs/mask-rcnn-cv.log 2>&1
