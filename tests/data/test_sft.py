"""SFT data: template, masking, FFD packing, storage, and the two must-show
properties on a real megatron-core GPTModel (CPU, fp32):

* packing equivalence: loss of packed samples == token-weighted loss of the
  same samples run one by one (relative 1e-5);
* masking: changing the targets of prompt positions changes neither the loss
  nor any gradient.
"""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from megatron_dsm.config import ConfigError
from megatron_dsm.data import sft


# --------------------------------------------------------------------------- tokenizers


class BPEAdapter:
    """A ``tokenizers`` byte-level BPE seen through the encode()/eod surface
    sft.py asks for."""

    def __init__(self, tok):
        self.tok = tok
        self.eod = tok.token_to_id("<eos>")
        self.vocab_size = tok.get_vocab_size()

    def encode(self, text):
        return self.tok.encode(text).ids

    def decode(self, ids):
        return self.tok.decode(list(ids), skip_special_tokens=False)


def train_bpe(texts, vocab_size):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<eos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer)
    return BPEAdapter(tok)


@pytest.fixture(scope="module")
def byte_tok():
    # 1 special + 256 byte symbols and no merges: one token per byte, so
    # positions can be counted by hand.
    return train_bpe(["User: hi\n\nAssistant: ok"], vocab_size=257)


CORPUS = [
    "User: What is 2 + 3?\n\nAssistant: 2 + 3 = 5. The answer is 5.",
    "User: Tom has 4 apples and eats 1. How many are left?\n\nAssistant: 4 - 1 = 3.",
    "print(sum(range(10)))", "The answer is $\\boxed{45}$.",
]


@pytest.fixture(scope="module")
def bpe_tok():
    return train_bpe(CORPUS * 4, vocab_size=320)


def cfg(**kw):
    return sft.SFTDataConfig(**kw)


QA = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}]


# --------------------------------------------------------------------------- template


def test_template_render_single_multi_and_tool_turns():
    t = sft.ChatTemplate()
    assert t.render(QA) == "User: hi\n\nAssistant: ok<eos>"
    multi = QA + [{"role": "user", "content": "why"}, {"role": "assistant", "content": "so"}]
    assert t.render(multi) == "User: hi\n\nAssistant: ok<eos>User: why\n\nAssistant: so<eos>"
    tool = [{"role": "user", "content": "q"},
            {"role": "assistant", "content": "```python\nprint(1+1)\n```"},
            {"role": "tool", "content": "2"},
            {"role": "assistant", "content": "So 2."}]
    # the model's turn continues after the executor output: no eos before the tool turn
    assert t.render(tool) == ("User: q\n\nAssistant: ```python\nprint(1+1)\n```"
                              "\n```output\n2\n```\n So 2.<eos>")
    custom = sft.ChatTemplate(user="<|user|>{content}<|assistant|>", assistant="{content}")
    assert custom.render(QA) == "<|user|>hi<|assistant|>ok<eos>"


def test_mask_positions_by_hand(byte_tok):
    s = sft.tokenize_example(QA, byte_tok, sft.ChatTemplate())
    # "User: hi\n\nAssistant:" = 6 + 2 + 2 + 10 = 20 context tokens,
    # " ok" = 3 target tokens, then eos (target): 24 tokens
    assert len(s) == 24
    assert s.target.tolist() == [False] * 20 + [True] * 4
    assert s.ids[-1] == byte_tok.eod
    assert byte_tok.decode(s.ids[:20]) == "User: hi\n\nAssistant:"
    tokens, labels, mask = sft.sample_arrays(s, pad_id=byte_tok.eod)
    # position i predicts token i+1: positions 19 (predicts ' '), 20 ('o'), 21 ('k'),
    # 22 (eos) are in the loss; the last position 23 predicts nothing
    assert np.nonzero(mask)[0].tolist() == [19, 20, 21, 22]
    assert byte_tok.decode(labels[19:22]) == " ok" and labels[22] == byte_tok.eod
    assert mask[23] == 0 and (labels[:-1] == tokens[1:]).all()


