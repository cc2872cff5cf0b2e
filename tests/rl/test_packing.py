"""Shared-prompt packing (rl/packing.py): the layout by hand, log-probs and
parameter gradients equal to the row layout's, the scope check, and the RoPE
override's clean-up.  TP=2 is in tests/models/test_generation.py::
test_tp2_equals_tp1 (gen_worker.py records the packed log-probs too)."""
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))

from gen_worker import VOCAB  # noqa: E402

from megatron_dsm import platform  # noqa: E402
from megatron_dsm.models.config import ModelConfig  # noqa: E402
from megatron_dsm.models.gpt import build_model, layout_independent_init, transformer_config  # noqa: E402
from megatron_dsm.rl import packing  # noqa: E402
from megatron_dsm.rl.rollout import build_batch, response_logprobs  # noqa: E402


@pytest.fixture(scope="module")
def model():
    from megatron.core import parallel_state

    started = not parallel_state.model_parallel_is_initialized()
    platform.initialize_distributed(1, 1, seed=5)
    cfg = ModelConfig(num_layers=2, hidden_size=64, num_attention_heads=4, num_query_groups=2,
                      ffn_hidden_size=128, vocab_size=VOCAB, seq_length=64)
    m = build_model(cfg, transformer_config(cfg))
    layout_independent_init(m, seed=11, std=0.25, num_layers=cfg.num_layers)
    yield m
    if started:
        platform.destroy_distributed()


def test_layout_by_hand():
    # two rows share prompt [5, 6, 7]; one row has prompt [9]
    rb = build_batch([[5, 6, 7], [9], [5, 6, 7]], [[1, 2, 3], [8, 8], [4]], pad_id=0)
    p = packing.pack_shared_prompts(rb)
    # P_max = 3, segment = longest response - 1 = 2 inputs, 2 segments at most: L = 3 + 2 x 2
    assert p.tokens.tolist() == [[5, 6, 7, 1, 2, 0, 0],       # row 0 inputs [1, 2]; row 2 has none
                                 [0, 0, 9, 8, 0, 0, 0]]       # [9] left-padded; row 1 input [8]
    assert p.positions.tolist() == [0, 1, 2, 3, 4, 3, 4]
    # flat index (sequence x 7 + column) of the logits predicting each response token
    assert p.where.tolist() == [[2, 3, 4], [9, 10, 10], [2, 2, 2]]
    assert p.targets.tolist() == [[1, 2, 3], [8, 8, 0], [4, 0, 0]]
    assert p.mask.tolist() == rb.mask.tolist()
    seen = ~p.attn_mask[:, 0]                                  # True = may attend
    # row 0's second input (column 4) sees the prompt and its own first input
    assert seen[0, 4].tolist() == [True, True, True, True, True, False, False]
    # a pad column of a segment sees only itself; the padded prompt column too
    assert seen[0, 5].tolist() == [False] * 5 + [True, False]
    assert seen[1, 0].tolist() == [True] + [False] * 6
    # sequence 1: column 3 (row 1's input) sees the real prompt column, not its pads
    assert seen[1, 3].tolist() == [False, False, True, True, False, False, False]


def _logprobs_and_grads(model, fn, weights):
    model.zero_grad(set_to_none=True)
    lp = fn()
    (lp * weights).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return lp.detach(), grads


def test_packed_equals_row_layout(model):
    """Groups of different sizes and prompt lengths, an empty and a one-token
    response: log-probs within 1e-5 and every parameter gradient within 1e-5
    (relative to its largest entry)."""
    prompts = [[5, 6, 7, 8, 9]] * 3 + [[11, 12]] * 2 + [[42]]
    responses = [[1, 2, 3, 4], [7], [9, 9, 9, 9, 9, 9], [3, 3], [], [8, 8, 8]]
    rb = build_batch(prompts, responses, pad_id=0)
    w = torch.randn(rb.mask.shape, generator=torch.Generator().manual_seed(0))
    kw = dict(temperature=0.7, vocab_size=VOCAB)
    rows, g_rows = _logprobs_and_grads(model, lambda: response_logprobs(model, rb, **kw), w)
    packed = packing.pack_shared_prompts(rb)
    assert packed.tokens.size(0) == 3 and packed.tokens.numel() < rb.tokens.numel()
    pk, g_pk = _logprobs_and_grads(model, lambda: packing.packed_logprobs(model, packed, **kw), w)
    assert (rows - pk).abs().max().item() <= 1e-5
    assert torch.all(pk[rb.mask == 0] == 0) and torch.all(pk[rb.mask == 1] < 0)
    assert set(g_rows) == set(g_pk) and len(g_rows) == len(list(model.parameters()))
    for name, g in g_rows.items():
        rel = ((g - g_pk[name]).abs().max() / g.abs().max().clamp_min(1e-12)).item()
        assert rel <= 1e-5, (name, rel)


def test_rope_positions_is_undone_on_error(model):
    rope = model.rotary_pos_emb
    with pytest.raises(RuntimeError, match="boom"):
        with packing.rope_positions(model, torch.tensor([0, 1, 2, 1])):
            assert rope(4).shape[0] == 4 and torch.equal(rope(4)[3], rope.__class__.forward(rope, 3)[1])
            raise RuntimeError("boom")
    assert "forward" not in vars(rope)
    assert rope(5).shape[0] == 5


def test_scope_check(model):
    assert packing.unsupported_reason(model) is None
    assert "GPTModel" in packing.unsupported_reason(torch.nn.Linear(2, 2))
    layer = model.decoder.layers[0].self_attention
    core = layer.core_attention
    try:
        layer.core_attention = torch.nn.Identity()
        assert "core attention Identity" in packing.unsupported_reason(model)
    finally:
        layer.core_attention = core


def test_cost_rule_keeps_rows_when_the_attention_square_outgrows_the_saving():
    """h=64, ffn=128: a token costs 4*64^2 + 3*64*128 = 40,960 multiply-adds
    per layer, a query-key pair 128.  8 responses of 16 behind an 11-token
    prompt: packed 1 x 131 -> 131 * (40,960 + 131 * 128) = 7,562,368 against
    rows 8 x 27 -> 216 * (40,960 + 27 * 128) = 9,593,856: pack.  4 responses
    of 400 behind a 2-token prompt: packed 1 x 1,598 -> 392,315,392 against
    rows 4 x 402 -> 148,604,928: rows."""
    from types import SimpleNamespace

    cfg = SimpleNamespace(hidden_size=64, ffn_hidden_size=128)
    short = build_batch([[5] * 11] * 8, [[7] * 16] * 8, pad_id=0)
    p = packing.pack_shared_prompts(short)
    assert p.tokens.shape == (1, 131) and short.tokens.shape == (8, 27)
    assert packing.cheaper_than_rows(p, short, cfg)
    long = build_batch([[5, 6]] * 4, [[7] * 400] * 4, pad_id=0)
    p = packing.pack_shared_prompts(long)
    assert p.tokens.shape == (1, 1598) and long.tokens.shape == (4, 402)
    assert not packing.cheaper_than_rows(p, long, cfg)
