#!/usr/bin/env bash
# Does MLM pretraining on two GPUs report and optimise the same loss as on one?
#
#   bash benchmarks/multi_gpu_check.sh GLUE_DIR [STEPS] [GLOBAL_BATCH]
#
# GLUE_DIR holds SST-2/train.tsv (the text). On a machine with two GPUs it runs examples/pretrain_mlm.py with the same
# seed, data, model and global batch
#   (a) one GPU visible                                  per-device batch = GLOBAL_BATCH
#   (b) plain python3, two GPUs (Trainer's DataParallel)  per-device batch = GLOBAL_BATCH / 2
#   (c) accelerate launch --multi_gpu --num_processes 2   per-device batch = GLOBAL_BATCH / 2 (DDP)
#   (d) as (c), on a 1-minute --budget-minutes clock     (both processes must stop together, at the same step)
# and prints the held-out MLM loss before/after training and the logged training loss and gradient-norm curves side
# by side. All use the vocabulary (a) trained. (b) sees exactly (a)'s batches and masks; (c) shards and masks them differently, so its curve follows (a)'s
# within sampling noise rather than exactly. The held-out set is masked once, so every run scores the same tokens.
set -euo pipefail
cd "$(dirname "$0")/.."
GLUE_DIR=${1:?usage: bash benchmarks/multi_gpu_check.sh GLUE_DIR [STEPS] [GLOBAL_BATCH]}
STEPS=${2:-300}
GLOBAL_BATCH=${3:-128}
HALF=$((GLOBAL_BATCH / 2))
TRAIN_TSV="$GLUE_DIR/SST-2/train.tsv"
[ -f "$TRAIN_TSV" ] || { echo "no $TRAIN_TSV" >&2; exit 2; }
[ "$(python3 -c 'import torch; print(torch.cuda.device_count())')" -ge 2 ] || { echo "needs two GPUs" >&2; exit 2; }
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/multi-gpu-check.XXXXXX")
COMMON=(examples/pretrain_mlm.py --sst2-train "$TRAIN_TSV" --seed 0 --logging-steps 10 --bf16 auto)
LAUNCH=(accelerate launch --multi_gpu --num_processes 2 --num_machines 1 --mixed_precision no --dynamo_backend no)

run() {  # name, then the command
    local name=$1; shift
    echo "== ($name) $*" | tee "$WORK/$name.log"
    local started=$SECONDS
    "$@" >>"$WORK/$name.log" 2>&1 || { echo "($name) failed; log tail:"; tail -30 "$WORK/$name.log"; exit 1; }
    echo "   done in $((SECONDS - started)) s"
}

run a env CUDA_VISIBLE_DEVICES=0 python3 "${COMMON[@]}" --max-steps "$STEPS" --batch-size "$GLOBAL_BATCH" \
    --output-dir "$WORK/a"
# training a WordPiece vocabulary is not deterministic: the other runs take (a)'s, so all see the same tokens
COMMON+=(--tokenizer "$WORK/a")
run b env CUDA_VISIBLE_DEVICES=0,1 python3 "${COMMON[@]}" --max-steps "$STEPS" --batch-size "$HALF" \
    --output-dir "$WORK/b"
run c env CUDA_VISIBLE_DEVICES=0,1 "${LAUNCH[@]}" "${COMMON[@]}" --max-steps "$STEPS" --batch-size "$HALF" \
    --output-dir "$WORK/c"
run d env CUDA_VISIBLE_DEVICES=0,1 timeout 900 "${LAUNCH[@]}" "${COMMON[@]}" --budget-minutes 1 --batch-size "$HALF" \
    --output-dir "$WORK/d"

python3 - "$WORK" <<'EOF'
import json, re, sys
from pathlib import Path

work = Path(sys.argv[1])
runs = {name: json.loads((work / name / "pretrain_results.json").read_text()) for name in "abcd"}
labels = {"a": "1 GPU", "b": "2 GPUs DataParallel", "c": "2 GPUs DDP", "d": "2 GPUs DDP, 1-min budget"}
print(f"\ndevice: {runs['a']['device']}; global batch {runs['a']['sequences_seen'] // max(1, runs['a']['global_steps'])}")
print(f"{'run':28s} {'processes x GPUs':>16s} {'eval before':>12s} {'vs (a)':>8s} {'eval after':>11s} {'vs (a)':>8s} "
      f"{'steps':>6s} {'seq/step':>9s}")
base = runs["a"]
for name, r in runs.items():
    per_step = r["sequences_seen"] // max(1, r["global_steps"])
    print(f"({name}) {labels[name]:24s} {r['processes']:>8d} x {r['devices_per_process']:<5d} "
          f"{r['eval_mlm_loss_before']:12.4f} {r['eval_mlm_loss_before'] / base['eval_mlm_loss_before'] - 1:+8.2%} "
          f"{r['eval_mlm_loss_after']:11.4f} "
          f"{(r['eval_mlm_loss_after'] / base['eval_mlm_loss_after'] - 1) if name != 'd' else float('nan'):+8.2%} "
          f"{r['global_steps']:6d} {per_step:9d}")

print("\nlogged training loss | gradient norm (before clipping), by step")
curves = {n: dict(map(tuple, runs[n]["train_loss_curve"])) for n in "abc"}
norms = {n: dict(map(tuple, runs[n]["grad_norm_curve"])) for n in "abc"}
print(f"{'step':>6s} " + " ".join(f"{'(' + n + ') loss':>10s}" for n in "abc") + "   "
      + " ".join(f"{'(' + n + ') |g|':>10s}" for n in "abc"))
for step in sorted(curves["a"]):
    loss = " ".join(f"{curves[n].get(step, float('nan')):10.4f}" for n in "abc")
    norm = " ".join(f"{(norms[n].get(step) or float('nan')):10.4f}" for n in "abc")
    print(f"{step:6d} {loss}   {norm}")
steps = sorted(set(curves["a"]) & set(curves["b"]) & set(curves["c"]))
for n in "bc":
    gap = max(abs(curves[n][s] / curves["a"][s] - 1) for s in steps)
    late = [s for s in steps if s > steps[-1] / 2]
    mean_gap = sum(curves[n][s] / curves["a"][s] - 1 for s in late) / max(1, len(late))
    print(f"({n}) vs (a): largest relative loss gap {gap:.2%}; mean signed gap over the second half {mean_gap:+.2%}")
print(f"(d) budget run: {runs['d']['global_steps']} steps in {runs['d']['train_seconds']} s "
      "(both processes exited together; each wrote the same step count to its log)")
for line in (work / "d.log").read_text().splitlines():
    if re.search(r'"global_steps"', line):
        print("   ", line.strip())
print(f"\nlogs and checkpoints: {work}")
EOF
