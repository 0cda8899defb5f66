#!/bin/bash
# device call 3 (session 4): the fused span block with its host path cut, tests then the attention-block benchmark
# (penalty-0.005 seed-44 spans, as in call 2). Needs .dev_r/{pack.tar.xz,src.tar,spans-s44.json}.
M=/tmp/m; L=/tmp/logs8; mkdir -p $M $L
tar xJf .dev_r/pack.tar.xz -C $M fff-mlm 2>/dev/null || tar xJf .dev_r/pack.tar.xz -C $M
cp .dev_r/spans-s44.json $M/
mkdir -p /tmp/src8 && tar xf .dev_r/src.tar -C /tmp/src8 && cd /tmp/src8
export PYTHONPATH=$PWD OMP_NUM_THREADS=4
cp modeling_ultrafastbert/*.py $M/fff-mlm/
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 150 python3 -m pytest -p no:faulthandler -q tests/test_adaptive_span.py -k "cuda" 2>&1 | tail -3
for i in 1 2; do timeout 120 python3 benchmarks/bench_adaptive_span.py --model $M/fff-mlm --device cuda --spans-from $M/spans-s44.json --repeats 300 --json $L/bench_span_$i.json > $L/bench_span_$i.log 2>&1; grep -E "^ +[0-9]|median|whole|==|machine" $L/bench_span_$i.log; done
tar czf $OUT/logs8.tgz -C /tmp logs8