def test_multi_turn_and_tool_masks(byte_tok):
    t = sft.ChatTemplate()
    multi = QA + [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    s = sft.tokenize_example(multi, byte_tok, t)
    # 20 ctx, " ok"+eos = 4 tgt, "User: a\n\nAssistant:" = 19 ctx, " b"+eos = 3 tgt
    assert s.target.tolist() == [False] * 20 + [True] * 4 + [False] * 19 + [True] * 3
    assert (s.ids == byte_tok.eod).sum() == 2
    tool = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "c"},
            {"role": "tool", "content": "2"}, {"role": "assistant", "content": "d"}]
    s = sft.tokenize_example(tool, byte_tok, t)
    # "User: q\n\nAssistant:" 19 ctx ; " c" 2 tgt (no eos) ;
    # "\n```output\n2\n```\n" = 1 + 3 + 6 + 1 + 1 + 1 + 3 + 1 = 17 ctx ; " d"+eos 3 tgt
    assert s.target.tolist() == [False] * 19 + [True] * 2 + [False] * 17 + [True] * 3
    assert (s.ids == byte_tok.eod).sum() == 1


def test_real_tokenizer_targets_decode_to_the_answer(shared_data):
    from tokenizers import Tokenizer

    raw = Tokenizer.from_file(str(shared_data / "tokenizers/olmo_gpt-neox-20b_bytelevel_bpe/tokenizer.json"))

    class Tok:
        eod = raw.token_to_id("<|endoftext|>")

        def encode(self, text):
            return raw.encode(text, add_special_tokens=False).ids

    msgs = [{"role": "user", "content": "What is 6 times 7?"},
            {"role": "assistant", "content": "6 * 7 = 42. The answer is $\\boxed{42}$."}]
    s = sft.tokenize_example(msgs, Tok(), sft.ChatTemplate())
    _, labels, mask = sft.sample_arrays(s, pad_id=0)
    assert raw.decode(labels[mask.astype(bool)].tolist(), skip_special_tokens=False) == \
        " 6 * 7 = 42. The answer is $\\boxed{42}$.<|endoftext|>"
    # segment-wise tokenisation equals tokenising the whole text here
    assert s.ids[:-1].tolist() == Tok().encode(sft.ChatTemplate().render(msgs, eos_text=""))


# --------------------------------------------------------------------------- reading


def test_record_formats():
    c = cfg()
    assert sft.record_to_messages({"question": "q", "response": "r"}, c) == \
        [{"role": "user", "content": "q"}, {"role": "assistant", "content": "r"}]
    g = sft.record_to_messages(
        {"question": "q", "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips.\n#### 1,072"}, c)
    assert g[1]["content"] == "Natalia sold 48/2 = 24 clips.\nThe answer is $\\boxed{1072}$."
    m = sft.record_to_messages({"problem": "p", "solution": "s"},
                               cfg(question_key="problem", response_key="solution", instruction=" Go."))
    assert m[0]["content"] == "p Go." and m[1]["content"] == "s"
    msgs = sft.record_to_messages({"messages": QA}, c)
    assert msgs == QA


