#!/bin/bash
# device call (session 4): closing the FFF-vs-dense gap (issue 12) with distillation during pretraining, more seeds
# for the self-distilled spans (issue 11), and the GPU kernel tests.
# Phase A (t=0, concurrent): the dense teacher fine-tuned again (2 epochs, seed 42); the FFF model fine-tuned 1 epoch
# without spans (the spans' self-teacher); two FFF students pretrained with the dense twin `dense-mlm` as masked-LM
# teacher (its tokenizer; soft targets alpha 0.5, T 2, hidden-state loss weight 1):
#   kdscratch: from scratch, a 4-minute budget (the twins had 3.5 min on an H200 with one other job: 3423 / 3631 steps);
#   kdinit:    started from the teacher's weights (its 511 neurons reshaped into the tree), 1750 steps, lr 5e-4.
# Phase B: each student fine-tuned 1 epoch with logits distillation from the dense teacher (alpha 0.9, T 2), seeds 42
# and 43; spans (penalty 0.005, self-distillation) and their no-span controls for seeds 44 and 45.
# Run from the repository root with .dev_r/pack.tar.xz and .dev_r/src.tar carried.
START=$(date +%s); M=/tmp/m; L=/tmp/logs6; mkdir -p $M $L
tar xJf .dev_r/pack.tar.xz -C $M
REPO=$PWD
if [ -f .dev_r/src.tar ]; then mkdir -p /tmp/src && tar xf .dev_r/src.tar -C /tmp/src && cd /tmp/src; fi
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=1
for m in fff-mlm dense-mlm; do cp modeling_ultrafastbert/*.py $M/$m/; done
nvidia-smi --query-gpu=name --format=csv,noheader | tee $L/gpu.txt; date +%T | tee -a $L/gpu.txt
left() { echo $(( ${END_AT:-585} - ($(date +%s) - START) )); }
( timeout 200 python3 -m pytest -p no:faulthandler -q tests/test_gpu_kernel.py tests/test_adaptive_span.py -k "cuda or gpu or triton" > $L/gpu_tests.log 2>&1; echo "rc=$?" >> $L/gpu_tests.log ) &
GL="--task sst2 --data-dir $M/glue --max-train-samples 67349 --batch-size 32 --lr 1e-4 --logging-steps 500"
ft() { name=$1; shift; timeout $(left) python3 examples/run_glue.py $GL --output-dir /tmp/ft-$name "$@" > $L/ft-$name.log 2>&1; echo "done ft-$name rc=$? $(date +%T)"; cp /tmp/ft-$name/eval_results.json $L/ft-$name.json 2>/dev/null; }
SIZE="--hidden-size 256 --layers 8 --heads 4 --fff-depth 8 --fff-trees 1"
PT="$SIZE --sst2-train $M/glue/SST-2/train.tsv --batch-size 256 --num-workers 2 --logging-steps 250 --seed 0 --teacher $M/dense-mlm --distill-alpha 0.5 --distill-temperature 2 --distill-hidden-weight 1"
pt() { name=$1; shift; timeout $(left) python3 examples/pretrain_mlm.py $PT --output-dir $M/$name "$@" > $L/pt-$name.log 2>&1; echo "done pt-$name rc=$? $(date +%T)"; cp $M/$name/pretrain_results.json $L/pt-$name.json 2>/dev/null; [ -f $M/$name/config.json ] && cp modeling_ultrafastbert/*.py $M/$name/; }
waitfor() { while [ ! -f $1 ] && [ $(left) -gt 0 ]; do sleep 2; done; }
KD="--distill-alpha 0.9 --distill-temperature 2"
# phase A
( ft teacher --model $M/dense-mlm --epochs 2 --seed 42 --tf32 --fff-inference dense --output-dir $M/dense-sst2; cp $M/dense-sst2/eval_results.json $L/ft-teacher.json 2>/dev/null; touch $M/teacher.done ) &
( timeout $(left) python3 examples/run_glue.py $GL --model $M/fff-mlm --epochs 1 --seed 42 --output-dir $M/fff-sst2 > $L/fff-self.log 2>&1; echo "fff-sst2 rc=$? $(date +%T)"; cp $M/fff-sst2/eval_results.json $L/fff-self.json; touch $M/self.done ) &
for s in 44 45; do ft plain-s$s --model $M/fff-mlm --epochs 1 --seed $s --no-save & done
( pt kdinit --init-from-teacher --max-steps 1750 --lr 5e-4 --peak-at 0.1
  waitfor $M/teacher.done
  for s in 42 43; do ft kdinit-s$s --model $M/kdinit --epochs 1 --seed $s --no-save --teacher $M/dense-sst2 $KD & done; wait ) &
( pt kdscratch --budget-minutes 4 --lr 1e-3 --peak-at 0.5
  waitfor $M/teacher.done
  for s in 42 43; do ft kdscratch-s$s --model $M/kdscratch --epochs 1 --seed $s --no-save --teacher $M/dense-sst2 $KD & done; wait ) &
( waitfor $M/self.done
  SPAN="--adaptive-span --span-ramp 16 --span-lr 2e-3 --span-penalty 0.005 --teacher $M/fff-sst2 --distill-alpha 0.5 --distill-temperature 2"
  for s in 44 45; do ft span005-s$s --model $M/fff-mlm --epochs 1 --seed $s --no-save $SPAN & done; wait ) &
wait
date +%T | tee -a $L/gpu.txt
tar czf $OUT/logs6.tgz -C /tmp logs6
for n in kdinit kdscratch dense-sst2; do [ -f $M/$n/config.json ] && tar cf - -C $M --exclude='*.py' $n | xz -1 -T4 > $OUT/$n.tar.xz; done
ls -la $OUT; tail -3 $L/gpu_tests.log
grep -h '"accuracy"' $L/ft-teacher.json $L/fff-self.json
for f in $L/pt-*.json; do python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(sys.argv[1], 'mlm', round(d['eval_mlm_loss_before'],3), '->', round(d['eval_mlm_loss_after'],3), 'steps', d['global_steps'], 's', d['train_seconds'])" $f; done
for f in $L/ft-span*.json; do python3 -c "import json,sys; d=json.load(open(sys.argv[1]))['adaptive_span']; print(sys.argv[1], 'heads at 0:', d['heads_at_span_0'], 'mean span', round(d['mean_span'],2))" $f; done
for f in $L/ft-*.json; do echo "$(basename $f) $(grep -hE '"accuracy"' $f) $(grep -hE '"train_seconds"' $f | tr -d '\n ')"; done
for f in $L/ft-*.log $L/pt-*.log; do [ -f ${f%.log}.json ] || { echo "== $f (no result)"; tail -3 $f; }; done
