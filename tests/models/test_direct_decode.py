"""The module-free decode path (models/direct_decode.py) against megatron-core's
GPTModel: logits, sampled tokens, reference log-probs, scope checks; and the
inverse-CDF categorical draw the sampler uses.  TP=2 is covered in
test_generation.py::test_tp2_equals_tp1 (gen_worker.py records both engines)."""
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from gen_worker import PROMPTS, VOCAB  # noqa: E402

from megatron_dsm import platform  # noqa: E402
from megatron_dsm.models import direct_decode as D  # noqa: E402
from megatron_dsm.models import engines as E  # noqa: E402
from megatron_dsm.models import generation as G  # noqa: E402
from megatron_dsm.models.config import ModelConfig  # noqa: E402
from megatron_dsm.models.gpt import build_model, layout_independent_init, transformer_config  # noqa: E402


def _model(**kw):
    cfg = ModelConfig(num_layers=2, hidden_size=64, num_attention_heads=4, ffn_hidden_size=128,
                      vocab_size=VOCAB, seq_length=64, **kw)
    model = build_model(cfg, transformer_config(cfg))
    layout_independent_init(model, seed=11, std=0.25, num_layers=cfg.num_layers)
    return model


@pytest.fixture(scope="module")
def models():
    from megatron.core import parallel_state

    started = not parallel_state.model_parallel_is_initialized()
    platform.initialize_distributed(1, 1, seed=5)
    yield {"gqa-untied": _model(num_query_groups=2),
           "mha-tied": _model(untie_embeddings_and_output_weights=False)}
    if started:
        platform.destroy_distributed()


def _padded(prompts):
    toks, real = G.left_pad(prompts, 0, platform.device())
    pos = torch.arange(toks.size(1))[None].expand(len(prompts), -1)
    return toks, real, pos


@pytest.mark.parametrize("name", ["gqa-untied", "mha-tied"])
@torch.no_grad()
def test_logits_equal_gptmodel(models, name):
    """Every real position of a left-padded batch: the same logits as
    GPTModel.forward (fp32, max abs diff 1e-5 against logits of size ~5)."""
    model = models[name]
    seqs = [p + [3, 4, 5] for p in PROMPTS]
    toks, real, pos = _padded(seqs)
    ref = model(toks, pos, G.attention_mask(real, toks.size(1)))
    got = D.DirectDecoder(model).vocab_parallel_logits(toks, real)
    assert got.shape == ref.shape
    assert (got - ref)[real].abs().max().item() < 1e-5
    assert ref[real].abs().max().item() > 1.0          # not a trivially small comparison
    # unpadded batch: plain causal attention, no mask
    toks = torch.tensor([PROMPTS[0] * 2])
    pos = torch.arange(toks.size(1))[None]
    assert (D.DirectDecoder(model).vocab_parallel_logits(toks) - model(toks, pos, None)).abs().max() < 1e-5


@pytest.mark.parametrize("name", ["gqa-untied", "mha-tied"])
@pytest.mark.parametrize("kw", [
    dict(),
    dict(temperature=1.0, n=3, seed=4, top_p=0.9),
    dict(temperature=0.7, n=2, seed=9, stop_ids="2nd and 5th token of row 0"),
    dict(temperature=1.0, n=4, seed=5, stop_strings=("<1", "<7")),
])
def test_sampled_tokens_equal_megatron_engine(models, name, kw):
    """Same seed -> the same tokens as the megatron-core path (the draw is
    shared, and the logits agree to ~1e-6), rows stopping at different steps,
    left padding, top-p; the sampler's log-probs agree to 1e-4."""
    model = models[name]
    decode = lambda ids: "".join(f"<{i}>" for i in ids)  # noqa: E731
    if isinstance(kw.get("stop_ids"), str):    # stop ids this model really samples
        row = G.generate(model, PROMPTS, G.SamplingParams(max_new_tokens=14, **dict(kw, stop_ids=())),
                         vocab_size=VOCAB).completions[0]
        kw = dict(kw, stop_ids=(row[1], row[4]))
    p = G.SamplingParams(max_new_tokens=14, **kw)
    ref = G.MegatronRolloutEngine(model, vocab_size=VOCAB, decode=decode).generate(PROMPTS, p)
    eng = D.DirectRolloutEngine(model, vocab_size=VOCAB, decode=decode)
    out = eng.generate(PROMPTS, p)
    assert out.completions == ref.completions
    assert out.finished == ref.finished and out.new_tokens == ref.new_tokens
    diff = max(abs(a - b) for r1, r2 in zip(out.logprobs, ref.logprobs) for a, b in zip(r1, r2))
    assert diff < 1e-4
    assert eng.last_tokens_per_second > 0
    if p.stop_ids or p.stop_strings:
        assert len({len(c) for c in out.completions}) > 1


