#!/usr/bin/env bash
# Issue 19: Table 1's VGG-11 cells from the committed 40-epoch float network (90.6 % on the first 1,000): 10-epoch
# fp32 cells at 2 and 4 bits x identity, relu, clipped relu, seed 0 (about 65-80 min a cell on a quiet 2-core CPU).
# Resumable: rerun this script. The finished cells committed beside it (summaries, no weights) are restored and
# skipped, so the sweep trains only the missing ones and then writes the report of all of them.
set -eu
cd "$(dirname "$0")/../.." && source .venv/bin/activate && source scripts/_restore.sh  # the repository root
here=results/table1-cifar10-vgg11-40ep/seed0
out=runs/t1-vgg11
restore_float $here/float $out/vgg11/seed0/float
restore_cells $here $out/vgg11/seed0
rm -f "$out"/vgg11/seed0/*/.lock  # left by a run that was killed; nothing else runs in this folder
stelab reproduce table1 --dataset cifar10 --models vgg11 --bits 2 4 --stes identity relu clipped_relu --epochs-scale 0.2 --warmup-epochs 2 --cell-epochs 10 --cell-precision fp32 --lr-schedule cosine --weight-decay 5e-4 --precision bf16 --out $out
