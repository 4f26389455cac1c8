#!/usr/bin/env bash
# Issue 19: Table 1's VGG-11 cells from the committed 40-epoch float network (90.6 % on the first 1,000): 10-epoch
# fp32 cells at 4 bits x identity, relu, clipped relu, seed 0 (about 65 min a cell on a quiet 2-core CPU); the 2-bit
# cells ran with the same flags and `--bits 2` (their summaries are committed beside this script). Resumable: rerun
# this script (finished cells are kept; the cell folders are not committed, so a fresh clone starts them again).
set -eu
cd "$(dirname "$0")/../.." && source .venv/bin/activate  # the repository root
out=runs/t1-vgg11
start=$out/vgg11/seed0/float
if [ ! -f "$start/checkpoint.pt" ]; then  # the sweep's float run, done: the committed network as its checkpoint
    mkdir -p "$start"
    cp results/table1-cifar10-vgg11-40ep/seed0/float/{config.json,results.json} "$start/"
    cp results/table1-cifar10-vgg11-40ep/seed0/float/model.pt "$start/checkpoint.pt"
fi
rm -f "$out"/vgg11/seed0/*/.lock  # left by a run that was killed; nothing else runs in this folder
stelab reproduce table1 --dataset cifar10 --models vgg11 --bits 4 --stes identity relu clipped_relu --epochs-scale 0.2 --warmup-epochs 2 --cell-epochs 10 --cell-precision fp32 --lr-schedule cosine --weight-decay 5e-4 --precision bf16 --out $out
