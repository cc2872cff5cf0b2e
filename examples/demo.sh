#!/usr/bin/env bash
# `make demo`: the path of the data on a laptop, no GPU, no ../shared, no
# download: build the demo corpus with the project's own tools, pretrain the
# tiny model with tensor parallelism on 2 CPU processes, evaluate the
# checkpoint on 20 GSM8K test problems (generation, extraction, grading,
# metrics). Accuracy near zero is expected from a 2M-parameter model trained
# for minutes; the pipeline is what the demo shows.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
OUT=${OUT:-runs/demo}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} PYTHONWARNINGS=${PYTHONWARNINGS:-ignore}

echo "== 1/3 demo corpus (tokenizer + indexed datasets) -> $OUT/corpus"
bash examples/build_demo_corpus.sh "$OUT/corpus"

echo "== 2/3 pretraining the tiny model, TP=2 on 2 processes -> $OUT/pretrain"
DEMO_DIR="$OUT/corpus" TP=2 NPROC=2 SAVE_DIR="$OUT/pretrain" TRAIN_ITERS=${TRAIN_ITERS:-200} \
  bash examples/pretrain_dsm.sh

echo "== 3/3 evaluating on 20 GSM8K test problems -> $OUT/eval"
"$PY" tools/evaluate.py --benchmarks gsm8k_vendored --backend megatron \
  --checkpoint "$OUT/pretrain" --tokenizer "$OUT/corpus/tokenizer" --style fewshot \
  --limit 20 --max-new-tokens 64 --batch-size 10 \
  --output "$OUT/eval/generations.jsonl" --metrics "$OUT/eval/metrics.json"
echo "demo done: checkpoints in $OUT/pretrain, metrics in $OUT/eval/metrics.json"
