#!/bin/bash
# device call 3: a second seed of the pruning/distillation rows, distillation at T=4, a span row without teacher,
# the CUDA tests of adaptive span / modeling, then the GPU span benchmark alone on the learned spans
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=1
D=.dev_r; M=$D/models; L=/tmp/logs3; mkdir -p $L
nvidia-smi --query-gpu=name --format=csv,noheader | tee $L/gpu.txt; date +%T | tee -a $L/gpu.txt
TL=$M/dense-sst2-train-logits.safetensors
FT="--task sst2 --model $M/fff-mlm --data-dir $D/glue --epochs 1 --max-train-samples 67349 --batch-size 32 --lr 1e-4 --logging-steps 200 --no-save"
ft() { name=$1; shift; timeout 330 python3 examples/run_glue.py $FT --output-dir /tmp/ft-$name "$@" > $L/ft-$name.log 2>&1; echo "done ft-$name rc=$? $(date +%T)"; cp /tmp/ft-$name/eval_results.json $L/ft-$name.json 2>/dev/null; }
ft distill-a09-T2-s43 --seed 43 --teacher $TL --distill-alpha 0.9 --distill-temperature 2 &
ft distill-a09-T4-s42 --seed 42 --teacher $TL --distill-alpha 0.9 --distill-temperature 4 &
ft span-p004-s42 --seed 42 --adaptive-span --span-ramp 16 --span-lr 2e-3 --span-penalty 0.004 &
ONLY="unpruned movement-50 movement-80 magnitude-50 magnitude-80 embeddings-magnitude-95 embeddings-magnitude-95-per-row" \
  EXTRA_ARGS="--seed 43" ROW_TIMEOUT=330 bash benchmarks/pruning_sst2.sh $M/fff-mlm $D/glue /tmp/prune 67349 1 > $L/pruning.txt 2>&1 &
( python3 -m pytest -p no:faulthandler -q tests/test_adaptive_span.py -k "cuda" > $L/cuda_tests.log 2>&1; echo "rc=$?" >> $L/cuda_tests.log ) &
for i in $(seq 370); do [ -z "$(jobs -rp)" ] && break; sleep 1; done
date +%T | tee -a $L/gpu.txt
[ -f $L/ft-span-p004-s42.json ] && timeout 150 python3 benchmarks/bench_adaptive_span.py --model $M/fff-mlm --device cuda \
   --spans-from $L/ft-span-p004-s42.json --json $L/span_bench_cuda.json > $L/span_bench_cuda.txt 2>&1
date +%T | tee -a $L/gpu.txt
cp -r /tmp/prune/logs $L/prune-logs 2>/dev/null; cp /tmp/prune/pruning_sst2.json $L/ 2>/dev/null
tar czf $OUT/logs3.tgz -C /tmp logs3
tail -10 $L/pruning.txt; tail -3 $L/cuda_tests.log; cat $L/span_bench_cuda.txt | tail -30
for f in $L/ft-*.json; do echo $f; grep -E '"accuracy"' $f | head -3; done