def test_bad_input_one_clear_line(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"question": "q", "response": "r"}\n{"question": "q"\n')
    with pytest.raises(sft.SFTDataError, match=r"bad.jsonl:2: not valid JSON"):
        list(sft.read_examples([p], cfg()))
    p.write_text('{"question": "q", "response": "r"}\n{"messages": [{"role": "bot", "content": "x"}]}\n')
    with pytest.raises(sft.SFTDataError, match=r"bad.jsonl:2: messages\[0\] must be"):
        list(sft.read_examples([p], cfg()))
    p.write_text('{"text": "x"}\n')
    with pytest.raises(sft.SFTDataError, match=r"bad.jsonl:1: cannot tell the format"):
        list(sft.read_examples([p], cfg()))
    p.write_text('{"question": "q", "answer": "no final line"}\n')
    with pytest.raises(sft.SFTDataError, match=r"bad.jsonl:1: GSM8K answer has no '####"):
        list(sft.read_examples([p], cfg(format="gsm8k")))
    with pytest.raises(sft.SFTDataError, match="input file not found"):
        list(sft.read_examples([tmp_path / "nope.jsonl"], cfg()))
    with pytest.raises(ConfigError, match="assistant_template must contain"):
        cfg(assistant_template="no placeholder")


# --------------------------------------------------------------------------- truncation, FFD, packs


def test_truncation_policies():
    long = sft.Sample(np.arange(10), np.array([False] * 4 + [True] * 6))
    prompt_heavy = sft.Sample(np.arange(10), np.array([False] * 9 + [True]))
    short = sft.Sample(np.arange(3), np.array([False, True, True]))
    st = {}
    assert [len(s) for s in sft.apply_truncation([long, short], 6, "drop", st)] == [3]
    assert st == {"dropped_too_long": 1}
    st = {}
    out = list(sft.apply_truncation([long, prompt_heavy, short], 6, "truncate", st))
    # long keeps 6 tokens (2 targets); prompt_heavy keeps no target -> dropped
    assert [len(s) for s in out] == [6, 3] and out[0].target.sum() == 2
    assert st == {"truncated": 2, "dropped_no_target": 1}
    with pytest.raises(sft.SFTDataError, match="example 0 has 10 tokens, more than seq_length 6"):
        list(sft.apply_truncation([long], 6, "error", {}))


def test_ffd_hand_example():
    # capacity 10, lengths [3, 7, 5, 6, 2, 4, 1]; decreasing: 7(i1) 6(i3) 5(i2) 4(i5) 3(i0) 2(i4) 1(i6)
    # 7 -> bin0 (free 3) ; 6 -> bin1 (free 4) ; 5 -> bin2 (free 5) ; 4 -> bin1 (free 0)
    # 3 -> bin0 (free 0) ; 2 -> bin2 (free 3) ; 1 -> bin2 (free 2)
    assert sft.pack_ffd([3, 7, 5, 6, 2, 4, 1], 10) == [[1, 0], [3, 5], [2, 4, 6]]
    # all full-size: one per bin, in index order
    assert sft.pack_ffd([4, 4, 4], 4) == [[0], [1], [2]]
    with pytest.raises(ValueError, match="sample 1 has length 11; lengths must be in 1..10"):
        sft.pack_ffd([3, 11], 10)


def test_ffd_matches_naive_first_fit_on_random_lengths():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 50, size=300).tolist()
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    free, naive = [], []
    for i in order:
        for b, f in enumerate(free):
            if f >= lengths[i]:
                free[b] -= lengths[i]
                naive[b].append(i)
                break
        else:
            free.append(50 - lengths[i])
            naive.append([i])
    assert sft.pack_ffd(lengths, 50) == naive


def test_pack_arrays_positions_and_block_mask():
    a = sft.Sample(np.array([10, 11, 12]), np.array([False, True, True]))
    b = sft.Sample(np.array([20, 21]), np.array([False, True]))
    p = sft.build_pack([a, b], seq_length=7, pad_id=0)
    assert p.tokens.tolist() == [10, 11, 12, 20, 21, 0, 0]
    assert p.labels.tolist() == [11, 12, 0, 21, 0, 0, 0]
    assert p.loss_mask.tolist() == [1, 1, 0, 1, 0, 0, 0]
    assert p.position_ids.tolist() == [0, 1, 2, 0, 1, 0, 1]
    assert p.cu_seqlens.tolist() == [0, 3, 5, 7]
    m = sft.block_causal_mask(p.cu_seqlens, 7)
    assert m.shape == (1, 7, 7) and m.dtype == torch.bool
    allowed = (~m[0]).int().tolist()
    assert allowed == [
        [1, 0, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 0, 0],
        [0, 0, 0, 1, 0, 0, 0],
        [0, 0, 0, 1, 1, 0, 0],
        [0, 0, 0, 0, 0, 1, 0],
        [0, 0, 0, 0, 0, 1, 1],
    ]
    psp = sft.packed_seq_params(torch.from_numpy(p.cu_seqlens))
    assert psp.qkv_format == "thd" and psp.max_seqlen_q == 3
    assert psp.cu_seqlens_q.dtype == torch.int32


# --------------------------------------------------------------------------- storage round trip and CLI


