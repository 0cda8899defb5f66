#!/bin/bash
# helper H, device call 1: distillation rows + ALBERT pretraining/fine-tuning, all concurrent on one H100
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
L=/tmp/hlogs; M=/tmp/hmodels; mkdir -p $M $L
gunzip -c .devdata/train.tsv.gz > .devdata/glue/SST-2/train.tsv
nvidia-smi --query-gpu=name,memory.used --format=csv,noheader
TL=.devmodels/dense-sst2-train-logits.safetensors
FT="--task sst2 --data-dir .devdata/glue --epochs 2 --batch-size 32 --lr 1e-4 --seed 42 --tf32 --logging-steps 500 --no-save"
PT="--hidden-size 256 --layers 8 --heads 4 --fff-depth 8 --fff-trees 1 --vocab-size 8192 --batch-size 256 --num-workers 2 --lr 1e-3 --peak-at 0.5 --budget-minutes ${BUDGET:-3.0} --seed 0 --sst2-train .devdata/glue/SST-2/train.tsv --tokenizer .devmodels/fff-mlm --logging-steps 200"
ft() { name=$1; shift; python3 examples/run_glue.py $FT --output-dir $M/ft-$name "$@" > $L/ft-$name.log 2>&1; echo "done ft-$name rc=$? $(date +%T)"; }
pt() { name=$1; shift; python3 examples/pretrain_mlm.py $PT --output-dir $M/pt-$name "$@" > $L/pt-$name.log 2>&1; echo "done pt-$name rc=$? $(date +%T)"; }
date +%T
ft fff-plain --model .devmodels/fff-mlm &
ft fff-distill-a09-T2 --model .devmodels/fff-mlm --teacher $TL --distill-alpha 0.9 --distill-temperature 2 &
ft fff-distill-a09-T1 --model .devmodels/fff-mlm --teacher $TL --distill-alpha 0.9 --distill-temperature 1 &
ft fff-distill-a05-T2 --model .devmodels/fff-mlm --teacher $TL --distill-alpha 0.5 --distill-temperature 2 &
( pt unshared && ft alb-unshared --model $M/pt-unshared ) &
( pt g2e128 --hidden-groups 2 --embedding-size 128 && ft alb-g2e128 --model $M/pt-g2e128 ) &
( pt g1e128 --hidden-groups 1 --embedding-size 128 && ft alb-g1e128 --model $M/pt-g1e128 ) &
for i in $(seq ${WATCH:-515}); do [ -z "$(jobs -rp)" ] && break; sleep 1; done
date +%T
python3 - <<'PY' > $L/summary.txt
import json, glob, os
for path in sorted(glob.glob("/tmp/hmodels/*/eval_results.json")) + sorted(glob.glob("/tmp/hmodels/*/pretrain_results.json")):
    r = json.load(open(path)); keep = ("accuracy", "parameters", "global_steps", "train_seconds", "teacher", "distill_alpha", "distill_temperature", "teacher_train_accuracy", "eval_mlm_loss_after", "sequences_seen")
    print(os.path.basename(os.path.dirname(path)), {k: r[k] for k in keep if k in r})
PY
cat $L/summary.txt
for d in $M/*/; do cp $d/*results.json $L/$(basename $d)-results.json 2>/dev/null; done
tar czf $OUT/h1.tgz -C /tmp hlogs
for f in $L/*.log; do echo "== $f"; grep -E 'Error|error:' $f | head -3; done
