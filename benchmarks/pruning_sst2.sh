#!/usr/bin/env bash
# SST-2 dev accuracy of pruned UltraFastBERT models against the unpruned one, all fine-tuned with the same budget
# (same data, epochs, learning rate, batch, seed) from one MLM checkpoint, and the compact storage of the pruned ones.
#
#   bash benchmarks/pruning_sst2.sh MLM_CHECKPOINT GLUE_DIR OUT_DIR [TRAIN_SAMPLES] [EPOCHS]
#
# Every row is one examples/run_glue.py run, all started together as background processes (small models: one GPU
# holds them all). Rows: unpruned; movement and magnitude pruning of the encoder at 50% and 80%; soft movement at
# five L1 strengths (its sparsity is whatever results); magnitude pruning of 95% of the word embeddings alone (over
# the matrix, per row, and over the matrix with half the run at full sparsity); and movement 80% + embeddings 95%.
# The 80% checkpoints are then stored with conversion/compact_pruned.py. Prints a table and writes
# OUT_DIR/pruning_sst2.json. ROW_TIMEOUT (seconds) bounds each run; ONLY names a subset of rows.
set -uo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:?usage: bash benchmarks/pruning_sst2.sh MLM_CHECKPOINT GLUE_DIR OUT_DIR [TRAIN_SAMPLES] [EPOCHS]}
GLUE_DIR=${2:?GLUE_DIR}
OUT=${3:?OUT_DIR}
SAMPLES=${4:-67349}
EPOCHS=${5:-1}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} OMP_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false
mkdir -p "$OUT/logs"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/pruning-sst2.XXXXXX")
COMMON=(examples/run_glue.py --task sst2 --model "$MODEL" --data-dir "$GLUE_DIR" --epochs "$EPOCHS"
        --max-train-samples "$SAMPLES" --batch-size 32 --lr 1e-4 --seed 42 --logging-steps 200)
read -r -a EXTRA <<< "${EXTRA_ARGS:-}"  # e.g. EXTRA_ARGS="--max-eval-samples 32" for a smoke run
COMMON+=("${EXTRA[@]}")

declare -A ROWS=(
  [unpruned]=""
  [movement-50]="--prune movement --sparsity 0.5"
  [movement-80]="--prune movement --sparsity 0.8"
  [magnitude-50]="--prune magnitude --sparsity 0.5"
  [magnitude-80]="--prune magnitude --sparsity 0.8"
  [soft-movement-l10]="--prune soft-movement --soft-regularization 10"
  [soft-movement-l60]="--prune soft-movement --soft-regularization 60"
  [soft-movement-l300]="--prune soft-movement --soft-regularization 300"
  [soft-movement-l20]="--prune soft-movement --soft-regularization 20"
  [soft-movement-l30]="--prune soft-movement --soft-regularization 30"
  [embeddings-magnitude-95]="--embedding-sparsity 0.95"
  [embeddings-magnitude-95-per-row]="--embedding-sparsity 0.95 --embedding-per-row"
  # the same with the schedule's ramp from the first step and half the run at full sparsity to recover
  [embeddings-magnitude-95-cool50]="--embedding-sparsity 0.95 --prune-warmup 0 --prune-cooldown 0.5"
  [movement-80-embeddings-95]="--prune movement --sparsity 0.8 --embedding-sparsity 0.95"
)
for name in "${!ROWS[@]}"; do
  [[ -z "${ONLY:-}" || " $ONLY " == *" $name "* ]] || continue  # ONLY="unpruned movement-50 ..." runs a subset
  # shellcheck disable=SC2086
  # each row's results are copied out as soon as it ends (they survive if the whole run is cut short)
  ( timeout "${ROW_TIMEOUT:-0}" python3 "${COMMON[@]}" --output-dir "$WORK/$name" ${ROWS[$name]} > "$OUT/logs/$name.log" 2>&1
    cp "$WORK/$name/eval_results.json" "$OUT/logs/$name.json" 2>/dev/null ) &
done
wait
for name in movement-80 magnitude-80 movement-80-embeddings-95; do
  [ -f "$WORK/$name/model.safetensors" ] || continue
  timeout "${ROW_TIMEOUT:-0}" python3 conversion/compact_pruned.py "$WORK/$name" "$WORK/$name-compact" > "$OUT/logs/$name-compact.log" 2>&1
done
python3 - "$WORK" "$OUT" <<'EOF'
import json, pathlib, sys
import torch
work, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
rows = {}
for folder in sorted(work.iterdir()):
    results = folder / "eval_results.json"
    if folder.name.endswith("-compact") or not results.is_file():
        continue
    r = json.loads(results.read_text())
    row = {"accuracy": r["accuracy"], "steps": r["global_steps"], "train_seconds": r["train_seconds"],
           **r.get("pruning", {}), "dense_bytes": (folder / "model.safetensors").stat().st_size}
    compact = work / f"{folder.name}-compact" / "model.safetensors"
    if compact.is_file():
        row["compact_bytes"] = compact.stat().st_size
        row["compact_ratio"] = round(row["compact_bytes"] / row["dense_bytes"], 4)
    rows[folder.name] = row
base = rows.get("unpruned", {}).get("accuracy")
device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
print(f"device: {device}")
print(f"{'row':28s} {'acc':>7s} {'vs unpruned':>11s} {'enc sp':>7s} {'emb sp':>7s} {'compact/dense':>13s}")
for name, row in rows.items():
    delta = f"{100 * (row['accuracy'] - base):+.2f} pt" if base is not None else "-"
    print(f"{name:28s} {row['accuracy']:7.4f} {delta:>11s} {row.get('encoder_sparsity', 0):7.3f} "
          f"{row.get('embedding_sparsity', 0):7.3f} {row.get('compact_ratio', float('nan')):13.3f}")
(out / "pruning_sst2.json").write_text(json.dumps({"device": device, "rows": rows}, indent=1))
EOF
# the smallest compact checkpoint comes back too (to check loading elsewhere)
[ -d "$WORK/movement-80-embeddings-95-compact" ] && cp -r "$WORK/movement-80-embeddings-95-compact" "$OUT/"
