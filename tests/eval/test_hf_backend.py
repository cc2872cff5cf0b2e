"""The Hugging Face back end end to end: a tiny LlamaForCausalLM built from a
config (random weights, nothing downloaded) with the shared byte-level BPE,
evaluated on 4 GSM8K problems through tools/evaluate.py."""
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_hf_backend_generates_and_grades(shared_data, tmp_path):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(
        tokenizer_file=str(shared_data / "tokenizers/olmo_gpt-neox-20b_bytelevel_bpe/tokenizer.json"),
        eos_token="<|endoftext|>")
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024)
    torch.manual_seed(0)
    model_dir = tmp_path / "hf"
    LlamaForCausalLM(cfg).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    out, metrics = tmp_path / "gen.jsonl", tmp_path / "metrics.json"
    p = subprocess.run([sys.executable, "tools/evaluate.py", "--benchmarks", "gsm8k", "--backend", "hf",
                        "--model", str(model_dir), "--limit", "4", "--max-new-tokens", "8",
                        "--data-root", str(shared_data), "--output", str(out), "--metrics", str(metrics)],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 4
    assert all(len(r["completions"]) == 1 and isinstance(r["completions"][0], str) for r in records)
    m = json.loads(metrics.read_text())
    assert m["gsm8k"]["count"] == 4 and 0.0 <= m["gsm8k"]["accuracy"] <= 1.0