def test_engine_follows_weight_updates(models):
    """Weights are shared, not copied: an in-place update shows up at once."""
    model = models["gqa-untied"]
    eng = D.DirectRolloutEngine(model, vocab_size=VOCAB)
    p = G.SamplingParams(max_new_tokens=6)
    before = eng.generate(PROMPTS, p).completions
    w = model.output_layer.weight
    saved = w.detach().clone()
    try:
        with torch.no_grad():
            w.mul_(-1.0)                     # a different policy
        eng.update_weights(model)
        after = eng.generate(PROMPTS, p).completions
        assert after == G.generate(model, PROMPTS, p, vocab_size=VOCAB).completions
        assert after != before
    finally:
        with torch.no_grad():
            w.copy_(saved)


def test_reference_logprobs_through_direct_path(models):
    """The frozen reference computes log-probs with the direct forward and
    megatron-core's vocab_parallel_cross_entropy; equal to GPTModel's."""
    from megatron_dsm.rl.rollout import ReferenceModel, build_batch, response_logprobs_chunked

    policy = models["gqa-untied"]
    ref = ReferenceModel(policy, _model(num_query_groups=2))
    assert ref.direct is not None
    batch = build_batch(PROMPTS, [[9, 10, 11], [12], [13, 14], [15, 16, 17, 18]], 0)
    got = ref.logprobs(batch, 2, temperature=0.7, vocab_size=VOCAB)
    want = response_logprobs_chunked(policy, batch, 2, temperature=0.7, vocab_size=VOCAB)
    assert got.shape == want.shape
    assert (got - want).abs().max().item() < 1e-5
    assert (got[batch.mask > 0] < 0).all()
    # GRPO groups (G=3 rows per prompt, responses of different lengths; one
    # chunk holds a group and a half): each prompt runs once per chunk
    prompts = [p for p in PROMPTS[:3] for _ in range(3)]
    responses = [[9 + i] * (1 + i % 4) for i in range(9)]
    batch = build_batch(prompts, responses, 0)
    got = ref.logprobs(batch, 5, temperature=1.0, vocab_size=VOCAB)
    want = response_logprobs_chunked(policy, batch, 5, temperature=1.0, vocab_size=VOCAB)
    assert (got - want).abs().max().item() < 1e-5
    assert torch.equal(got == 0, batch.mask == 0)
    # long responses behind a 1-token prompt: packing would cost more than
    # rows (packing.cheaper_than_rows), so GPTModel's row layout runs
    from megatron_dsm.rl import packing

    batch = build_batch([[42]] * 4, [[9 + i] * 40 for i in range(4)], 0)
    assert not packing.cheaper_than_rows(packing.pack_shared_prompts(batch), batch, policy.config)
    got = ref.logprobs(batch, 4, temperature=1.0, vocab_size=VOCAB)
    want = response_logprobs_chunked(policy, batch, 4, temperature=1.0, vocab_size=VOCAB)
    assert (got - want).abs().max().item() < 1e-5


