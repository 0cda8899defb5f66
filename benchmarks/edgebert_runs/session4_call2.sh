#!/bin/bash
# device call 2 (session 4): the fused adaptive-span kernel on CUDA (tests, then the attention-block benchmark with
# the penalty-0.005 seed-44 spans); penalty 0.0055 spans over four seeds (issue 11); the teacher-initialised
# distilled student (`kdinit`) again, fine-tuned with seeds 44 and 45 and once without a teacher (issue 12).
# Run from the repository root with .dev_r/{pack.tar.xz,src.tar,spans-s44.json} carried.
START=$(date +%s); M=/tmp/m; L=/tmp/logs7; mkdir -p $M $L
tar xJf .dev_r/pack.tar.xz -C $M
cp .dev_r/spans-s44.json $M/
if [ -f .dev_r/src.tar ]; then mkdir -p /tmp/src && tar xf .dev_r/src.tar -C /tmp/src && cd /tmp/src; fi
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=1
for m in fff-mlm dense-mlm; do cp modeling_ultrafastbert/*.py $M/$m/; done
nvidia-smi --query-gpu=name --format=csv,noheader | tee $L/gpu.txt; date +%T | tee -a $L/gpu.txt
left() { echo $(( ${END_AT:-585} - ($(date +%s) - START) )); }
# first, alone on the GPU: the fused kernel's tests and its benchmark
timeout 150 python3 -m pytest -p no:faulthandler -q tests/test_adaptive_span.py -k "cuda" > $L/span_tests.log 2>&1; echo "rc=$?" >> $L/span_tests.log
timeout 120 python3 benchmarks/bench_adaptive_span.py --model $M/fff-mlm --device cuda --spans-from $M/spans-s44.json --repeats 200 --json $L/bench_span.json > $L/bench_span.log 2>&1; echo "bench rc=$?" >> $L/bench_span.log
date +%T | tee -a $L/gpu.txt
GL="--task sst2 --data-dir $M/glue --max-train-samples 67349 --batch-size 32 --lr 1e-4 --logging-steps 500"
ft() { name=$1; shift; timeout $(left) python3 examples/run_glue.py $GL --output-dir /tmp/ft-$name "$@" > $L/ft-$name.log 2>&1; echo "done ft-$name rc=$? $(date +%T)"; cp /tmp/ft-$name/eval_results.json $L/ft-$name.json 2>/dev/null; }
waitfor() { while [ ! -f $1 ] && [ $(left) -gt 0 ]; do sleep 2; done; }
KD="--distill-alpha 0.9 --distill-temperature 2"
( ft teacher --model $M/dense-mlm --epochs 2 --seed 42 --tf32 --fff-inference dense --output-dir $M/dense-sst2; cp $M/dense-sst2/eval_results.json $L/ft-teacher.json 2>/dev/null; touch $M/teacher.done ) &
( timeout $(left) python3 examples/run_glue.py $GL --model $M/fff-mlm --epochs 1 --seed 42 --output-dir $M/fff-sst2 > $L/fff-self.log 2>&1; echo "fff-sst2 rc=$? $(date +%T)"; cp $M/fff-sst2/eval_results.json $L/fff-self.json; touch $M/self.done ) &
( timeout $(left) python3 examples/pretrain_mlm.py --hidden-size 256 --layers 8 --heads 4 --fff-depth 8 --fff-trees 1 \
    --sst2-train $M/glue/SST-2/train.tsv --batch-size 256 --num-workers 2 --logging-steps 250 --seed 0 --teacher $M/dense-mlm \
    --distill-alpha 0.5 --distill-temperature 2 --distill-hidden-weight 1 --init-from-teacher --max-steps 1750 --lr 5e-4 \
    --peak-at 0.1 --output-dir $M/kdinit > $L/pt-kdinit.log 2>&1; echo "pt kdinit rc=$? $(date +%T)"
  cp $M/kdinit/pretrain_results.json $L/pt-kdinit.json; cp modeling_ultrafastbert/*.py $M/kdinit/
  ft kdinit-noteacher-s42 --model $M/kdinit --epochs 1 --seed 42 --no-save &
  waitfor $M/teacher.done
  for s in 44 45; do ft kdinit-s$s --model $M/kdinit --epochs 1 --seed $s --no-save --teacher $M/dense-sst2 $KD & done; wait ) &
( waitfor $M/self.done
  SPAN="--adaptive-span --span-ramp 16 --span-lr 2e-3 --span-penalty 0.0055 --teacher $M/fff-sst2 --distill-alpha 0.5 --distill-temperature 2"
  for s in 42 43 44 45; do ft span0055-s$s --model $M/fff-mlm --epochs 1 --seed $s --no-save $SPAN & done; wait ) &
wait
date +%T | tee -a $L/gpu.txt
tar czf $OUT/logs7.tgz -C /tmp logs7
tail -3 $L/span_tests.log; grep -E "median|whole|==|machine" $L/bench_span.log; tail -2 $L/bench_span.log
grep -h '"accuracy"' $L/ft-teacher.json $L/fff-self.json
for f in $L/ft-span*.json; do python3 -c "import json,sys; d=json.load(open(sys.argv[1]))['adaptive_span']; print(sys.argv[1], 'heads at 0:', d['heads_at_span_0'], 'mean span', round(d['mean_span'],2))" $f; done
for f in $L/ft-*.json; do echo "$(basename $f) $(grep -hE '"accuracy"' $f)"; done
for f in $L/ft-*.log $L/pt-*.log; do [ -f ${f%.log}.json ] || { echo "== $f (no result)"; tail -3 $f; }; done
