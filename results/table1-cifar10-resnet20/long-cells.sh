#!/usr/bin/env bash
# Issue 19: Table 1's ResNet-20 cells fine-tuned for 60 epochs (the committed ones ran 15) from the committed float
# network: 2-bit identity and clipped relu, then 4-bit clipped relu; fp32 cells, lr 0.01 cosine, wd 5e-4, seed 0.
# About 60 x 100-150 s per cell on a quiet 2-core CPU. Resumable: rerun this script (finished cells are kept).
set -eu
cd "$(dirname "$0")/../.." && source .venv/bin/activate  # the repository root
out=runs/t1-r20-60
start=$out/resnet20/seed0/float
if [ ! -f "$start/checkpoint.pt" ]; then  # the sweep's float run, done: the committed network as its checkpoint
    mkdir -p "$start"
    cp results/table1-cifar10-resnet20/seed0/float/{config.json,results.json} "$start/"
    cp results/table1-cifar10-resnet20/seed0/float/model.pt "$start/checkpoint.pt"
fi
rm -f "$out"/resnet20/seed0/*/.lock  # left by a run that was killed; nothing else runs in this folder
sweep="--dataset cifar10 --models resnet20 --epochs-scale 0.25 --cell-epochs 60 --cell-precision fp32 --lr-schedule cosine --weight-decay 5e-4 --precision bf16 --out $out"
stelab reproduce table1 $sweep --bits 2 --stes identity clipped_relu
stelab reproduce table1 $sweep --bits 4 --stes clipped_relu
