"""Run under torchrun (gloo): a tiny policy trained a few steps at the given
training TP, then vLLM (``models.vllm_engine``) in the same processes,
refitted from it at its own TP; writes what it saw to OUT/rank_R.json.

Checks recorded (test_vllm_engine.py asserts them): greedy tokens against
the direct engine over the same weights, vLLM's log-probs against
megatron-core's (vocab-parallel cross entropy) greedy and sampled, stop ids,
which requests each vLLM instance ran, and, with ``--perturb``, that every
slice of every parameter reaches vLLM: each piece of each tensor, on each
TP rank that holds a piece of it, is perturbed alone, vLLM refitted, and
its rollout must change (then the weight is put back)."""
import argparse
import json
import os
import sys
import zlib
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from megatron_dsm.models import generation as G  # noqa: E402
from megatron_dsm.models.config import ModelConfig  # noqa: E402
from megatron_dsm.models.direct_decode import DirectRolloutEngine  # noqa: E402
from megatron_dsm.models.engines import engine_for  # noqa: E402
from megatron_dsm.models.gpt import sharded_parameters, unwrap  # noqa: E402
from megatron_dsm.models.hf_convert.live import hf_weights  # noqa: E402
from megatron_dsm.models.vllm_engine import VLLMOptions  # noqa: E402
from megatron_dsm.rl.rollout import build_batch, response_logprobs  # noqa: E402
from megatron_dsm.training.arguments import TrainConfig  # noqa: E402
from megatron_dsm.training.loop import Trainer  # noqa: E402
from megatron_dsm.training.pretrain import gpt_forward_step  # noqa: E402

VOCAB = 259
# 257: a token in the second half of the padded vocabulary (512 at TP=2), so
# the embedding and output shards of TP rank 1 are read by the rollout too
PROMPTS = [[5, 6, 7, 8, 9, 10], [11, 12], [3, 257, 17], [42], [100, 101, 102, 103]]


def cfg() -> ModelConfig:
    # head size 32: one of vLLM's CPU attention sizes; GQA (2 query groups)
    # init std 0.2: peaked logits, so greedy decoding has no near-ties to fall either way
    return ModelConfig(num_layers=2, hidden_size=128, num_attention_heads=4, num_query_groups=2,
                       ffn_hidden_size=256, vocab_size=VOCAB, seq_length=96, init_method_std=0.2)


