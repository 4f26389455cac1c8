#!/usr/bin/env bash
# Issue 23 accuracy runs: ResNet-20 CIFAR-10 from the committed float network, LSQ activations and weights,
# distilled from the same float network. Resumable: rerun this script. With run names as arguments
# (`bash results/qat-resnet20/commands.sh a4-pact w2a2-pact-kd-ci-bn`) it runs only those, in the order below;
# without, all of them (a fresh clone has no `runs/qat`, so it starts every run again).
set -u
names=" $* "
for name in "$@"; do  # a misspelt name would otherwise run nothing, silently
    grep -qE "^(run|ab|only) runs/qat/$name( |\$)" "$0" || { echo "commands.sh: no run named '$name' in $0" >&2; exit 2; }
done
wanted() { [ "$names" = "  " ] || [[ $names == *" $(basename "$1") "* ]]; }
cd "$(dirname "$0")/../.." && source .venv/bin/activate  # the repository root
F=results/table1-cifar10-resnet20/seed0/float
common="--model resnet20 --dataset cifar10 --init $F --distill $F --ste clipped_relu --learn-alpha --alpha-rule lsq --weight-scale-rule lsq --lr 0.01 --lr-schedule cosine --weight-decay 5e-4 --precision fp32 --no-progress"
run() { local out=$1; shift; wanted "$out" || return 0; if [ -f "$out/checkpoint.pt" ]; then stelab train --resume --out "$out" --no-progress; else stelab train $common "$@" --out "$out"; fi; }
run runs/qat/w4a4-lsq-kd --bits 4 --weight-bits 4 --epochs 8
run runs/qat/w2a2-lsq-kd --bits 2 --weight-bits 2 --epochs 10
# progressive and longer: W2A2 from the W4A4 network above (its learned steps re-fitted to 2 bits)
common=${common/--init $F/--init results/qat-resnet20/w4a4-lsq-kd}
# 2-bit weights on the midrise grid s*{-3,-1,1,3} (uniform's 2 bits are ternary), from W4A4, 20 epochs
run runs/qat/w2a2m-lsq-kd-prog20 --bits 2 --weight-bits 2 --weight-quantizer midrise --epochs 20
# conv_input placement: each conv's input quantized, the residual stream float (docs/data-and-models.md)
common=${common/--init results\/qat-resnet20\/w4a4-lsq-kd/--init $F}
run runs/qat/w2a2-lsq-kd-ci --bits 2 --weight-bits 2 --epochs 10 --act-placement conv_input
run runs/qat/w4a4-lsq-kd-ci --bits 4 --weight-bits 4 --epochs 8 --act-placement conv_input
# APoT's 2-bit rate and decay (0.04, 3e-5; the later flags win)
run runs/qat/w2a2-lsq-kd-ci-lr04 --bits 2 --weight-bits 2 --epochs 10 --act-placement conv_input --lr 0.04 --weight-decay 3e-5
# affine batch norms before the quantizers (scale 1, shift 0 at the start)
run runs/qat/w2a2-lsq-kd-ci-bn --bits 2 --weight-bits 2 --epochs 10 --act-placement conv_input --bn-affine
# progressive at the conv inputs: W2A2 (midrise weights, affine batch norms) from the conv-input W4A4 network, 20 epochs
common=${common/--init $F/--init results/qat-resnet20/w4a4-lsq-kd-ci}
run runs/qat/w2a2m-lsq-kd-ci-bn-prog20 --bits 2 --weight-bits 2 --weight-quantizer midrise --epochs 20 --act-placement conv_input --bn-affine
# one ingredient at a time, against w2a2-lsq-kd-ci-bn (conv inputs, affine BNs, uniform weights, 10 epochs from F):
# no distillation; learned steps frozen at their initial values (rate 0); midrise weights; the default (max) weight
# scale instead of LSQ steps; pact instead of lsq for the activation resolutions
abl="--model resnet20 --dataset cifar10 --init $F --ste clipped_relu --lr 0.01 --lr-schedule cosine --weight-decay 5e-4 --precision fp32 --no-progress --bits 2 --weight-bits 2 --epochs 10 --act-placement conv_input --bn-affine"
ab() { local out=$1; shift; wanted "$out" || return 0; if [ -f "$out/checkpoint.pt" ]; then stelab train --resume --out "$out" --no-progress; else stelab train $abl "$@" --out "$out"; fi; }
ab runs/qat/w2a2-lsq-ci-bn --learn-alpha --alpha-rule lsq --weight-scale-rule lsq
ab runs/qat/w2a2-lsq-kd-ci-bn-frozen --distill $F --learn-alpha --alpha-rule lsq --weight-scale-rule lsq --step-lr-scale 0
ab runs/qat/w2a2m-lsq-kd-ci-bn --distill $F --learn-alpha --alpha-rule lsq --weight-scale-rule lsq --weight-quantizer midrise
ab runs/qat/w2a2-lsq-kd-ci-bn-wmax --distill $F --learn-alpha --alpha-rule lsq
ab runs/qat/w2a2-pact-kd-ci-bn --distill $F --learn-alpha --alpha-rule pact --weight-scale-rule lsq
# the longer schedule: the midrise run above for 40 epochs instead of 10 (the later --epochs wins)
ab runs/qat/w2a2m-lsq-kd-ci-bn-e40 --distill $F --learn-alpha --alpha-rule lsq --weight-scale-rule lsq --weight-quantizer midrise --epochs 40
# lower weight decay at 2 bits: the midrise run above (10 epochs) with wd 1e-4, the public LSQ reproduction's
ab runs/qat/w2a2m-lsq-kd-ci-bn-wd1e4 --distill $F --learn-alpha --alpha-rule lsq --weight-scale-rule lsq --weight-quantizer midrise --weight-decay 1e-4
# APoT's 2-bit rate, 0.04, with the learned steps at a tenth of it (their rate 0.004): the midrise run above
ab runs/qat/w2a2m-lsq-kd-ci-bn-lr04s --distill $F --learn-alpha --alpha-rule lsq --weight-scale-rule lsq --weight-quantizer midrise --lr 0.04 --step-lr-scale 0.1
# activation-only cells with a learned resolution, beside Table 1's fixed (Lloyd) cells: the same float start,
# STE, schedule and seed as `stelab reproduce table1` gave them (15 epochs), no distillation; fp32 where those ran
# bf16 (emulated on this CPU, about 2x slower)
cell="--model resnet20 --dataset cifar10 --init $F --ste clipped_relu --learn-alpha --epochs 15 --lr-schedule cosine --weight-decay 5e-4 --precision fp32 --seed 0 --no-progress"
only() { local out=$1; shift; wanted "$out" || return 0; if [ -f "$out/checkpoint.pt" ]; then stelab train --resume --out "$out" --no-progress; else stelab train $cell "$@" --out "$out"; fi; }
only runs/qat/a2-lsq --bits 2 --alpha-rule lsq
only runs/qat/a4-lsq --bits 4 --alpha-rule lsq
only runs/qat/a2-pact --bits 2 --alpha-rule pact
only runs/qat/a4-pact --bits 4 --alpha-rule pact
# summary.json: each finished run's accuracy on the exact first 1,000 test images and on all 10,000
python - <<'PY'
import json
from pathlib import Path

from stelab.experiments.reproduce.table1 import EXACT_TEST_IMAGES, subset_accuracy
from stelab.io import read_json, write_json

path = Path("results/qat-resnet20/summary.json")
summary = read_json(path) if path.is_file() else {}
for run in sorted(Path("runs/qat").iterdir()):
    r = read_json(run / "results.json") if (run / "results.json").is_file() else {}
    if r.get("status") == "finished":
        summary[run.name] = {"test_acc_first1000": subset_accuracy(run, EXACT_TEST_IMAGES), "test_acc": r["test_acc"],
                             "epochs": r["epochs_done"], "wall_time_s": r["wall_time_s"],
                             "train_objective": r["train_loss"], "status": r["status"]}
write_json(path, summary)
print(json.dumps(summary, indent=1))
PY
