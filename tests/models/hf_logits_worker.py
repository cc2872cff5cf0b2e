"""Run under torchrun (or plain python for TP=PP=1): import an HF directory
at TP x PP, then build a fresh model, load the written checkpoint the way
training does (load_checkpoint, finetune) and save the full-vocab logits of
the last pipeline stage to OUT.  Pipeline hand-off is a plain send/recv of
the first stage's hidden states (one micro-batch, forward only).

usage: hf_logits_worker.py HF_DIR SAVE TP PP TOKENS.pt OUT.pt
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

import torch  # noqa: E402


def main():
    hf_dir, save, tp, pp, tokens_path, out = sys.argv[1:7]
    tp, pp = int(tp), int(pp)
    from megatron.core import parallel_state as ps

    from megatron_dsm import platform
    from megatron_dsm.models import hf_convert
    from megatron_dsm.models.gpt import build_model, transformer_config
    from megatron_dsm.checkpoint import load_checkpoint

    hf_convert.import_hf(hf_dir, save, tp=tp, pp=pp)
    cfg = hf_convert.model_config_from_hf(hf_convert.read_hf_config(hf_dir))
    model = build_model(cfg, transformer_config(cfg, tp=tp, pp=pp))
    # Scramble first so the comparison shows the load, not the import's leftovers.
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    load_checkpoint(save, model, None, finetune=True)
    model.eval()
    tokens = torch.load(tokens_path)
    b, s = tokens.shape
    pos = torch.arange(s).unsqueeze(0).expand(b, s)
    with torch.no_grad():
        if not ps.is_pipeline_first_stage():
            hidden = torch.empty(s, b, cfg.hidden_size)
            torch.distributed.recv(hidden, src=ps.get_pipeline_model_parallel_prev_rank())
            model.set_input_tensor(hidden)
        y = model(tokens, pos, None)
        if not ps.is_pipeline_last_stage():
            torch.distributed.send(y.contiguous(), dst=ps.get_pipeline_model_parallel_next_rank())
        else:
            # Vocab-parallel logits: gather the TP slices along the vocab axis.
            parts = [torch.empty_like(y) for _ in range(tp)]
            torch.distributed.all_gather(parts, y.contiguous(), group=ps.get_tensor_model_parallel_group())
            logits = torch.cat(parts, dim=-1)[..., :cfg.vocab_size]
            if ps.get_tensor_model_parallel_rank() == 0:
                torch.save(logits.contiguous(), out + ".tmp")
                os.replace(out + ".tmp", out)
    platform.destroy_distributed()


if __name__ == "__main__":
    main()
