"""The frozen RL reference saved through dist_checkpointing and loaded at
another layout.

save (torchrun, 2 processes): at TP=2 a reference copied from a policy
writes OUT/tp2 and its response log-probs OUT/tp2.pt; the same processes
at DP=2 write OUT/dp2 (once, not once per replica) and OUT/dp2.pt.
load (one process, TP=1): a reference copied from a policy with other
weights loads each folder and records its log-probs in OUT/load.pt.

usage: reference_worker.py save|load OUT
"""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from megatron_dsm import platform  # noqa: E402
from megatron_dsm.models.config import ModelConfig  # noqa: E402
from megatron_dsm.models.gpt import build_model, layout_independent_init, transformer_config  # noqa: E402
from megatron_dsm.rl.rollout import ReferenceModel, build_batch  # noqa: E402

VOCAB = 250
PROMPTS = [[5, 6, 7, 8], [5, 6, 7, 8], [11, 12], [11, 12], [3, 249, 17], [42]]
RESPONSES = [[9, 10, 11], [9, 13], [12, 14, 15, 16], [1], [20, 21], [30, 31, 32]]


def model(tp: int, seed: int):
    cfg = ModelConfig(num_layers=2, hidden_size=64, num_attention_heads=4, ffn_hidden_size=128,
                      vocab_size=VOCAB, seq_length=64)
    m = build_model(cfg, transformer_config(cfg, tp=tp))
    layout_independent_init(m, seed=seed, std=0.25, num_layers=cfg.num_layers)
    return m


def logprobs(ref: ReferenceModel) -> torch.Tensor:
    return ref.logprobs(build_batch(PROMPTS, RESPONSES, 0), 3, temperature=0.7, vocab_size=VOCAB)


def save(out: Path) -> None:
    from megatron.core import parallel_state

    for name, tp in (("tp2", 2), ("dp2", 1)):
        platform.initialize_distributed(tp, 1, seed=5)
        ref = ReferenceModel(model(tp, seed=11), model(tp, seed=12))
        ref.save(out / name)
        lp = logprobs(ref)                   # every rank: TP collectives
        if torch.distributed.get_rank() == 0:
            torch.save(lp, out / f"{name}.pt")
        torch.distributed.barrier()
        parallel_state.destroy_model_parallel()
    platform.destroy_distributed()


def load(out: Path) -> None:
    platform.initialize_distributed(1, 1, seed=5)
    res = {}
    for name in ("tp2", "dp2"):
        ref = ReferenceModel(model(1, seed=13), model(1, seed=14))
        res[f"{name}_before"] = logprobs(ref)
        ref.load(out / name)
        res[name] = logprobs(ref)
    res["param_bytes"] = sum(p.numel() * p.element_size() for p in ref.model.parameters())
    torch.save(res, out / "load.pt")
    platform.destroy_distributed()


if __name__ == "__main__":
    {"save": save, "load": load}[sys.argv[1]](Path(sys.argv[2]))
