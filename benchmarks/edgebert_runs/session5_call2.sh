#!/bin/bash
# device call 2 (session 5): (1) the fused adaptive-span block on the GPU with the penalty-0.0055 spans of session 4
# (mean form, the accuracy rows; never timed on a GPU), bf16, host-launched, interleaved; (2) the self-teacher again,
# then the mean-form penalty at 0.0065 and 0.0075 over seeds 42-45 (more heads at span 0, for the CPU target).
# Run from the repository root with .dev_r/{pack.tar.xz,src.tar} and .dev_r/spans5/*.json carried.
START=$(date +%s); M=/tmp/m; L=/tmp/logs11; mkdir -p $M $L
tar xJf .dev_r/pack.tar.xz -C $M
SPANS=$PWD/.dev_r/spans5
if [ -f .dev_r/src.tar ]; then mkdir -p /tmp/src && tar xf .dev_r/src.tar -C /tmp/src && cd /tmp/src; fi
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=1
cp modeling_ultrafastbert/*.py $M/fff-mlm/
left() { echo $(( ${END_AT:-585} - ($(date +%s) - START) )); }
nvidia-smi --query-gpu=name --format=csv,noheader | tee $L/gpu.txt; date +%T | tee -a $L/gpu.txt
for f in $SPANS/*.json; do
  n=$(basename $f .json)
  timeout 60 python3 benchmarks/bench_adaptive_span.py --model $M/fff-mlm --device cuda --spans-from $f --repeats 150 --json $L/bench-$n.json > $L/bench-$n.log 2>&1
  echo "== $n rc=$?"; grep -E "median|whole" $L/bench-$n.log
done
date +%T | tee -a $L/gpu.txt
GL="--task sst2 --data-dir $M/glue --max-train-samples 67349 --batch-size 32 --lr 1e-4 --logging-steps 500"
ft() { name=$1; shift; timeout $(left) python3 examples/run_glue.py $GL --output-dir /tmp/ft-$name "$@" > $L/ft-$name.log 2>&1; echo "done ft-$name rc=$? $(date +%T)"; cp /tmp/ft-$name/eval_results.json $L/ft-$name.json 2>/dev/null; }
timeout $(left) python3 examples/run_glue.py $GL --model $M/fff-mlm --epochs 1 --seed 42 --output-dir $M/fff-sst2 > $L/fff-self.log 2>&1; echo "fff-sst2 rc=$? $(date +%T)"; cp $M/fff-sst2/eval_results.json $L/fff-self.json
for c in 0.0065 0.0075; do
  SPAN="--adaptive-span --span-ramp 16 --span-lr 2e-3 --span-penalty $c --teacher $M/fff-sst2 --distill-alpha 0.5 --distill-temperature 2"
  for s in 42 43 44 45; do ft mean$c-s$s --model $M/fff-mlm --epochs 1 --seed $s --no-save $SPAN & done
done
wait
date +%T | tee -a $L/gpu.txt
tar czf $OUT/logs11.tgz -C /tmp logs11
grep -h '"accuracy"' $L/fff-self.json
for f in $L/ft-mean*.json; do python3 -c "import json,sys; d=json.load(open(sys.argv[1])); a=d['adaptive_span']; print(sys.argv[1].split('/')[-1], 'acc', round(d['accuracy'],4), 'heads at 0:', a['heads_at_span_0'], 'mean span', round(a['mean_span'],2), 'heads on per layer', [sum(x>0 for x in l) for l in a['spans_per_layer']])" $f; done
for f in $L/ft-*.log; do [ -f ${f%.log}.json ] || { echo "== $f (no result)"; tail -3 $f; }; done
