#!/bin/bash
# device call (session 3): closing the FFF-vs-dense distillation gap. Phase A: the dense teacher is fine-tuned again
# (2 epochs, saved; hidden-state rows need the live model) beside longer logits-distillation rows and no-teacher
# controls; phase B (once the teacher exists): hidden-state (TinyBERT) distillation and teacher-labelled augmentation.
# Run from the repository root with .dev_r/pack.tar.xz (fff-mlm, dense-mlm in bf16, the old teacher's train logits,
# SST-2) carried.
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=1
START=$(date +%s); M=/tmp/m; L=/tmp/logs5; mkdir -p $M $L
tar xJf .dev_r/pack.tar.xz -C $M
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
  ft aug1-hidden1-e1-s42 --epochs 1 --seed 42 $T --augment-copies 1 --distill-hidden-weight 1 &
  wait ) &
ft kd-e2-s42 --epochs 2 --seed 42 --teacher $TL $KD &
ft kd-e2-s43 --epochs 2 --seed 43 --teacher $TL $KD &
ft kd-e3-s42 --epochs 3 --seed 42 --teacher $TL $KD &
ft plain-e2-s42 --epochs 2 --seed 42 &
ft plain-e2-s43 --epochs 2 --seed 43 &
wait
date +%T | tee -a $L/gpu.txt
tar czf $OUT/logs5.tgz -C /tmp logs5
grep -h '"accuracy"' $L/teacher.json
for f in $L/ft-*.json; do echo "$(basename $f) $(grep -hE '"accuracy"' $f) $(grep -hE '"train_seconds"|aligned_fraction|augmented_rows' $f | tr -d '\n ')"; done
for f in $L/ft-*.log; do [ -f ${f%.log}.json ] || { echo "== $f (no result)"; tail -3 $f; }; done