def _examples(n, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        a, b = int(rng.integers(1, 99)), int(rng.integers(1, 99))
        out.append({"question": f"What is {a} + {b}?" + " Think." * int(rng.integers(0, 5)),
                    "response": f"{a} + {b} = {a + b}. The answer is {a + b}."})
    return out


def test_write_and_load_round_trip(tmp_path, bpe_tok):
    c = cfg(seq_length=96)
    samples = [sft.tokenize_example(sft.record_to_messages(r, c), bpe_tok, c.template())
               for r in _examples(40)]
    bins = sft.pack_samples(samples, 96, seed=7)
    info = sft.write_packed(str(tmp_path / "sft"), samples, bins, 96, pad_id=bpe_tok.eod,
                            tokenizer_info={"vocab_size": bpe_tok.vocab_size})
    assert info["samples"] == 40 and info["packs"] == len(bins)
    assert info["tokens"] == sum(len(s) for s in samples)
    ds = sft.PackedSFTDataset(str(tmp_path / "sft"))
    assert len(ds) == len(bins)
    for i, b in enumerate(bins):
        want = sft.pack_to_batch(sft.build_pack([samples[j] for j in b], 96, bpe_tok.eod))
        got = ds[i]
        for k in want:
            assert torch.equal(got[k], want[k]), (i, k)
    assert not list(tmp_path.glob("*.tmp*"))
    # an incomplete set (no sidecar) is refused with one line
    (tmp_path / "sft.json").unlink()
    with pytest.raises(sft.SFTDataError, match="sft.json not found: not a complete packed SFT dataset"):
        sft.PackedSFTDataset(str(tmp_path / "sft"))


def test_cli_builds_from_gsm8k(tmp_path, shared_data, repo_root):
    src = shared_data / "train/gsm8k/train.jsonl"
    head = tmp_path / "gsm.jsonl"
    head.write_text("".join(src.read_text().splitlines(keepends=True)[:30]))
    tok = shared_data / "tokenizers/olmo_gpt-neox-20b_bytelevel_bpe/tokenizer.json"
    cmd = [sys.executable, str(repo_root / "tools/build_sft_data.py"), "--input", str(head),
           "--output-prefix", str(tmp_path / "out/gsm"), "--tokenizer-model", str(tok),
           "--seq-length", "512", "--format", "gsm8k"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "examples 30 | samples 30" in r.stdout
    info = json.loads((tmp_path / "out/gsm.json").read_text())
    assert info["samples"] == 30 and 0.5 < info["packing_efficiency"] <= 1.0
    ds = sft.PackedSFTDataset(str(tmp_path / "out/gsm"))
    assert int(sum(ds[i]["loss_mask"].sum() for i in range(len(ds)))) == info["target_tokens"]
    # bad input: exit 2 with one line naming file and line
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "answer": "x\\n#### 1"}\n{oops\n')
    r = subprocess.run(cmd[:3] + [str(bad)] + cmd[4:], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith(f"error: {bad}:2: not valid JSON")


# --------------------------------------------------------------------------- model-based must-shows


@pytest.fixture(scope="module")
def tiny_gpt():
    """A 2-layer Llama-style megatron-core GPTModel on CPU (gloo, world size 1),
    through the project's platform shims."""
    from megatron.core import parallel_state

    from megatron_dsm import platform
    from megatron_dsm.models.config import ModelConfig
    from megatron_dsm.models.gpt import build_model, layout_independent_init, transformer_config

    import os

    owned = not torch.distributed.is_initialized()
    threads = torch.get_num_threads()
    env = {k: os.environ.get(k) for k in ("MASTER_ADDR", "MASTER_PORT")}
    platform.initialize_distributed(seed=1234)
    assert parallel_state.get_tensor_model_parallel_world_size() == 1
    mcfg = ModelConfig(num_layers=2, hidden_size=64, num_attention_heads=4, ffn_hidden_size=176,
                       vocab_size=320, seq_length=128)
    model = build_model(mcfg, transformer_config(mcfg))
    # std 0.2 so the model is far from uniform and attention is not flat
    layout_independent_init(model, seed=5, std=0.2, num_layers=mcfg.num_layers)
    model.eval()
    yield model
    if owned:
        platform.destroy_distributed()
        for k, v in env.items():  # leave no private port behind for later tests
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    torch.set_num_threads(threads)


def _per_token_loss(model, tokens, position_ids, labels, attention_mask):
    return model(tokens[None], position_ids[None], attention_mask, labels=labels[None])[0]


def _grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def test_packing_equivalence(tiny_gpt, bpe_tok):
    model = tiny_gpt
    c = cfg(seq_length=128)
    samples = [sft.tokenize_example(sft.record_to_messages(r, c), bpe_tok, c.template())
               for r in _examples(9, seed=3)]
    assert max(len(s) for s in samples) < 128
    bins = sft.pack_ffd([len(s) for s in samples], 128)
    assert len(bins) < len(samples) and any(len(b) > 1 for b in bins)
    pad = bpe_tok.eod

    # unpacked: each sample alone, default causal mask; token-weighted mean.
    # The model runs in fp32; the sums over tokens are accumulated in fp64 so
    # the comparison is not limited by fp32 rounding of the final mean.
    model.zero_grad()
    num, den = 0.0, 0.0
    per_tok_unpacked = []
    for s in samples:
        t, l, m = (torch.from_numpy(x) for x in sft.sample_arrays(s, pad))
        lt = _per_token_loss(model, t, torch.arange(t.numel()), l, None)
        num = num + (lt.double() * m.double()).sum()
        den += float(m.sum())
        per_tok_unpacked.append(lt.detach())
    (num / den).backward()
    loss_unpacked = float((num / den).detach())
    g_unpacked = _grads(model)

    # packed: FFD packs with the block-diagonal mask, one sum over all packs
    model.zero_grad()
    pnum, pden = 0.0, 0.0
    max_tok_diff = max_loss_tok_diff = 0.0
    for b in bins:
        batch = sft.pack_to_batch(sft.build_pack([samples[j] for j in b], 128, pad))
        lt = _per_token_loss(model, batch["tokens"], batch["position_ids"], batch["labels"],
                             batch["attention_mask"][None])
        pnum = pnum + (lt.double() * batch["loss_mask"].double()).sum()
        pden += float(batch["loss_mask"].sum())
        off = 0
        for j in b:
            n = len(samples[j])
            d = (lt[off:off + n].detach() - per_tok_unpacked[j]).abs()
            max_tok_diff = max(max_tok_diff, float(d.max()))
            in_loss = batch["loss_mask"][off:off + n].bool()
            max_loss_tok_diff = max(max_loss_tok_diff, float(d[in_loss].max()))
            off += n
    (pnum / pden).backward()
    loss_packed = float((pnum / pden).detach())
    g_packed = _grads(model)

    assert pden == den
    rel = abs(loss_packed - loss_unpacked) / abs(loss_unpacked)
    print(f"\npacking equivalence: {len(samples)} samples in {len(bins)} packs, "
          f"unpacked {loss_unpacked:.8f} packed {loss_packed:.8f} rel {rel:.2e} "
          f"max per-token |diff| {max_tok_diff:.2e} (loss tokens {max_loss_tok_diff:.2e})")
    assert rel < 1e-5
    assert max_tok_diff < 1e-4
    for n in g_unpacked:
        gu, gp = g_unpacked[n], g_packed[n]
        assert torch.allclose(gp, gu, rtol=1e-4, atol=1e-6), (n, float((gp - gu).abs().max()))

    # control: the same packs with plain causal attention across samples differ
    with torch.no_grad():
        cnum = 0.0
        for b in bins:
            batch = sft.pack_to_batch(sft.build_pack([samples[j] for j in b], 128, pad))
            lt = _per_token_loss(model, batch["tokens"], batch["position_ids"], batch["labels"], None)
            cnum += float((lt * batch["loss_mask"]).sum())
    assert abs(cnum / pden - loss_unpacked) / loss_unpacked > 1e-3


def test_masking_prompt_targets_do_not_change_loss_or_grads(tiny_gpt, bpe_tok):
    model = tiny_gpt
    c = cfg(seq_length=128)
    samples = [sft.tokenize_example(sft.record_to_messages(r, c), bpe_tok, c.template())
               for r in _examples(4, seed=11)]
    batch = sft.pack_to_batch(sft.build_pack(samples[:2], 128, bpe_tok.eod))
    m = batch["loss_mask"]
    assert 0 < m.sum() < m.numel()

    def loss_and_grads(labels):
        model.zero_grad()
        lt = _per_token_loss(model, batch["tokens"], batch["position_ids"], labels,
                             batch["attention_mask"][None])
        loss = (lt * m).sum() / m.sum()
        loss.backward()
        return loss.detach(), _grads(model)

    base_loss, base_g = loss_and_grads(batch["labels"])
    changed = batch["labels"].clone()
    gen = torch.Generator().manual_seed(0)
    prompt = m == 0
    changed[prompt] = torch.randint(0, bpe_tok.vocab_size, (int(prompt.sum()),), generator=gen)
    assert (changed != batch["labels"]).sum() > 10
    loss2, g2 = loss_and_grads(changed)
    assert torch.equal(loss2, base_loss)
    for n in base_g:
        assert torch.equal(g2[n], base_g[n]), n
    # and the mask is what protects them: changing one response target does change the loss
    resp = changed.clone()
    k = int(torch.nonzero(m)[0])
    resp[k] = (resp[k] + 1) % bpe_tok.vocab_size
    loss3, _ = loss_and_grads(resp)
    assert not torch.equal(loss3, base_loss)
