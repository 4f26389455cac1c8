#!/usr/bin/env bash
# Issue 23 accuracy runs: ResNet-20 CIFAR-10 from the committed float network, LSQ activations and weights,
# distilled from the same float network. Resumable: rerun this script.
set -u
cd "$(dirname "$0")/../.." && source .venv/bin/activate  # the repository root
F=results/table1-cifar10-resnet20/seed0/float
common="--model resnet20 --dataset cifar10 --init $F --distill $F --ste clipped_relu --learn-alpha --alpha-rule lsq --weight-scale-rule lsq --lr 0.01 --lr-schedule cosine --weight-decay 5e-4 --precision fp32 --no-progress"
run() { local out=$1; shift; if [ -f "$out/checkpoint.pt" ]; then stelab train --resume --out "$out" --no-progress; else stelab train $common "$@" --out "$out"; fi; }
run runs/qat/w4a4-lsq-kd --bits 4 --weight-bits 4 --epochs 8
run runs/qat/w2a2-lsq-kd --bits 2 --weight-bits 2 --epochs 10
# progressive and longer: W2A2 from the W4A4 network above (its learned steps re-fitted to 2 bits), 40 epochs
common=${common/--init $F/--init results/qat-resnet20/w4a4-lsq-kd}
# 2-bit weights on the midrise grid s*{-3,-1,1,3} (uniform's 2 bits are ternary), from W4A4, 20 epochs
run runs/qat/w2a2m-lsq-kd-prog20 --bits 2 --weight-bits 2 --weight-quantizer midrise --epochs 20
run runs/qat/w2a2-lsq-kd-prog40 --bits 2 --weight-bits 2 --epochs 40
