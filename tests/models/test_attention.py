"""models/attention.py: the lean core attention against megatron-core's
DotProductAttention (outputs and gradients), its fall-back cases, and that
the local layer spec uses it."""
import pytest
import torch
from megatron.core.transformer.dot_product_attention import DotProductAttention
from megatron.core.transformer.enums import AttnMaskType

from megatron_dsm import platform
from megatron_dsm.models.attention import LeanDotProductAttention
from megatron_dsm.models.config import ModelConfig
from megatron_dsm.models.gpt import build_model, layer_spec, transformer_config


@pytest.fixture(scope="module")
def dist():
    from megatron.core import parallel_state

    started = not parallel_state.model_parallel_is_initialized()
    platform.initialize_distributed(1, 1, seed=3)
    yield
    if started:
        platform.destroy_distributed()


def _pair(groups=4, dropout=0.0, mask_type=AttnMaskType.causal):
    cfg = ModelConfig(num_layers=1, hidden_size=64, num_attention_heads=4, ffn_hidden_size=128,
                      vocab_size=64, seq_length=32, num_query_groups=groups,
                      attention_dropout=dropout)
    tc = transformer_config(cfg)
    kw = dict(config=tc, layer_number=1, attn_mask_type=mask_type, attention_type="self")
    return LeanDotProductAttention(**kw), DotProductAttention(**kw)


def _qkv(sq, sk, b=3, heads=4, groups=4, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(sq, b, heads, d, generator=g).requires_grad_()
    k = torch.randn(sk, b, groups, d, generator=g).requires_grad_()
    v = torch.randn(sk, b, groups, d, generator=g).requires_grad_()
    return q, k, v


def _run(mod, q, k, v, mask=None):
    qq, kk, vv = (t.detach().clone().requires_grad_() for t in (q, k, v))
    out = mod(qq, kk, vv, mask)
    # a non-uniform upstream gradient, so every output element matters
    w = torch.linspace(-1, 1, out.numel()).view_as(out)
    (out * w).sum().backward()
    return out.detach(), [t.grad for t in (qq, kk, vv)]


@pytest.mark.parametrize("groups", [4, 2])
def test_causal_matches_megatron(dist, groups):
    """Training shape (sq == sk, no mask, causal), MHA and GQA, against
    megatron-core's DotProductAttention (fp32).  The scores are the same
    numbers (seen here: outputs and gradients bit for bit equal, except the
    key/value gradients with grouped keys, which megatron-core sums over
    repeated heads in another order: 7e-7 on values of size ~3); a BLAS may
    order a product's sums by memory layout, hence the 1e-6 bound."""
    lean, ref = _pair(groups)
    q, k, v = _qkv(9, 9, groups=groups)
    out, grads = _run(lean, q, k, v)
    out_r, grads_r = _run(ref, q, k, v)
    assert out.shape == out_r.shape == (9, 3, 64)
    assert (out - out_r).abs().max().item() <= 1e-6
    for a, b in zip(grads, grads_r):
        assert (a - b).abs().max().item() <= 1e-6
    # causality: the first position depends on nothing later
    q2, k2, v2 = (t.detach().clone() for t in (q, k, v))
    k2[5:] += 1.0
    v2[5:] -= 1.0
    with torch.no_grad():
        assert torch.equal(lean(q2, k2, v2, None)[:5], lean(q, k, v, None)[:5])


def test_single_query_attends_every_key(dist):
    """KV-cached decoding (sq == 1, no mask): megatron-core masks nothing, so
    neither may the lean path (a causal mask there would hide all but key 0)."""
    lean, ref = _pair()
    q, k, v = _qkv(1, 7)
    with torch.no_grad():
        out, out_r = lean(q, k, v, None), ref(q, k, v, None)
    assert (out - out_r).abs().max().item() <= 1e-6
    with torch.no_grad():
        k2 = k.detach().clone()
        k2[-1] += 3.0
        assert not torch.allclose(lean(q, k2, v, None), out)   # the last key counts


@pytest.mark.parametrize("groups", [4, 2])
def test_explicit_mask_matches_megatron(dist, groups):
    """An explicit mask where every query sees a key (a packed layout:
    segments that see a shared prefix and, causally, themselves; mask batch 1
    broadcast over b = 3) takes the lean path as an additive bias: outputs
    and gradients within 1e-6 of megatron-core's -10000 fill (bit for bit
    here with MHA)."""
    lean, ref = _pair(groups)
    q, k, v = _qkv(7, 7, groups=groups)
    seg = torch.tensor([0, 0, 0, 1, 1, 2, 2])              # a 3-token prefix, two 2-token segments
    seen = torch.ones(7, 7, dtype=torch.bool).tril() & ((seg[None] == 0) | (seg[None] == seg[:, None]))
    mask = ~seen[None, None]
    calls = []
    orig = DotProductAttention.forward
    DotProductAttention.forward = lambda self, *a, **k: calls.append(1) or orig(self, *a, **k)
    try:
        out, grads = _run(lean, q, k, v, mask)
    finally:
        DotProductAttention.forward = orig
    out_r, grads_r = _run(ref, q, k, v, mask)
    assert calls == []                                     # megatron-core's forward did not run
    assert (out - out_r).abs().max().item() <= 1e-6
    for a, b in zip(grads, grads_r):
        assert (a - b).abs().max().item() <= 1e-6
    if groups == 4:
        assert torch.equal(out, out_r)
    # segment 2 (queries 5-6) does not see segment 1 (keys 3-4)
    k2, v2 = k.detach().clone(), v.detach().clone()
    k2[3:5] += 1.0
    v2[3:5] -= 1.0
    with torch.no_grad():
        assert torch.equal(lean(q, k2, v2, mask)[5:], out[5:])


def test_fully_masked_rows_and_dropout_go_to_megatron(dist, monkeypatch):
    """A mask with a query that sees nothing (left padding: megatron fills
    -10000, keeping such rows finite) and training-time dropout are
    megatron-core's own code path, bit for bit."""
    calls = []
    orig = DotProductAttention.forward

    def spy(self, *a, **k):
        calls.append(type(self).__name__)
        return orig(self, *a, **k)

    monkeypatch.setattr(DotProductAttention, "forward", spy)
    lean, ref = _pair()
    q, k, v = _qkv(6, 6)
    mask = torch.zeros(3, 1, 6, 6, dtype=torch.bool)
    mask[0, :, :, :2] = True                       # row 0: two left pads, queries 0-1 see nothing
    mask |= torch.ones(6, 6, dtype=torch.bool).triu(1)
    with torch.no_grad():
        out, out_r = lean(q, k, v, mask), ref(q, k, v, mask)
    assert torch.equal(out, out_r) and torch.isfinite(out).all()
    assert calls == ["LeanDotProductAttention", "DotProductAttention"]

    calls.clear()
    drop, _ = _pair(dropout=0.5)
    drop.train()
    drop(q, k, v, None)
    drop.eval()
    drop(q, k, v, None)                            # eval: dropout is off, the lean path is exact
    assert calls == ["LeanDotProductAttention"]


def test_local_spec_builds_it(dist):
    spec = layer_spec(use_te=False)
    assert spec.submodules.self_attention.submodules.core_attention is LeanDotProductAttention
    cfg = ModelConfig(num_layers=1, hidden_size=64, num_attention_heads=4, ffn_hidden_size=128,
                      vocab_size=64, seq_length=32)
    model = build_model(cfg, transformer_config(cfg), use_te=False)
    core = model.decoder.layers[0].self_attention.core_attention
    assert type(core) is LeanDotProductAttention
