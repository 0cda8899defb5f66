#!/bin/bash
# device call 2 (session 3), on the machine still warm from call 1 (its /tmp/m and /tmp/src): spans learned with
# self-distillation from the FFF model fine-tuned without spans, penalty 0.004 (seed 43) and 0.005 (seeds 42, 43)
cd /tmp/src && export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=2
M=/tmp/m
FT="--task sst2 --model $M/fff-mlm --data-dir $M/glue --max-train-samples 67349 --batch-size 32 --lr 1e-4 --logging-steps 500 --no-save --epochs 1 --adaptive-span --span-ramp 16 --span-lr 2e-3 --teacher $M/fff-sst2 --distill-alpha 0.5 --distill-temperature 2"
for r in "0.004 43" "0.005 42" "0.005 43"; do
  set -- $r
  ( timeout 230 python3 examples/run_glue.py $FT --span-penalty $1 --seed $2 --output-dir /tmp/sp-$1-$2 > /tmp/sp-$1-$2.log 2>&1
    echo "p$1 s$2 rc=$?"
    python3 -c "import json,sys; d=json.load(open(sys.argv[1])); a=d['adaptive_span']; print(sys.argv[1], d['accuracy'], 'heads0', a['heads_at_span_0'], 'mean', round(a['mean_span'],2), d['train_seconds'])" /tmp/sp-$1-$2/eval_results.json ) &
done
wait
mkdir -p $OUT; tar czf $OUT/sp.tgz /tmp/sp-*.log /tmp/sp-*/eval_results.json
