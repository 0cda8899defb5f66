#!/usr/bin/env bash
# Trains the embedded default checkpoint (checkpoints/ultrafastbert-sst2-small) and its dense-feedforward twin with
# the same budget: crammed MLM pretraining on the SST-2 train sentences, then SST-2 fine-tuning. The two pipelines run
# side by side on one GPU (the models are small). Usage:
#   GLUE=../shared/data/glue BUDGET_MINUTES=3 bash examples/train_default_checkpoint.sh /tmp/ufb-default
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
GLUE=${GLUE:-$here/../../shared/data/glue}
ROOT=${1:-/tmp/ufb-default}
BUDGET=${BUDGET_MINUTES:-3}
EPOCHS=${EPOCHS:-2}
mkdir -p "$ROOT"
SIZE=${SIZE:-"--hidden-size 256 --layers 4 --heads 4 --fff-depth 9 --fff-trees 1 --vocab-size 8192"}
PRE_EXTRA=${PRE_EXTRA:-"--batch-size 256 --num-workers 4"}    # (quick CPU trials override these two)
GLUE_EXTRA=${GLUE_EXTRA:-""}

pipeline() {  # name, extra pretraining flags, extra evaluation flags
  local name=$1 pre=$2 ev=$3 card=$4
  python3 "$here/pretrain_mlm.py" --output-dir "$ROOT/$name-mlm" --sst2-train "$GLUE/SST-2/train.tsv" $SIZE $pre \
    $PRE_EXTRA --lr 1e-3 --peak-at 0.5 --budget-minutes "$BUDGET" --logging-steps 200 --seed 0
  python3 "$here/run_glue.py" --task sst2 --model "$ROOT/$name-mlm" --data-dir "$GLUE" \
    --output-dir "$ROOT/$name-sst2" --epochs "$EPOCHS" --batch-size 32 --lr 1e-4 --seed 42 --tf32 \
    --logging-steps 500 --model-name "$card" $ev $GLUE_EXTRA
}

pipeline fff "" "--fff-kernel torch" ultrafastbert-sst2-small >"$ROOT/fff.log" 2>&1 &
fff_pid=$!
# the twin: the same neurons as a plain GELU layer (1023 depth-0 trees); its eval uses the masked (= dense) form
pipeline dense "--dense-ff-twin" "--fff-inference dense" ultrafastbert-sst2-small-dense-twin >"$ROOT/dense.log" 2>&1 &
dense_pid=$!
status=0
wait $fff_pid || { echo "FFF pipeline failed"; status=1; }
wait $dense_pid || { echo "dense-twin pipeline failed"; status=1; }
for name in fff dense; do
  echo "== $name"; grep -v "it/s\]" "$ROOT/$name.log" | tail -40
done
exit $status
