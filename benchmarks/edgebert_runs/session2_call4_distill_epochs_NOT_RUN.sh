#!/bin/bash
# device call 4: distillation from the dense twin's logits over 2 and 3 epochs (seeds 42, 43) beside no-teacher rows
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=2
D=.dev_r; M=$D/models; L=/tmp/logs4; mkdir -p $L
nvidia-smi --query-gpu=name --format=csv,noheader | tee $L/gpu.txt; date +%T | tee -a $L/gpu.txt
TL=$M/dense-sst2-train-logits.safetensors
FT="--task sst2 --model $M/fff-mlm --data-dir $D/glue --max-train-samples 67349 --batch-size 32 --lr 1e-4 --logging-steps 500 --no-save"
ft() { name=$1; shift; timeout 165 python3 examples/run_glue.py $FT --output-dir /tmp/ft-$name "$@" > $L/ft-$name.log 2>&1; echo "done ft-$name rc=$? $(date +%T)"; cp /tmp/ft-$name/eval_results.json $L/ft-$name.json 2>/dev/null; }
for s in 42 43; do
  ft distill-a09-T2-e2-s$s --epochs 2 --seed $s --teacher $TL --distill-alpha 0.9 --distill-temperature 2 &
  ft plain-e2-s$s --epochs 2 --seed $s &
done
wait
date +%T | tee -a $L/gpu.txt
tar czf $OUT/logs4.tgz -C /tmp logs4
for f in $L/ft-*.json; do echo "$f $(grep -E '"accuracy"' $f)"; done
