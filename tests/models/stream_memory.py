"""Peak memory of a streaming conversion on a scaled 7B-structure model.

Writes a random bf16 Llama checkpoint with DeepSeek 7B's structure scaled
down (hidden/4, ffn/4, heads/4, vocab/4, few layers; one safetensors shard per
layer, like HF's sharded files), runs ``tools/convert_hf.py import`` and
``export`` in child processes and reports each child's peak RSS
(ru_maxrss).  Two layer counts give the per-layer slope, which is compared
with the bytes a layer holds, so the figure scales to the full 7B.

usage: python tests/models/stream_memory.py WORKDIR [LAYERS_A LAYERS_B]
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
SCALED = dict(hidden_size=1024, intermediate_size=2752, num_attention_heads=8,
              num_key_value_heads=8, vocab_size=25600)


def write_scaled(d: Path, layers: int) -> int:
    """The scaled checkpoint, written one layer at a time; returns its bytes."""
    from safetensors.torch import save_file

    from megatron_dsm.models.hf_convert import HF_PRESETS

    d.mkdir(parents=True, exist_ok=True)
    cfg = dict(HF_PRESETS["deepseekmath-7b"], num_hidden_layers=layers, **SCALED)
    (d / "config.json").write_text(json.dumps(cfg))
    h, f, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    g = torch.Generator().manual_seed(0)

    def rnd(*shape):
        return (torch.randn(*shape, generator=g) * 0.02).to(torch.bfloat16)

    weight_map, total = {}, 0
    files = [("top", {"model.embed_tokens.weight": rnd(v, h), "lm_head.weight": rnd(v, h),
                      "model.norm.weight": torch.ones(h, dtype=torch.bfloat16)})]
    for i in range(layers):
        p = f"model.layers.{i}."
        files.append((f"l{i}", {
            p + "self_attn.q_proj.weight": rnd(h, h), p + "self_attn.k_proj.weight": rnd(h, h),
            p + "self_attn.v_proj.weight": rnd(h, h), p + "self_attn.o_proj.weight": rnd(h, h),
            p + "mlp.gate_proj.weight": rnd(f, h), p + "mlp.up_proj.weight": rnd(f, h),
            p + "mlp.down_proj.weight": rnd(h, f),
            p + "input_layernorm.weight": torch.ones(h, dtype=torch.bfloat16),
            p + "post_attention_layernorm.weight": torch.ones(h, dtype=torch.bfloat16)}))
        if i == 0:  # generate lazily: only one layer's tensors exist at a time
            pass
    for name, tensors in files:
        fn = f"model-{name}.safetensors"
        save_file(tensors, str(d / fn), metadata={"format": "pt"})
        weight_map.update({k: fn for k in tensors})
        total += sum(t.numel() * t.element_size() for t in tensors.values())
    (d / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
    return total


def peak_rss_mb(args) -> float:
    """Run a child and return its peak RSS in MiB (Linux ru_maxrss is KiB)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    p = subprocess.Popen([sys.executable, str(REPO / "tools" / "convert_hf.py")] + [str(a) for a in args],
                         cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, _, ru = os.wait4(p.pid, 0)
    out, err = p.communicate()
    if p.returncode not in (0, None) and p.returncode != 0:
        raise RuntimeError(err[-3000:])
    return ru.ru_maxrss / 1024.0


def measure(work: Path, layers: int) -> dict:
    hf = work / f"hf{layers}"
    size = write_scaled(hf, layers)
    imp = peak_rss_mb(["import", "--hf-dir", hf, "--save", work / f"ck{layers}"])
    exp = peak_rss_mb(["export", "--load", work / f"ck{layers}", "--hf-dir", work / f"out{layers}",
                       "--max-shard-size-gb", "0.05"])
    base = peak_rss_mb(["config", "--preset", "deepseekmath-7b"])
    return {"layers": layers, "checkpoint_mb": size / 2**20, "import_peak_mb": imp,
            "export_peak_mb": exp, "process_baseline_mb": base}


def main():
    sys.path.insert(0, str(REPO))
    work = Path(sys.argv[1])
    la, lb = (int(sys.argv[2]), int(sys.argv[3])) if len(sys.argv) > 3 else (2, 8)
    rows = [measure(work, la), measure(work, lb)]
    for r in rows:
        print(json.dumps({k: round(v, 1) if isinstance(v, float) else v for k, v in r.items()}))
    a, b = rows
    layer_mb = (b["checkpoint_mb"] - a["checkpoint_mb"]) / (lb - la)
    for key in ("import_peak_mb", "export_peak_mb"):
        slope = (b[key] - a[key]) / (lb - la)
        print(f"{key}: +{slope:.1f} MiB per layer (layer holds {layer_mb:.1f} MiB, ratio {slope / layer_mb:.2f})")


if __name__ == "__main__":
    main()
