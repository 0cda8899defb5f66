#!/bin/bash
# device call 1: GPU tests, then the 8-layer FFF and dense-twin MLM pretraining (3.5 min each, concurrent),
# then their 2-epoch SST-2 fine-tunes and the dense teacher's train-set logits
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
D=.dev_r; M=/tmp/m; L=/tmp/logs; mkdir -p $M $L
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $L/gpu.txt
python3 -c "import torch, triton, transformers; print(torch.__version__, triton.__version__, transformers.__version__)" | tee -a $L/gpu.txt
date +%T
( python3 -m pytest -p no:faulthandler -v tests/test_gpu_kernel.py > $L/gpu_tests.log 2>&1; echo "rc=$?" >> $L/gpu_tests.log; echo "tests done $(date +%T)" ) &
SIZE="--hidden-size 256 --layers 8 --heads 4 --fff-depth 8 --fff-trees 1 --vocab-size 8192"
PT="$SIZE --sst2-train $D/glue/SST-2/train.tsv --batch-size 256 --num-workers 4 --lr 1e-3 --peak-at 0.5 --budget-minutes 3.5 --logging-steps 200 --seed 0"
FT="--task sst2 --data-dir $D/glue --epochs 2 --batch-size 32 --lr 1e-4 --seed 42 --tf32 --logging-steps 500"
( python3 examples/pretrain_mlm.py $PT --output-dir $M/fff-mlm > $L/pt-fff.log 2>&1 && echo "pt fff $(date +%T)" &&
  python3 examples/run_glue.py $FT --model $M/fff-mlm --output-dir $M/fff-sst2 --fff-kernel torch > $L/ft-fff.log 2>&1; echo "ft fff rc=$? $(date +%T)" ) &
( python3 examples/pretrain_mlm.py $PT --dense-ff-twin --output-dir $M/dense-mlm > $L/pt-dense.log 2>&1 && echo "pt dense $(date +%T)" &&
  python3 examples/run_glue.py $FT --model $M/dense-mlm --output-dir $M/dense-sst2 --fff-inference dense > $L/ft-dense.log 2>&1 && echo "ft dense $(date +%T)" &&
  python3 examples/run_glue.py --task sst2 --data-dir $D/glue --model $M/dense-sst2 --teacher $M/dense-sst2 --fff-inference dense \
     --save-teacher-logits $M/dense-sst2-train-logits.safetensors --output-dir /tmp/tl > $L/tl.log 2>&1; echo "logits rc=$? $(date +%T)" ) &
for i in $(seq 540); do [ -z "$(jobs -rp)" ] && break; sleep 1; done
date +%T
for d in $M/*/; do cp $d/*results.json $L/$(basename $d)-results.json 2>/dev/null; done
tar czf $OUT/logs.tgz -C /tmp logs
for n in fff-mlm dense-mlm; do [ -d $M/$n ] && tar cf - -C $M $n | split -b 15M - $OUT/$n.tar.; done
cp $M/dense-sst2-train-logits.safetensors $OUT/ 2>/dev/null
ls -la $OUT; tail -3 $L/gpu_tests.log; grep -h '"accuracy"' $L/*results.json
