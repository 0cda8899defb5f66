#!/bin/bash
# device call 2: every row is the same 1-epoch SST-2 fine-tune of the 8-layer fff-mlm (bf16-stored start, fp32 training),
# all concurrent: pruning rows (benchmarks/pruning_sst2.sh), distillation from the dense twin's logits, span + teacher
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=1
D=.dev_r; M=$D/models; L=/tmp/logs2; mkdir -p $L
nvidia-smi --query-gpu=name --format=csv,noheader | tee $L/gpu.txt; date +%T | tee -a $L/gpu.txt
TL=$M/dense-sst2-train-logits.safetensors
FT="--task sst2 --model $M/fff-mlm --data-dir $D/glue --epochs 1 --max-train-samples 67349 --batch-size 32 --lr 1e-4 --seed 42 --logging-steps 200 --no-save"
ft() { name=$1; shift; timeout ${ROW_TIMEOUT:-545} python3 examples/run_glue.py $FT --output-dir /tmp/ft-$name "$@" > $L/ft-$name.log 2>&1; echo "done ft-$name rc=$? $(date +%T)"; cp /tmp/ft-$name/eval_results.json $L/ft-$name.json 2>/dev/null; }
ft distill-a09-T2 --teacher $TL --distill-alpha 0.9 --distill-temperature 2 &
ft distill-a05-T2 --teacher $TL --distill-alpha 0.5 --distill-temperature 2 &
ft span-p004-teacher-a05 --adaptive-span --span-ramp 16 --span-lr 2e-3 --span-penalty 0.004 --teacher $TL --distill-alpha 0.5 &
ONLY="unpruned movement-50 movement-80 magnitude-50 magnitude-80 embeddings-magnitude-95 embeddings-magnitude-95-per-row" \
  ROW_TIMEOUT=${ROW_TIMEOUT:-545} bash benchmarks/pruning_sst2.sh $M/fff-mlm $D/glue /tmp/prune 67349 1 > $L/pruning.txt 2>&1 &
for i in $(seq 580); do [ -z "$(jobs -rp)" ] && break; sleep 1; done
date +%T | tee -a $L/gpu.txt
cp -r /tmp/prune/logs $L/prune-logs 2>/dev/null; cp /tmp/prune/pruning_sst2.json $L/ 2>/dev/null
tar czf $OUT/logs2.tgz -C /tmp logs2
tail -12 $L/pruning.txt; for f in $L/ft-*.json; do echo $f; grep -E '"accuracy"|train_seconds' $f | head -3; done
