#!/usr/bin/env bash
# Regenerates every shipped checkpoint in checkpoints/ from the offline data in ../shared/data
# (or DATA_ROOT). Each line is one `python -m aelib train` command; weights are stored as float16
# (--half) to keep the folder small, and each checkpoint records its history and test metrics
# measured on the stored weights.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
R=${DATA_ROOT:-../shared/data}
OUT=${OUT:-checkpoints}
T="$PY -m aelib train --data-root $R --no-download --quiet --half --threads ${THREADS:-1}"

for ds in mnist fashion-mnist; do
  # The MNIST copy here is an 8,000-image subset: more epochs give it a similar number of steps
  # (the Keras recipe: 90 x 27 batches of 300 = the 2,400 steps of 12 epochs over 60,000 images).
  if [ "$ds" = mnist ]; then E=30; KE=90; title=MNIST; else E=10; KE=12; title=Fashion-MNIST; fi
  $T --dataset $ds --model mnist_keras --epochs $KE --batch-size 300 --lr 0.0015 \
     --name "$title · Keras recipe FCN (z=48)" --out $OUT/$ds-keras
  $T --dataset $ds --model fcn --epochs $E --batch-size 64 --lr 0.002 --schedule onecycle \
     --name "$title · FCN AE (z=32)" --out $OUT/$ds-fcn
  $T --dataset $ds --model conv --epochs $E --batch-size 64 --lr 0.003 --schedule onecycle \
     --name "$title · conv AE (z=32)" --out $OUT/$ds-conv
  $T --dataset $ds --model vae --epochs $E --batch-size 64 --lr 0.002 --schedule onecycle \
     --name "$title · VAE (z=16)" --out $OUT/$ds-vae
  $T --dataset $ds --model conv --epochs $E --batch-size 64 --lr 0.003 --schedule onecycle \
     --noise gaussian --noise-level 0.3 --name "$title · denoising conv AE (σ=0.3)" --out $OUT/$ds-conv-denoise
done
ls -la $OUT
