#!/usr/bin/env bash
# Issue 19: Table 1's ResNet-20 cells fine-tuned for 60 epochs (the committed ones ran 15) from the committed float
# network, one cell at a time in this order: 2-bit clipped relu, 4-bit clipped relu, 2-bit identity; fp32 cells, lr
# 0.01 cosine, wd 5e-4, seed 0. About 60 x 100-150 s per cell on a quiet 2-core CPU. Resumable: rerun this script.
# Cells committed under long60/ are restored first: a finished one (summary) is skipped, an unfinished one (with its
# checkpoint.pt) continues from its last epoch. To stop after the current cell: kill -TERM this script's bash.
set -eu
cd "$(dirname "$0")/../.." && source .venv/bin/activate && source scripts/_restore.sh  # the repository root
here=results/table1-cifar10-resnet20
out=runs/t1-r20-60
restore_float $here/seed0/float $out/resnet20/seed0/float
[ -d $here/long60/seed0 ] && restore_cells $here/long60/seed0 $out/resnet20/seed0
rm -f "$out"/resnet20/seed0/*/.lock  # left by a run that was killed; nothing else runs in this folder
sweep="--dataset cifar10 --models resnet20 --epochs-scale 0.25 --cell-epochs 60 --cell-precision fp32 --lr-schedule cosine --weight-decay 5e-4 --precision bf16 --out $out"
stelab reproduce table1 $sweep --bits 2 --stes clipped_relu
stelab reproduce table1 $sweep --bits 4 --stes clipped_relu
stelab reproduce table1 $sweep --bits 2 --stes identity clipped_relu  # the identity cell; report.md: both 2-bit cells
