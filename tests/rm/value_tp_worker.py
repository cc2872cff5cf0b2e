"""Worker for test_value_head.py (plain python at TP=1, torchrun at TP=2).

save (TP=1): scores of the fresh layout-independent init; then perturbs every
weight (seeded), scores again and saves a checkpoint; also saves a plain
language-model GPTModel checkpoint and checks that it initialises a value
model's backbone (head left at its init).
load (TP=2): scores of the fresh init, then loads the TP=1 checkpoint
(resharded by dist_checkpointing) and scores again.
"""
import argparse
import dataclasses
import os
import sys

import torch

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))

from megatron_dsm import platform  # noqa: E402
from megatron_dsm.models.config import ModelConfig  # noqa: E402
from megatron_dsm.models.gpt import build_model, layout_independent_init, transformer_config  # noqa: E402
from megatron_dsm.models.value_head import build_value_model, load_weights  # noqa: E402
from megatron_dsm import checkpoint as checkpointing  # noqa: E402

MCFG = ModelConfig(num_layers=2, hidden_size=64, num_attention_heads=4, ffn_hidden_size=176,
                   vocab_size=300, seq_length=32)


def scores(model):
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 300, (3, 24), generator=g)
    pos = torch.arange(24).expand(3, 24)
    with torch.no_grad():
        return model(tokens, pos, None).detach().clone()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=("save", "load"), required=True)
    ap.add_argument("--tp", type=int, default=1)
    ap.add_argument("--dir", required=True)
    a = ap.parse_args()
    platform.initialize_distributed(a.tp, 1, seed=1)
    tc = transformer_config(MCFG, tp=a.tp)
    model = build_value_model(MCFG, tc)
    layout_independent_init(model, seed=11, std=0.05, num_layers=MCFG.num_layers)
    model.eval()
    out = {"fresh": scores(model)}
    common = {"model_config": dataclasses.asdict(MCFG)}
    if a.mode == "save":
        g = torch.Generator().manual_seed(5)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=g))
        out["trained"] = scores(model)
        checkpointing.save_checkpoint(os.path.join(a.dir, "rm"), 1, model, None, common)
        # a language-model checkpoint initialises the backbone only
        lm = build_model(MCFG, tc)
        layout_independent_init(lm, seed=99, std=0.05, num_layers=MCFG.num_layers)
        checkpointing.save_checkpoint(os.path.join(a.dir, "lm"), 3, lm, None, common)
        fresh2 = build_value_model(MCFG, tc)
        layout_independent_init(fresh2, seed=11, std=0.05, num_layers=MCFG.num_layers)
        head0 = fresh2.value_head.weight.detach().clone()
        info = load_weights(fresh2, os.path.join(a.dir, "lm"))
        assert info["head_loaded"] is False, info
        lm_sd, v_sd = lm.state_dict(), fresh2.state_dict()
        shared = [k for k in v_sd if not k.startswith("value_head.") and not k.endswith("_extra_state")]
        assert shared and all(torch.equal(v_sd[k], lm_sd[k]) for k in shared)
        assert torch.equal(fresh2.value_head.weight, head0)
        out["lm_backbone_keys"] = len(shared)
    else:
        info = load_weights(model, os.path.join(a.dir, "rm"))
        assert info["head_loaded"] is True, info
        out["loaded"] = scores(model)
    rank = torch.distributed.get_rank()
    torch.save(out, os.path.join(a.dir, f"{a.mode}_tp{a.tp}_rank{rank}.pt"))
    platform.destroy_distributed()


if __name__ == "__main__":
    main()
