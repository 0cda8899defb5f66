#!/bin/bash
# device call (session 3): closing the FFF-vs-dense distillation gap (issue 12) and span accuracy (issue 11).
# Phase A: the dense teacher is fine-tuned again (2 epochs, saved; hidden-state rows need the live model) and the FFF
# model once without spans (1 epoch, saved: the no-teacher control and the spans' self-teacher), beside 2-epoch
# logits-distillation rows and no-teacher controls. Phase B (once the dense teacher exists): hidden-state (TinyBERT)
# distillation and teacher-labelled augmentation. Phase C (once the FFF model exists): spans learned with
# self-distillation from the same model fine-tuned without spans.
# Run from the repository root with .dev_r/pack.tar.xz (fff-mlm, dense-mlm in bf16, the old teacher's train logits,
# SST-2) carried.
# With .dev_r/src.tar carried (`git archive HEAD modeling_ultrafastbert examples`), the code runs from that commit
# instead of the working tree (which may hold someone's unfinished edits).
START=$(date +%s); M=/tmp/m; L=/tmp/logs5; mkdir -p $M $L
tar xJf .dev_r/pack.tar.xz -C $M
if [ -f .dev_r/src.tar ]; then mkdir -p /tmp/src && tar xf .dev_r/src.tar -C /tmp/src && cd /tmp/src; fi
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=1
for m in fff-mlm dense-mlm; do cp modeling_ultrafastbert/*.py $M/$m/; done
nvidia-smi --query-gpu=name --format=csv,noheader | tee $L/gpu.txt; date +%T | tee -a $L/gpu.txt
left() { echo $(( ${END_AT:-575} - ($(date +%s) - START) )); }
TL=$M/dense-sst2-train-logits.safetensors
FT="--task sst2 --model $M/fff-mlm --data-dir $M/glue --max-train-samples 67349 --batch-size 32 --lr 1e-4 --logging-steps 500 --no-save"
ft() { name=$1; shift; timeout $(left) python3 examples/run_glue.py $FT --output-dir /tmp/ft-$name "$@" > $L/ft-$name.log 2>&1; echo "done ft-$name rc=$? $(date +%T)"; cp /tmp/ft-$name/eval_results.json $L/ft-$name.json 2>/dev/null; }
KD="--distill-alpha 0.9 --distill-temperature 2"
# phase A
( python3 examples/run_glue.py --task sst2 --data-dir $M/glue --epochs 2 --batch-size 32 --lr 1e-4 --seed 42 --tf32 \
    --logging-steps 500 --model $M/dense-mlm --output-dir $M/dense-sst2 --fff-inference dense > $L/teacher.log 2>&1
  echo "teacher rc=$? $(date +%T)"; cp $M/dense-sst2/eval_results.json $L/teacher.json
  T="--teacher $M/dense-sst2 $KD"
  # phase B
  ft hidden1-e1-s42 --epochs 1 --seed 42 $T --distill-hidden-weight 1 &
  ft hidden1-e1-s43 --epochs 1 --seed 43 $T --distill-hidden-weight 1 &
  ft hidden02-e1-s42 --epochs 1 --seed 42 $T --distill-hidden-weight 0.2 &
  ft newteacher-e1-s42 --epochs 1 --seed 42 $T &
  ft aug1-e1-s42 --epochs 1 --seed 42 $T --augment-copies 1 &
  wait ) &
SPAN="--adaptive-span --span-ramp 16 --span-lr 2e-3 --span-penalty 0.004"
( python3 examples/run_glue.py ${FT/--no-save/} --epochs 1 --seed 42 --output-dir $M/fff-sst2 > $L/fff-teacher.log 2>&1
  echo "fff teacher rc=$? $(date +%T)"; cp $M/fff-sst2/eval_results.json $L/fff-teacher.json
  S="--teacher $M/fff-sst2 --distill-alpha 0.5 --distill-temperature 2"
  # phase C
  ft span-self-hidden1-s42 --epochs 1 --seed 42 $SPAN $S --distill-hidden-weight 1 &
  ft span-self-hidden1-s43 --epochs 1 --seed 43 $SPAN $S --distill-hidden-weight 1 &
  ft span-self-kd-s42 --epochs 1 --seed 42 $SPAN $S &
  wait ) &
ft kd-e2-s42 --epochs 2 --seed 42 --teacher $TL $KD &
ft kd-e2-s43 --epochs 2 --seed 43 --teacher $TL $KD &
ft plain-e2-s43 --epochs 2 --seed 43 &
wait
date +%T | tee -a $L/gpu.txt
tar czf $OUT/logs5.tgz -C /tmp logs5
grep -h '"accuracy"' $L/teacher.json $L/fff-teacher.json
for f in $L/ft-span*.json; do python3 -c "import json,sys; d=json.load(open(sys.argv[1]))['adaptive_span']; print(sys.argv[1], 'heads at 0:', d['heads_at_span_0'], 'mean span', round(d['mean_span'],2))" $f; done
for f in $L/ft-*.json; do echo "$(basename $f) $(grep -hE '"accuracy"' $f) $(grep -hE '"train_seconds"|aligned_fraction|augmented_rows' $f | tr -d '\n ')"; done
for f in $L/ft-*.log; do [ -f ${f%.log}.json ] || { echo "== $f (no result)"; tail -3 $f; }; done
