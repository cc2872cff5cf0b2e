"""One process (dist_checkpointing's writer starts a helper process, so this
runs as a script): an HF import, written by a local-spec model, loads into a
model whose modules declare ``_extra_state`` as transformer-engine's do, that
model's checkpoint loads back into a local-spec model and exports to HF.

transformer-engine cannot be imported here (no CUDA), so the TE-spec model is
the local spec with TE's checkpoint-visible difference: its norms and
linears declare extra state (``get_extra_state`` returning a uint8 tensor,
empty without FP8, ``set_extra_state`` taking it back), which megatron-core
checkpoints as ShardedObjects (``make_sharded_tensors_for_checkpoint``) just
as for TE's modules.

usage: spec_portability_worker.py HF_DIR WORK OUT.pt
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

import torch  # noqa: E402


def te_style(module) -> None:
    """Give ``module`` transformer-engine's extra-state methods (class swap:
    parameters and forward unchanged)."""

    class TEStyle(type(module)):
        def get_extra_state(self):
            return torch.empty(0, dtype=torch.uint8)      # TE 2.x without FP8 metadata

        def set_extra_state(self, state):
            self.extra_state_set = state

    TEStyle.__name__ = "TEStyle" + type(module).__name__
    module.__class__ = TEStyle


def te_declaring_model(cfg):
    from megatron_dsm.models.gpt import build_model, transformer_config

    model = build_model(cfg, transformer_config(cfg))
    te_style(model.decoder.final_layernorm)
    for layer in model.decoder.layers:
        for m in (layer.self_attention.linear_qkv, layer.self_attention.linear_proj,
                  layer.mlp.linear_fc1, layer.mlp.linear_fc2):
            te_style(m)
    return model


def scrambled(model):
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    return model


def logits(model, tokens):
    pos = torch.arange(tokens.size(1))[None].expand(tokens.size(0), -1)
    with torch.no_grad():
        return model.eval()(tokens, pos, None)


def main():
    import dataclasses

    from megatron_dsm import checkpoint, platform
    from megatron_dsm.models import hf_convert
    from megatron_dsm.models.gpt import build_model, transformer_config

    hf_dir, work, out = sys.argv[1:4]
    hf_convert.import_hf(hf_dir, f"{work}/imported")           # local spec, no TE extra state
    cfg = hf_convert.model_config_from_hf(hf_convert.read_hf_config(hf_dir))
    tokens = torch.randint(0, cfg.vocab_size, (2, 16), generator=torch.Generator().manual_seed(3))
    res = {"te_keys": sorted(k for k in te_declaring_model(cfg).sharded_state_dict()
                             if k.endswith("_extra_state"))}
    te = scrambled(te_declaring_model(cfg))
    checkpoint.load_checkpoint(f"{work}/imported", te, None, finetune=True)
    res["te_logits"] = logits(te, tokens)[..., :cfg.vocab_size]
    res["te_extra_state"] = te.decoder.final_layernorm.extra_state_set     # its own, kept
    checkpoint.save_checkpoint(f"{work}/te", 1, te, None,
                               {"iteration": 1, "model_config": dataclasses.asdict(cfg)})
    local = scrambled(build_model(cfg, transformer_config(cfg)))
    checkpoint.load_checkpoint(f"{work}/te", local, None, finetune=True)
    res["local_logits"] = logits(local, tokens)[..., :cfg.vocab_size]
    te2 = scrambled(te_declaring_model(cfg))                 # and TE's own checkpoint into TE
    checkpoint.load_checkpoint(f"{work}/te", te2, None, finetune=True)
    res["te2_extra_state"] = te2.decoder.final_layernorm.extra_state_set
    hf_convert.export_hf(f"{work}/te", f"{work}/hf_back")
    res["tokens"] = tokens
    torch.save(res, out)
    platform.destroy_distributed()


if __name__ == "__main__":
    main()