def test_scope_checks_and_engine_choice(models):
    model = models["mha-tied"]
    assert D.unsupported_reason(model) is None
    assert isinstance(E.engine_for("auto", model), D.DirectRolloutEngine)
    assert isinstance(E.engine_for("megatron", model), G.MegatronRolloutEngine)
    model.config.qk_layernorm = True
    try:
        assert D.unsupported_reason(model) == "qk layernorm"
        assert isinstance(E.engine_for("auto", model), G.MegatronRolloutEngine)
        with pytest.raises(G.GenerationError, match="does not support this model: qk layernorm"):
            E.engine_for("direct", model)
    finally:
        model.config.qk_layernorm = False
    rope = model.rotary_pos_emb
    try:   # RoPE on half of each head: the joint rotation tables assume all of it
        from megatron.core.models.common.embeddings.rotary_pos_embedding import RotaryEmbedding

        model.rotary_pos_emb = RotaryEmbedding(kv_channels=model.config.kv_channels,
                                               rotary_percent=0.5)
        assert D.unsupported_reason(model) == "RoPE on part of each head (rotary_percent < 1)"
    finally:
        model.rotary_pos_emb = rope
    assert "not a megatron-core GPTModel" in D.unsupported_reason(torch.nn.Linear(2, 2))
    with pytest.raises(G.GenerationError, match="unknown rollout engine 'sglang'"):
        E.engine_for("sglang", model)


def test_draw_categorical_distribution():
    """Inverse-CDF draws follow the distribution (rows need not be
    normalised), never pick zero-probability entries, and are reproducible."""
    probs = torch.tensor([[0.0, 0.5, 0.0, 0.3, 0.2, 0.0],
                          [2.0, 0.0, 0.0, 0.0, 0.0, 2.0],      # unnormalised, mass 4
                          [0.0, 0.0, 0.0, 0.0, 0.0, 1e-30]])   # only the last entry
    n = 20000
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([G.draw_categorical(probs, g) for _ in range(n)])   # [n, 3]
    freq0 = torch.bincount(draws[:, 0], minlength=6).float() / n
    assert freq0[[0, 2, 5]].sum() == 0
    # binomial std of a share p over 20000 draws is <= 0.0036: allow 4 sigma
    assert (freq0 - probs[0]).abs().max() < 0.015
    freq1 = torch.bincount(draws[:, 1], minlength=6).float() / n
    assert set(draws[:, 1].unique().tolist()) == {0, 5} and abs(freq1[0] - 0.5) < 0.015
    assert (draws[:, 2] == 5).all()
    a = G.draw_categorical(probs, torch.Generator().manual_seed(3))
    b = G.draw_categorical(probs, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_draw_categorical_rounding_edge(monkeypatch):
    """A uniform that rounds up to the total lands on the last entry with
    mass, never on the zero-probability tail (the padded vocabulary)."""
    probs = torch.tensor([[0.25, 0.75, 0.0, 0.0], [0.0, 0.0, 0.6, 0.0]])
    real_rand = torch.rand
    monkeypatch.setattr(torch, "rand", lambda shape, **kw: torch.ones(shape, dtype=kw.get("dtype")))
    assert G.draw_categorical(probs, None).tolist() == [1, 2]
    monkeypatch.setattr(torch, "rand", lambda shape, **kw: torch.zeros(shape, dtype=kw.get("dtype")))
    assert G.draw_categorical(probs, None).tolist() == [0, 2]    # first entry with mass
    monkeypatch.setattr(torch, "rand", real_rand)


@pytest.mark.parametrize("name", ["gqa-untied", "mha-tied"])
@torch.no_grad()
def test_token_logprobs_from_a_later_position(models, name):
    """first=k returns columns k.. of the full log-prob matrix (what
    rollout.response_logprobs asks for: no cross entropy on the prompt);
    out-of-range k is refused."""
    model = models[name]
    toks = torch.tensor([PROMPTS[0] + [20, 21, 22], PROMPTS[2] + [1, 2, 3, 4, 5, 6]])
    full = G.token_logprobs(model, toks, temperature=0.7, vocab_size=VOCAB)
    for k in (1, 4, toks.size(1) - 2):
        part = G.token_logprobs(model, toks, temperature=0.7, vocab_size=VOCAB, first=k)
        assert part.shape == (2, toks.size(1) - 1 - k)
        assert (part - full[:, k:]).abs().max().item() < 1e-6
    with pytest.raises(G.GenerationError, match="first must be in 0..7"):
        G.token_logprobs(model, toks, first=toks.size(1) - 1)
