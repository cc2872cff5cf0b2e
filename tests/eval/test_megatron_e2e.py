"""Issue 5's last must-show: a tiny checkpoint from this project's pretraining
loop, evaluated on 20 GSM8K test problems end to end on CPU through
``tools/evaluate.py --backend megatron`` (generation with the KV-cached
sampler, answer extraction, grading, metrics JSON).

The pipeline is real throughout: a byte-level BPE trained here with
``tokenizers`` on GSM8K train text, ``tools/preprocess_data.py`` making the
indexed dataset, ``tools/pretrain.py`` training a few iterations and saving a
dist checkpoint.  Accuracy near zero is expected; the pipeline is tested.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PY = sys.executable
N_PROBLEMS = 20


def _run(args, timeout=300):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    p = subprocess.run([PY] + [str(a) for a in args], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=timeout, start_new_session=True)
    return p


def _ok(p):
    assert p.returncode == 0, f"exit {p.returncode}\nSTDOUT:\n{p.stdout[-3000:]}\nSTDERR:\n{p.stderr[-5000:]}"
    return p


def _train_tokenizer(texts, path: Path, vocab: int = 512) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    tok.save(str(path))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, shared_data):
    """(checkpoint dir, tokenizer.json) from the real pretraining path."""
    work = tmp_path_factory.mktemp("e2e")
    rows = [json.loads(line) for line in
            (shared_data / "train" / "gsm8k" / "train.jsonl").read_text().splitlines()[:600]]
    texts = [f"{r['question']}\n{r['answer']}" for r in rows]
    tok_path = work / "tokenizer.json"
    _train_tokenizer(texts, tok_path)
    docs = work / "docs.jsonl"
    docs.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    _ok(_run(["tools/preprocess_data.py", "--input", docs, "--output-prefix", work / "gsm8k_train",
              "--tokenizer-type", "HuggingFaceTokenizer", "--tokenizer-model", tok_path,
              "--append-eod", "--progress", "false"]))
    from megatron_dsm.data.tokenizer import build_tokenizer

    vocab = build_tokenizer("hf", tok_path).vocab_size
    save = work / "ckpt"
    _ok(_run(["tools/pretrain.py", "--data-path", work / "gsm8k_train_text_document", "--vocab-size", vocab,
              "--seq-length", "64", "--num-layers", "2", "--hidden-size", "64",
              "--num-attention-heads", "4", "--ffn-hidden-size", "176",
              "--micro-batch-size", "4", "--global-batch-size", "8", "--lr", "3e-3",
              "--train-iters", "6", "--log-interval", "2", "--save", save, "--seed", "3"]))
    assert (save / "latest_checkpointed_iteration.txt").read_text().strip() == "6"
    return save, tok_path


def test_evaluate_tiny_checkpoint_on_20_gsm8k_problems(trained, tmp_path, shared_data):
    ckpt, tok = trained
    out = tmp_path / "gen.jsonl"
    p = _ok(_run(["tools/evaluate.py", "--benchmarks", "gsm8k", "--limit", N_PROBLEMS,
                  "--backend", "megatron", "--checkpoint", ckpt, "--tokenizer", tok,
                  "--style", "instruct", "--max-new-tokens", "24", "--batch-size", "10",
                  "--data-root", shared_data, "--output", out]))
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == N_PROBLEMS
    assert len({r["id"] for r in records}) == N_PROBLEMS
    for r in records:
        assert r["benchmark"] == "gsm8k"
        assert len(r["completions"]) == 1 and isinstance(r["completions"][0], str)
        assert r["completions"][0].strip(), "the model generated nothing"
        assert len(r["correct"]) == 1 and isinstance(r["correct"][0], bool)
        assert len(r["answers"]) == 1
    metrics_path = Path(str(out) + ".metrics.json")
    m = json.loads(metrics_path.read_text())
    assert set(m) == {"gsm8k"}
    g = m["gsm8k"]
    assert g["count"] == N_PROBLEMS and g["samples"] == 1
    assert g["accuracy"] == sum(r["correct"][0] for r in records) / N_PROBLEMS
    assert f"metrics: {metrics_path}" in p.stdout
    assert "tokens/s)" in p.stderr

    # greedy decoding is deterministic: the same first batch reproduces its completions
    out2 = tmp_path / "gen2.jsonl"
    _ok(_run(["tools/evaluate.py", "--benchmarks", "gsm8k", "--limit", "10",
              "--backend", "megatron", "--checkpoint", ckpt, "--tokenizer", tok,
              "--style", "instruct", "--max-new-tokens", "24", "--batch-size", "10",
              "--data-root", shared_data, "--output", out2]))
    again = [json.loads(line) for line in out2.read_text().splitlines()]
    assert [r["completions"] for r in again] == [r["completions"] for r in records[:10]]


def test_megatron_backend_bad_input_is_one_line(trained, tmp_path, shared_data):
    ckpt, tok = trained
    p = _run(["tools/evaluate.py", "--backend", "megatron", "--data-root", shared_data,
              "--output", tmp_path / "x.jsonl"])
    assert p.returncode == 2 and p.stderr.strip() == "evaluate: --backend megatron needs --checkpoint DIR"
    p = _run(["tools/evaluate.py", "--backend", "megatron", "--checkpoint", tmp_path / "nope",
              "--tokenizer", tok, "--data-root", shared_data, "--limit", "1",
              "--output", tmp_path / "x.jsonl"])
    assert p.returncode == 2
    assert p.stderr.strip().splitlines()[-1].startswith("evaluate: --checkpoint")


def test_megatron_backend_batch_equals_rows_alone_under_te_like_attention(trained, shared_data):
    """The evaluation back end with an attention that ignores boolean masks
    as transformer-engine does (tests/models/te_like.py): a batch of GSM8K
    prompts of different token lengths gives each prompt the completion it
    gets alone, so an evaluation batch samples from the model that was trained."""
    sys.path.insert(0, str(REPO / "tests" / "models"))
    from te_like import use_te_like_attention

    from megatron.core import parallel_state

    from megatron_dsm import platform
    from megatron_dsm.eval.megatron_backend import MegatronGenerator
    from megatron_dsm.models.generation import SamplingParams, generate

    ckpt, tok = trained
    started = not parallel_state.model_parallel_is_initialized()
    gen = MegatronGenerator(str(ckpt), str(tok), verbose=False)
    try:
        use_te_like_attention(gen.model)
        rows = [json.loads(line) for line in
                (shared_data / "benchmarks" / "gsm8k" / "test.jsonl").read_text().splitlines()[:6]]
        prompts = [f"Question: {r['question'][:60 + 25 * i]}\nAnswer:" for i, r in enumerate(rows)]
        assert len({len(gen.encode(p)) for p in prompts}) == len(prompts)
        batch = gen.generate(prompts, max_new_tokens=10)
        for p, b in zip(prompts, batch):
            assert gen.generate([p], max_new_tokens=10) == [b]
        assert any(b[0].strip() for b in batch)
        # the tokens and log-probs behind those texts (the back end's generate call)
        ids = [gen.encode(p) for p in prompts]
        kw = dict(pad_id=gen.pad_id, vocab_size=gen.vocab_size)
        out = generate(gen.model, ids, SamplingParams(max_new_tokens=10), **kw)
        for i, p in enumerate(ids):
            alone = generate(gen.model, [p], SamplingParams(max_new_tokens=10), **kw)
            assert alone.completions[0] == out.completions[i]
            assert max(abs(a - b) for a, b in zip(alone.logprobs[0], out.logprobs[i])) < 1e-5
    finally:
        if started:
            platform.destroy_distributed()
