"""Run under torchrun (or plain python for one process): build the same
layout-independent tiny model at the given TP, then write greedy and sampled
generations and token log-probs to OUT/rank_R.pt for the test to compare."""
import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from megatron_dsm import platform  # noqa: E402
from megatron_dsm.models import generation as G  # noqa: E402
from megatron_dsm.models.config import ModelConfig  # noqa: E402
from megatron_dsm.models.gpt import build_model, layout_independent_init, transformer_config  # noqa: E402

PROMPTS = [[5, 6, 7, 8, 9, 10], [11, 12], [3, 249, 17], [42]]
VOCAB = 250


def tiny_model(tp: int, pp: int = 1):
    cfg = ModelConfig(num_layers=2, hidden_size=64, num_attention_heads=4, ffn_hidden_size=128,
                      vocab_size=VOCAB, seq_length=64)
    model = build_model(cfg, transformer_config(cfg, tp=tp, pp=pp))
    layout_independent_init(model, seed=11, std=0.25, num_layers=cfg.num_layers)
    return model


def record_pp_refusal(tp: int, pp: int, out: Path, rank: int) -> None:
    model = tiny_model(tp, pp)
    try:
        G.generate(model, PROMPTS, G.SamplingParams(max_new_tokens=2))
        msg = "no error"
    except G.GenerationError as e:
        msg = str(e)
    (out / f"pp_rank_{rank}.txt").write_text(msg)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tp", type=int, default=1)
    ap.add_argument("--pp", type=int, default=1)
    ap.add_argument("--then-pp", type=int, default=0,
                    help="afterwards, rebuild the parallel state at this PP and record the refusal")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    platform.initialize_distributed(a.tp, a.pp, seed=5)
    rank = torch.distributed.get_rank()
    out = Path(a.out)
    if a.pp > 1:
        record_pp_refusal(a.tp, a.pp, out, rank)
        platform.destroy_distributed()
        return
    model = tiny_model(a.tp)
    greedy = G.generate(model, PROMPTS, G.SamplingParams(max_new_tokens=12), vocab_size=VOCAB)
    sampled = G.generate(model, PROMPTS, G.SamplingParams(max_new_tokens=12, temperature=1.0,
                                                          top_p=0.9, n=3, seed=4), vocab_size=VOCAB)
    seqs = [p + c for p, c in zip(greedy.prompts, greedy.completions)]
    toks, real = G.left_pad(seqs, 0, platform.device())
    with torch.no_grad():
        lp = G.token_logprobs(model, toks, real=real, temperature=0.7, vocab_size=VOCAB)
    # the module-free engine over the same (TP-sharded) weights
    from megatron_dsm.models.direct_decode import DirectDecoder, DirectRolloutEngine

    eng = DirectRolloutEngine(model, vocab_size=VOCAB)
    d_greedy = eng.generate(PROMPTS, G.SamplingParams(max_new_tokens=12))
    d_sampled = eng.generate(PROMPTS, G.SamplingParams(max_new_tokens=12, temperature=1.0,
                                                       top_p=0.9, n=3, seed=4))
    with torch.no_grad():
        d_lp = G.logprobs_of_targets(DirectDecoder(model).vocab_parallel_logits(toks, real)[:, :-1],
                                     toks[:, 1:], temperature=0.7, vocab_size=VOCAB)
    # the frozen reference's path: each distinct prompt once, G=3 rows per prompt
    from megatron_dsm.rl.packing import pack_shared_prompts, packed_direct_logprobs, packed_logprobs
    from megatron_dsm.rl.rollout import build_batch, response_logprobs

    rb = build_batch(d_sampled.prompts, d_sampled.completions, 0)
    with torch.no_grad():
        ref_direct = packed_direct_logprobs(DirectDecoder(model), pack_shared_prompts(rb),
                                            temperature=0.7, vocab_size=VOCAB)
        ref_megatron = response_logprobs(model, rb, temperature=0.7, vocab_size=VOCAB)
        # the policy's training layout (rl/packing.py): each prompt once in GPTModel.forward
        packed = packed_logprobs(model, pack_shared_prompts(rb), temperature=0.7, vocab_size=VOCAB)
    torch.save({"greedy": greedy.completions, "sampled": sampled.completions,
                "ref_direct": ref_direct, "ref_megatron": ref_megatron, "packed": packed,
                "logprobs": lp, "real": real, "tps": greedy.tokens_per_second,
                "direct_greedy": d_greedy.completions, "direct_sampled": d_sampled.completions,
                "direct_logprobs": d_lp}, out / f"rank_{rank}.pt")
    if a.then_pp > 1:   # same processes, new layout: saves a second torchrun start
        from megatron.core import parallel_state

        parallel_state.destroy_model_parallel()
        platform.initialize_distributed(1, a.then_pp, seed=5)
        record_pp_refusal(1, a.then_pp, out, rank)
    platform.destroy_distributed()


if __name__ == "__main__":
    main()
