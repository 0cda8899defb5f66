#!/bin/bash
# helper H, device call 2: dense twin under the FFF recipe, ALBERT ablations (sharing only, factorization only) with a
# same-call unshared baseline, and second seeds of call 1's rows where the warm machine still holds their inputs
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
L=/tmp/hlogs2; M=/tmp/hmodels2; mkdir -p $M $L
gunzip -c .devdata/train.tsv.gz > .devdata/glue/SST-2/train.tsv
ls ../.dev_H/.devmodels /tmp/hmodels 2>&1 | head
FT="--task sst2 --data-dir .devdata/glue --epochs 2 --batch-size 32 --lr 1e-4 --tf32 --logging-steps 500 --no-save"
PT="--hidden-size 256 --layers 8 --heads 4 --fff-depth 8 --fff-trees 1 --vocab-size 8192 --batch-size 256 --num-workers 2 --lr 1e-3 --peak-at 0.5 --budget-minutes 3.0 --seed 0 --sst2-train .devdata/glue/SST-2/train.tsv --tokenizer .devmodels/fff-tok --logging-steps 200"
ft() { name=$1; shift; python3 examples/run_glue.py $FT --output-dir $M/ft-$name "$@" > $L/ft-$name.log 2>&1; echo "done ft-$name rc=$? $(date +%T)"; }
pt() { name=$1; shift; python3 examples/pretrain_mlm.py $PT --output-dir $M/pt-$name "$@" > $L/pt-$name.log 2>&1; echo "done pt-$name rc=$? $(date +%T)"; }
date +%T
ft dense-plain --model .devmodels/dense-mlm --seed 42 &
( pt unshared && ft alb-unshared --model $M/pt-unshared --seed 42 ) &
( pt e128 --embedding-size 128 && ft alb-e128 --model $M/pt-e128 --seed 42 ) &
( pt g2 --hidden-groups 2 && ft alb-g2 --model $M/pt-g2 --seed 42 ) &
if [ -d /tmp/hmodels/pt-g1e128 ]; then
  for n in unshared g2e128 g1e128; do ft call1-$n-seed43 --model /tmp/hmodels/pt-$n --seed 43 & done
fi
if [ -f ../.dev_H/.devmodels/fff-mlm/model.safetensors ]; then
  ft fff-plain-seed43 --model ../.dev_H/.devmodels/fff-mlm --seed 43 &
  ft fff-distill-a09-T2-seed43 --model ../.dev_H/.devmodels/fff-mlm --teacher ../.dev_H/.devmodels/dense-sst2-train-logits.safetensors --distill-alpha 0.9 --distill-temperature 2 --seed 43 &
fi
for i in $(seq ${WATCH:-520}); do [ -z "$(jobs -rp)" ] && break; sleep 1; done
date +%T
python3 - <<'PY' > $L/summary.txt
import json, glob, os
for path in sorted(glob.glob("/tmp/hmodels2/*/eval_results.json")) + sorted(glob.glob("/tmp/hmodels2/*/pretrain_results.json")):
    r = json.load(open(path)); keep = ("accuracy", "parameters", "global_steps", "train_seconds", "teacher", "distill_alpha", "distill_temperature", "eval_mlm_loss_after", "sequences_seen")
    print(os.path.basename(os.path.dirname(path)), {k: r[k] for k in keep if k in r}, r.get("args", {}).get("seed"))
PY
cat $L/summary.txt
for d in $M/*/; do cp $d/*results.json $L/$(basename $d)-results.json 2>/dev/null; done
tar czf $OUT/h2.tgz -C /tmp hlogs2
