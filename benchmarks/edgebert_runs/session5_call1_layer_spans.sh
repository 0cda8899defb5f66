#!/bin/bash
# device call 1 (session 5): adaptive spans learned with the layer-grouped penalty (--span-penalty-form layer-rms),
# coefficients 0.0055 and 0.0045, seeds 42-45, with self-distillation from the same model fine-tuned without spans
# (seed 42), next to fresh no-span controls of seeds 42-45 (issue 11). Rows run as concurrent processes on one GPU.
# Run from the repository root with .dev_r/{pack.tar.xz,src.tar} carried.
START=$(date +%s); M=/tmp/m; L=/tmp/logs9; mkdir -p $M $L
tar xJf .dev_r/pack.tar.xz -C $M
if [ -f .dev_r/src.tar ]; then mkdir -p /tmp/src && tar xf .dev_r/src.tar -C /tmp/src && cd /tmp/src; fi
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=1
cp modeling_ultrafastbert/*.py $M/fff-mlm/
nvidia-smi --query-gpu=name --format=csv,noheader | tee $L/gpu.txt; date +%T | tee -a $L/gpu.txt
left() { echo $(( ${END_AT:-590} - ($(date +%s) - START) )); }
GL="--task sst2 --data-dir $M/glue --max-train-samples 67349 --batch-size 32 --lr 1e-4 --logging-steps 500"
ft() { name=$1; shift; timeout $(left) python3 examples/run_glue.py $GL --output-dir /tmp/ft-$name "$@" > $L/ft-$name.log 2>&1; echo "done ft-$name rc=$? $(date +%T)"; cp /tmp/ft-$name/eval_results.json $L/ft-$name.json 2>/dev/null; }
# the no-span controls; seed 42's is the self-teacher
( timeout $(left) python3 examples/run_glue.py $GL --model $M/fff-mlm --epochs 1 --seed 42 --output-dir $M/fff-sst2 > $L/ft-nospan-s42.log 2>&1; echo "fff-sst2 rc=$? $(date +%T)"; cp $M/fff-sst2/eval_results.json $L/ft-nospan-s42.json ) &
for s in 43 44 45; do ft nospan-s$s --model $M/fff-mlm --epochs 1 --seed $s --no-save & done
wait
date +%T | tee -a $L/gpu.txt
for c in 0.0055 0.0045; do
  SPAN="--adaptive-span --span-ramp 16 --span-lr 2e-3 --span-penalty $c --span-penalty-form layer-rms --teacher $M/fff-sst2 --distill-alpha 0.5 --distill-temperature 2"
  for s in 42 43 44 45; do ft lrms$c-s$s --model $M/fff-mlm --epochs 1 --seed $s --no-save $SPAN & done
done
wait
date +%T | tee -a $L/gpu.txt
tar czf $OUT/logs9.tgz -C /tmp logs9
for f in $L/ft-lrms*.json; do python3 -c "import json,sys; d=json.load(open(sys.argv[1])); a=d['adaptive_span']; print(sys.argv[1].split('/')[-1], 'acc', round(d['accuracy'],4), 'heads at 0:', a['heads_at_span_0'], 'mean span', round(a['mean_span'],2), 'heads on per layer', [sum(x>0 for x in l) for l in a['spans_per_layer']])" $f; done
for f in $L/ft-nospan*.json; do echo "$(basename $f) $(grep -hE '"accuracy"' $f)"; done
for f in $L/ft-*.log; do [ -f ${f%.log}.json ] || { echo "== $f (no result)"; tail -3 $f; }; done
