#!/usr/bin/env bash
# Build the demo pretraining corpus (tokenizer + indexed datasets + mixture)
# from the vendored GSM8K / MATH train splits in examples/data/.
# Needs nothing outside the repository; a second run skips finished steps.
#
#   bash examples/build_demo_corpus.sh [OUT_DIR]      (default: runs/demo_corpus)
#   VOCAB_SIZE=4096 WORKERS=2 PYTHON=.venv/bin/python bash examples/build_demo_corpus.sh out/
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:-${ROOT}/runs/demo_corpus}"
PYTHON="${PYTHON:-${ROOT}/.venv/bin/python}"
[ -x "${PYTHON}" ] || PYTHON=python3
cd "${ROOT}"
exec env PYTHONPATH="${ROOT}${PYTHONPATH:+:${PYTHONPATH}}" "${PYTHON}" -m megatron_dsm.data.demo_corpus "${OUT}" \
    --vocab-size "${VOCAB_SIZE:-4096}" --workers "${WORKERS:-2}"
