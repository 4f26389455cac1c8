#!/bin/bash
# The 2-bit learning-rate probe of REPRODUCTION.md: 5 epochs from the seed-0 float ResNet-20 at lr 1e-3 and 1e-4.
float=runs/table1-cifar10-resnet20/resnet20/seed0/float   # or results/table1-cifar10-resnet20/seed0/float/model.pt
for lr in 1e-3 1e-4; do for ste in identity relu; do
  stelab train --model resnet20 --dataset cifar10 --bits 2 --ste $ste --init $float --epochs 5 \
    --lr $lr --lr-schedule cosine --weight-decay 5e-4 --precision bf16 --out runs/c10-lr-probe/2bit-$ste-lr$lr
done; done