def trained(tp: int, world: int) -> Trainer:
    """A policy moved away from its initialisation by a few Adam steps at TP."""
    dp = world // tp
    t = TrainConfig(tensor_model_parallel_size=tp, micro_batch_size=4, global_batch_size=4 * dp,
                    train_iters=3, lr=5e-3, lr_decay_style="constant", seed=7)
    trainer = Trainer(t, cfg())
    before = [p.detach().clone() for p in unwrap(trainer.model).parameters()]
    g = torch.Generator().manual_seed(1 + torch.distributed.get_rank() // tp)
    for _ in range(3):
        tok = torch.randint(0, VOCAB, (4, 33), generator=g)
        batch = {"tokens": tok[:, :-1], "labels": tok[:, 1:], "loss_mask": torch.ones(4, 32),
                 "position_ids": torch.arange(32).expand(4, 32)}
        trainer.train_step(gpt_forward_step, [batch], seq_length=32, micro_batch_size=4,
                           num_microbatches=1)
    trainer.moved = all(not torch.equal(a, b) for a, b in zip(before, unwrap(trainer.model).parameters()))
    return trainer


def max_diff(out: G.GenerationOutput, model, temperature: float) -> float:
    """Largest |vLLM log-prob - megatron-core log-prob| over the sampled tokens."""
    batch = build_batch(out.prompts, out.completions, 0)
    with torch.no_grad():
        ref = response_logprobs(model, batch, temperature=temperature, vocab_size=VOCAB)
    return max(abs(a - float(ref[i, j])) for i, row in enumerate(out.logprobs) for j, a in enumerate(row))


@torch.no_grad()
def perturbations(model, engine, prompts, base: G.GenerationOutput) -> list:
    """(tensor, piece offset, rank perturbed, rollout changed) for every piece
    of every parameter and every TP rank holding a slice of it."""
    from megatron.core import parallel_state as ps

    tp, rank = ps.get_tensor_model_parallel_world_size(), ps.get_tensor_model_parallel_rank()
    greedy = G.SamplingParams(max_new_tokens=8)
    out = []
    for st in sharded_parameters(unwrap(model)):
        pre = st.prepend_axis_num
        whole = tuple(st.global_shape[pre:])
        owners = range(tp) if tuple(st.local_shape) != whole else [None]   # None: replicated
        for owner in owners:
            keep = st.data.detach().clone()
            if owner is None or owner == rank:
                g = torch.Generator().manual_seed(zlib.crc32(f"{st.key}{st.global_offset}".encode()))
                st.data.add_(torch.randn(st.data.shape, generator=g) * (keep.std() + 0.1))
            engine.update_weights(model)
            got = engine.generate(prompts, greedy)
            st.data.copy_(keep)
            moved = got.completions != [c[:8] for c in base.completions] or max(
                abs(a - b) for x, y in zip(got.logprobs, base.logprobs) for a, b in zip(x, y)) > 1e-3
            out.append([st.key, list(st.global_offset), owner, bool(moved)])
    engine.update_weights(model)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tp", type=int, default=2)
    ap.add_argument("--vllm-tp", type=int, default=1)
    ap.add_argument("--perturb", action="store_true")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    world = int(os.environ["WORLD_SIZE"])
    trainer = trained(a.tp, world)
    model = trainer.model
    rank = torch.distributed.get_rank()
    dp_rank = rank // a.tp
    prompts = PROMPTS if dp_rank == 0 else PROMPTS[1:3]        # data-parallel ranks differ
    eng = engine_for("vllm", model, model_cfg=cfg(), vocab_size=VOCAB,
                     vllm=VLLMOptions(tensor_parallel_size=a.vllm_tp, seed=3))
    eng.update_weights(model)
    names = [n for n, _ in hf_weights(model, cfg())]
    greedy = G.SamplingParams(max_new_tokens=16)
    v = eng.generate(prompts, greedy)
    ran = eng.last_requests
    d = DirectRolloutEngine(model, vocab_size=VOCAB).generate(prompts, greedy)
    sampled_params = G.SamplingParams(max_new_tokens=16, temperature=0.8, n=4, seed=11)
    s = eng.generate(prompts, sampled_params)
    s_again = eng.generate(prompts, sampled_params)
    stop = v.completions[0][3]
    cut = eng.generate(prompts[:1], G.SamplingParams(max_new_tokens=16, stop_ids=(stop,)))
    res = {"rank": rank, "vllm_greedy": v.completions, "direct_greedy": d.completions,
           "greedy_max_diff": max_diff(v, unwrap(model), 1.0),
           "sampled_max_diff": max_diff(s, unwrap(model), 0.8),
           "sampled": s.completions, "sampled_again": s_again.completions,
           "sampled_distinct": len({tuple(c) for c in s.completions[:4]}),
           "stop": stop, "cut": cut.completions[0], "cut_finished": cut.finished[0],
           "uncut": v.completions[0], "requests_run": ran, "prompts": len(prompts),
           "hf_names": names, "refit_seconds": eng.last_refit_seconds, "trained": trainer.moved,
           "distinct_greedy_tokens": len({t for c in v.completions for t in c})}
    if a.perturb:
        res["perturbed"] = perturbations(model, eng, prompts, v)
    Path(a.out, f"rank_{rank}.json").write_text(json.dumps(res))
    torch.distributed.barrier()


if __name__ == "__main__":
    main()
