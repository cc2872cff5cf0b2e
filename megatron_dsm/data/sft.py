"""Supervised fine-tuning data: chat template, prompt masking, packing, storage.

Path of one example
-------------------
1. **Read** (:func:`read_examples`): a jsonl line holds either a conversation
   ``{"messages": [{"role": "user"|"assistant"|"system"|"tool", "content": ...}]}``
   or a pair ``{question, response}`` (keys configurable, e.g. MATH's
   ``problem``/``solution``), or a GSM8K record ``{question, answer}`` whose
   ``answer`` ends in ``#### 72``.  CoT, PoT (program) and tool-integrated
   examples differ only in the response text; tool-integrated conversations
   interleave ``assistant`` turns (text + code) with ``tool`` turns (the
   executor's output), which are context, not targets.
2. **Template** (:class:`ChatTemplate`): the paper's
   ``User: {q}\\n\\nAssistant: {a}<eos>``, turns joined by eos:
   ``User: q1\\n\\nAssistant: a1<eos>User: q2\\n\\nAssistant: a2<eos>``.
   The text is cut into segments, each tokenised on its own and marked
   *target* or *context*: ``"User: q\\n\\nAssistant:"`` (context) and
   ``" a"`` (target) then the eos id (target).  The space before the answer
   belongs to the answer segment so that a byte-level BPE tokenises the answer
   exactly as it would after the evaluation prompt, which ends in
   ``"Assistant:"`` (megatron_dsm/eval/prompts.py).
3. **Tokenise** (:func:`tokenize_example`): any tokenizer object with
   ``encode(str) -> list[int]`` and an ``eod`` id.  A token is a target when
   it belongs to an assistant segment or is the eos closing an assistant turn;
   user, system and tool text is never a target.
4. **Labels** (:func:`sample_arrays`): a sample of ``n`` tokens occupies ``n``
   positions.  Position ``i`` reads token ``i`` and predicts token ``i+1``;
   its loss-mask entry is 1 when token ``i+1`` is a target.  The last position
   predicts nothing (loss mask 0), so a sample never predicts the first token
   of the next sample in a pack.
5. **Truncation** (``truncation``): a sample longer than the context length is
   ``drop``-ped (default: every trained answer is complete and ends in eos),
   ``truncate``-d to its first ``seq_length`` tokens (the prompt and the head
   of the answer are kept; a sample left without any target is dropped), or
   an ``error``.  Counts are reported.
6. **Pack** (:func:`pack_ffd`): first-fit decreasing into bins of
   ``seq_length`` tokens (a max-segment-tree finds the first bin with room in
   O(log bins), so 776K examples pack in seconds).  Within a pack, position
   ids restart at 0 for every sample and attention is isolated per sample:
   on CPU by a block-diagonal causal mask ``bool [1, S, S]`` (True = masked,
   the convention of megatron-core's local ``DotProductAttention``, whose
   softmax fills True entries with -10000), on GPU by ``cu_seqlens`` in a
   ``PackedSeqParams(qkv_format="thd")``.  The padding tail of a pack is its
   own segment with loss mask 0.

   megatron-core 0.16's GPTModel computes RoPE from positions ``0..S-1`` of
   the pack and uses ``position_ids`` only for learned absolute embeddings.
   With the block-diagonal mask this is still exact: RoPE scores depend only
   on the distance between query and key, which a shift of the whole sample
   does not change (tests/data/test_sft.py checks packed == unpacked loss).
7. **Store** (:func:`write_packed`): two Megatron MMIDIDX datasets side by
   side, ``PREFIX.tokens`` (token ids) and ``PREFIX.loss_mask`` (uint8, the
   label-aligned loss mask above).  One *document* per pack and one
   *sequence* per sample, so the index itself records sample boundaries.
   ``PREFIX.json`` (written last, atomically) records the context length,
   pad id, template, tokenizer and counts.  :class:`PackedSFTDataset` reads
   them back through megatron-core's ``IndexedDataset`` without
   re-tokenising.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch
from tqdm import tqdm

from megatron_dsm.config import ConfigError, field, options
from megatron_dsm.data import indexed

FORMATS = ("auto", "messages", "pair", "gsm8k")
TRUNCATION = ("drop", "truncate", "error")
SIDECAR_KIND = "megatron_dsm.sft.packed"
SIDECAR_VERSION = 1

# GSM8K rationales carry calculator annotations like <<48/2=24>>.
_GSM8K_CALC = re.compile(r"<<[^<>]*>>")
_GSM8K_FINAL = re.compile(r"\n?####\s*(.+?)\s*$", re.S)


class SFTDataError(ValueError):
    """Bad SFT input; the message says which file, which line and what."""


# ---------------------------------------------------------------------------
# config
# ---------------------------------------------------------------------------


@options
class SFTDataConfig:
    """How jsonl records become SFT samples and packs (tools/build_sft_data.py)."""

    input: list[str] = field(default_factory=list, help="jsonl files of SFT examples")
    output_prefix: str | None = field(None, help="write PREFIX.tokens/.loss_mask .bin/.idx and PREFIX.json")
    tokenizer_type: str = field("auto", help="hf | sentencepiece | byte | auto (see data/tokenizer.py)")
    tokenizer_model: str | None = field(None, help="tokenizer.json / folder / SentencePiece .model")
    seq_length: int = field(4096, help="context length of a pack")
    format: str = field("auto", choices=FORMATS,
                        help="record format: messages, pair {question,response}, gsm8k {question,answer}, "
                             "or auto (per record)")
    question_key: str = field("question", help="question field of pair records (MATH: problem)")
    response_key: str = field("response", help="response field of pair records (MATH: solution)")
    instruction: str = field("", help="text appended to every question (e.g. the CoT instruction)")
    user_template: str = field("User: {content}\n\nAssistant:", help="context segment for a user turn")
    assistant_template: str = field(" {content}", help="target segment for an assistant turn (eos follows)")
    system_template: str = field("{content}\n\n", help="context segment for a system message")
    tool_template: str = field("\n```output\n{content}\n```\n",
                               help="context segment for a tool (executor) output in tool-integrated data")
    gsm8k_answer_template: str = field("{rationale}\nThe answer is $\\boxed{{{answer}}}$.",
                                       help="response built from a GSM8K answer")
    gsm8k_strip_calculator: bool = field(True, help="drop GSM8K <<a*b=c>> annotations")
    truncation: str = field("drop", choices=TRUNCATION, help="samples longer than seq_length")
    seed: int = field(1234, help="shuffle seed for the order of packs (0: keep FFD order)")

    def __post_init__(self):
        if self.seq_length < 2:
            raise ConfigError(f"sft: seq_length must be >= 2, got {self.seq_length}")
        if self.format not in FORMATS:
            raise ConfigError(f"sft: format must be one of {FORMATS}, got {self.format!r}")
        if self.truncation not in TRUNCATION:
            raise ConfigError(f"sft: truncation must be one of {TRUNCATION}, got {self.truncation!r}")
        for name in ("user_template", "assistant_template", "system_template", "tool_template"):
            if "{content}" not in getattr(self, name):
                raise ConfigError(f"sft: {name} must contain {{content}}, got {getattr(self, name)!r}")

    def template(self) -> "ChatTemplate":
        return ChatTemplate(self.user_template, self.assistant_template, self.system_template,
                            self.tool_template)


# ---------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------

ROLES = ("system", "user", "assistant", "tool")


def _gsm8k_response(answer: str, cfg: SFTDataConfig) -> str:
    m = _GSM8K_FINAL.search(answer)
    if not m:
        raise ValueError("GSM8K answer has no '#### <final answer>' line")
    rationale = answer[:m.start()].rstrip()
    if cfg.gsm8k_strip_calculator:
        rationale = _GSM8K_CALC.sub("", rationale)
    final = m.group(1).strip().replace(",", "")
    return cfg.gsm8k_answer_template.format(rationale=rationale, answer=final)


def record_to_messages(rec: dict, cfg: SFTDataConfig) -> list[dict]:
    """One jsonl record -> a list of {role, content}; ValueError says what is wrong."""
    if not isinstance(rec, dict):
        raise ValueError(f"record is a {type(rec).__name__}, expected a JSON object")
    fmt = cfg.format
    if fmt == "auto":
        if "messages" in rec:
            fmt = "messages"
        elif cfg.question_key in rec and cfg.response_key in rec:
            fmt = "pair"
        elif "question" in rec and "answer" in rec:
            fmt = "gsm8k"
        else:
            raise ValueError(f"cannot tell the format: keys {sorted(rec)} have neither 'messages', "
                             f"{cfg.question_key!r}+{cfg.response_key!r}, nor 'question'+'answer'")
    if fmt == "messages":
        msgs = rec.get("messages")
        if not isinstance(msgs, list) or not msgs:
            raise ValueError("'messages' must be a non-empty list")
        out = []
        for k, m in enumerate(msgs):
            if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
                raise ValueError(f"messages[{k}] must be {{role: one of {ROLES}, content: str}}, got {m!r:.80}")
            out.append({"role": m["role"], "content": m["content"]})
    else:
        qk, rk = (cfg.question_key, cfg.response_key) if fmt == "pair" else ("question", "answer")
        for k in (qk, rk):
            if not isinstance(rec.get(k), str):
                raise ValueError(f"missing or non-string field {k!r}")
        resp = rec[rk] if fmt == "pair" else _gsm8k_response(rec[rk], cfg)
        out = [{"role": "user", "content": rec[qk]}, {"role": "assistant", "content": resp}]
    if cfg.instruction:
        out = [dict(m, content=m["content"] + cfg.instruction) if m["role"] == "user" else m for m in out]
    if not any(m["role"] == "assistant" and m["content"] for m in out):
        raise ValueError("no non-empty assistant turn: nothing to train on")
    return out


def read_examples(paths: Sequence[str | os.PathLike], cfg: SFTDataConfig) -> Iterator[list[dict]]:
    """Yield each record's messages; the first bad line raises one clear
    ``file:line: what`` error."""
    for path in paths:
        p = Path(path)
        if not p.is_file():
            raise SFTDataError(f"{p}: input file not found")
        with open(p, "rb") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except (json.JSONDecodeError, UnicodeDecodeError) as e:
                    raise SFTDataError(f"{p}:{lineno}: not valid JSON ({e.msg if hasattr(e, 'msg') else e})") from None
                try:
                    yield record_to_messages(rec, cfg)
                except ValueError as e:
                    raise SFTDataError(f"{p}:{lineno}: {e}") from None


def check_inputs(paths: Sequence[str | os.PathLike], cfg: SFTDataConfig) -> int:
    """Parse every record once (cheap, no tokenising) so bad input fails
    before the expensive work; returns the record count."""
    return sum(1 for _ in read_examples(paths, cfg))


# ---------------------------------------------------------------------------
# template and tokenisation
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ChatTemplate:
    user: str = "User: {content}\n\nAssistant:"
    assistant: str = " {content}"
    system: str = "{content}\n\n"
    tool: str = "\n```output\n{content}\n```\n"

    def segments(self, messages: Sequence[dict]) -> list[tuple[str, bool, bool]]:
        """(text, is_target, eos_after) per message.  An assistant message ends
        its turn with eos unless a tool output follows (tool-integrated data:
        the model's turn continues after the executor's output)."""
        out = []
        for k, m in enumerate(messages):
            role, text = m["role"], m["content"]
            if role == "assistant":
                nxt = messages[k + 1]["role"] if k + 1 < len(messages) else None
                out.append((self.assistant.format(content=text), True, nxt != "tool"))
            else:
                tmpl = {"user": self.user, "system": self.system, "tool": self.tool}[role]
                out.append((tmpl.format(content=text), False, False))
        return out

    def render(self, messages: Sequence[dict], eos_text: str = "<eos>") -> str:
        """The full text (eos shown as ``eos_text``): what the model reads."""
        return "".join(t + (eos_text if eos else "") for t, _, eos in self.segments(messages))


@dataclasses.dataclass
class Sample:
    """One tokenised example: ids and, per token, whether it is a target."""

    ids: np.ndarray      # int64 [n]
    target: np.ndarray   # bool  [n]

    def __len__(self) -> int:
        return int(self.ids.size)


def tokenize_example(messages: Sequence[dict], tokenizer, template: ChatTemplate) -> Sample:
    """Tokenise segment by segment; assistant tokens and their closing eos are targets."""
    eod = getattr(tokenizer, "eod", None)
    if eod is None:
        raise SFTDataError("the tokenizer defines no end-of-document (eos) token; SFT needs one")
    ids: list[int] = []
    tgt: list[bool] = []
    for text, is_target, eos_after in template.segments(messages):
        piece = list(tokenizer.encode(text)) if text else []
        ids += piece
        tgt += [is_target] * len(piece)
        if eos_after:
            ids.append(int(eod))
            tgt.append(True)
    return Sample(np.asarray(ids, dtype=np.int64), np.asarray(tgt, dtype=bool))


def sample_arrays(sample: Sample, pad_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(tokens, labels, loss_mask) of one unpacked sample, each of length n:
    labels[i] = ids[i+1] and loss_mask[i] = target[i+1]; the last position
    predicts nothing (label pad, mask 0)."""
    n = len(sample)
    labels = np.full(n, pad_id, dtype=np.int64)
    mask = np.zeros(n, dtype=np.uint8)
    if n > 1:
        labels[:-1] = sample.ids[1:]
        mask[:-1] = sample.target[1:]
    return sample.ids.astype(np.int64), labels, mask


def apply_truncation(samples: Iterable[Sample], seq_length: int, policy: str,
                     stats: dict) -> Iterator[Sample]:
    """Apply the truncation policy (module docstring, step 5), counting what it did."""
    for k, s in enumerate(samples):
        if len(s) > seq_length:
            if policy == "error":
                raise SFTDataError(f"example {k} has {len(s)} tokens, more than seq_length {seq_length} "
                                   f"(use --truncation drop or truncate)")
            if policy == "drop":
                stats["dropped_too_long"] = stats.get("dropped_too_long", 0) + 1
                continue
            s = Sample(s.ids[:seq_length], s.target[:seq_length])
            stats["truncated"] = stats.get("truncated", 0) + 1
        if not s.target[1:].any():
            stats["dropped_no_target"] = stats.get("dropped_no_target", 0) + 1
            continue
        yield s


# ---------------------------------------------------------------------------
# packing
# ---------------------------------------------------------------------------


def pack_ffd(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """First-fit decreasing: sample indices per bin, in placement order.

    Samples are taken longest first (ties by index) and each goes into the
    lowest-numbered bin with room.  Bins not yet opened are modelled as bins
    of full capacity after the open ones, so "first bin with room" opens a new
    bin exactly when no open one fits.  A max segment tree over the bins'
    free space answers the query in O(log n).
    """
    lengths = [int(x) for x in lengths]
    for k, n in enumerate(lengths):
        if n <= 0 or n > capacity:
            raise ValueError(f"sample {k} has length {n}; lengths must be in 1..{capacity}")
    if not lengths:
        return []
    size = 1 << max(0, math.ceil(math.log2(len(lengths))))
    tree = [0] * (2 * size)
    for leaf in range(size, size + len(lengths)):
        tree[leaf] = capacity
    for node in range(size - 1, 0, -1):
        tree[node] = max(tree[2 * node], tree[2 * node + 1])
    bins: list[list[int]] = []
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    for i in order:
        n = lengths[i]
        node = 1
        while node < size:  # descend to the leftmost leaf with room
            node = 2 * node if tree[2 * node] >= n else 2 * node + 1
        b = node - size
        if b == len(bins):
            bins.append([])
        bins[b].append(i)
        tree[node] -= n
        node //= 2
        while node:
            tree[node] = max(tree[2 * node], tree[2 * node + 1])
            node //= 2
    return bins


@dataclasses.dataclass
class Pack:
    """One packed context of ``seq_length`` positions (numpy, label-aligned)."""

    tokens: np.ndarray        # int64 [S]
    labels: np.ndarray        # int64 [S]
    loss_mask: np.ndarray     # uint8 [S]
    position_ids: np.ndarray  # int64 [S], restarts at 0 per sample (and for the padding tail)
    seq_lengths: np.ndarray   # int64 [k] real samples' lengths, in pack order

    @property
    def cu_seqlens(self) -> np.ndarray:
        """int32 [segments+1]: sample boundaries, padding tail as a last segment."""
        segs = list(self.seq_lengths)
        pad = self.tokens.size - int(self.seq_lengths.sum())
        if pad:
            segs.append(pad)
        return np.concatenate([[0], np.cumsum(segs)]).astype(np.int32)


def build_pack(samples: Sequence[Sample], seq_length: int, pad_id: int) -> Pack:
    tok = np.full(seq_length, pad_id, dtype=np.int64)
    lab = np.full(seq_length, pad_id, dtype=np.int64)
    msk = np.zeros(seq_length, dtype=np.uint8)
    pos = np.zeros(seq_length, dtype=np.int64)
    off = 0
    for s in samples:
        t, l, m = sample_arrays(s, pad_id)
        n = t.size
        if off + n > seq_length:
            raise ValueError(f"pack overflow: {off + n} tokens > seq_length {seq_length}")
        tok[off:off + n], lab[off:off + n], msk[off:off + n] = t, l, m
        pos[off:off + n] = np.arange(n)
        off += n
    pos[off:] = np.arange(seq_length - off)
    return Pack(tok, lab, msk, pos, np.asarray([len(s) for s in samples], dtype=np.int64))


def pack_from_arrays(tokens: np.ndarray, loss_mask: np.ndarray, seq_lengths: np.ndarray,
                     seq_length: int, pad_id: int) -> Pack:
    """Rebuild a Pack from stored (unpadded) tokens + loss mask + sample lengths."""
    n = int(tokens.size)
    tok = np.full(seq_length, pad_id, dtype=np.int64)
    lab = np.full(seq_length, pad_id, dtype=np.int64)
    msk = np.zeros(seq_length, dtype=np.uint8)
    pos = np.zeros(seq_length, dtype=np.int64)
    tok[:n] = tokens
    msk[:n] = loss_mask
    off = 0
    for L in seq_lengths:
        L = int(L)
        lab[off:off + L - 1] = tokens[off + 1:off + L]
        pos[off:off + L] = np.arange(L)
        off += L
    pos[off:] = np.arange(seq_length - off)
    return Pack(tok, lab, msk, pos, np.asarray(seq_lengths, dtype=np.int64))


def block_causal_mask(cu_seqlens: Sequence[int] | np.ndarray, seq_length: int) -> torch.Tensor:
    """bool [1, S, S], True = masked: query q may attend key k only when both
    lie in the same segment and k <= q."""
    seg = torch.zeros(seq_length, dtype=torch.long)
    bounds = torch.as_tensor(np.asarray(cu_seqlens)[1:-1], dtype=torch.long)
    if bounds.numel():
        seg[bounds] = 1
    seg = seg.cumsum(0)
    same = seg[:, None] == seg[None, :]
    causal = torch.ones(seq_length, seq_length, dtype=torch.bool).tril()
    return ~(same & causal)[None]


def pack_to_batch(pack: Pack) -> dict:
    """Torch tensors for one pack: tokens, labels, loss_mask (float), position_ids,
    attention_mask (bool [1, S, S]) and cu_seqlens (int32)."""
    cu = pack.cu_seqlens
    return {
        "tokens": torch.from_numpy(pack.tokens),
        "labels": torch.from_numpy(pack.labels),
        "loss_mask": torch.from_numpy(pack.loss_mask.astype(np.float32)),
        "position_ids": torch.from_numpy(pack.position_ids),
        "attention_mask": block_causal_mask(cu, pack.tokens.size),
        "cu_seqlens": torch.from_numpy(cu),
    }


def packed_seq_params(cu_seqlens: torch.Tensor):
    """megatron-core ``PackedSeqParams`` for one pack (micro-batch 1) in THD
    layout, for packed-sequence attention (transformer-engine) on GPU."""
    from megatron.core.packed_seq_params import PackedSeqParams

    cu = cu_seqlens.to(torch.int32)
    max_len = int((cu[1:] - cu[:-1]).max())
    return PackedSeqParams(qkv_format="thd", cu_seqlens_q=cu, cu_seqlens_kv=cu,
                           max_seqlen_q=max_len, max_seqlen_kv=max_len)


# ---------------------------------------------------------------------------
# building, writing, loading
# ---------------------------------------------------------------------------


def tokenize_all(paths: Sequence[str], tokenizer, cfg: SFTDataConfig, stats: dict,
                 total: int | None = None) -> list[Sample]:
    template = cfg.template()
    samples = []
    for msgs in tqdm(read_examples(paths, cfg), total=total, desc="tokenize", unit="ex",
                     disable=total is not None and total < 1000):
        samples.append(tokenize_example(msgs, tokenizer, template))
    stats["examples"] = len(samples)
    kept = list(apply_truncation(samples, cfg.seq_length, cfg.truncation, stats))
    stats["samples"] = len(kept)
    return kept


def pack_samples(samples: Sequence[Sample], seq_length: int, seed: int = 0) -> list[list[int]]:
    """FFD bins, then (seed != 0) shuffled so that packs of long samples are
    not all at the start of training."""
    bins = pack_ffd([len(s) for s in samples], seq_length)
    if seed:
        rng = np.random.default_rng(seed)
        bins = [bins[i] for i in rng.permutation(len(bins))]
    return bins


def _prefixes(prefix: str) -> tuple[str, str]:
    return prefix + ".tokens", prefix + ".loss_mask"


def write_packed(prefix: str, samples: Sequence[Sample], bins: Sequence[Sequence[int]],
                 seq_length: int, pad_id: int, tokenizer_info: dict | None = None,
                 extra: dict | None = None) -> dict:
    """Store packs as two parallel MMIDIDX datasets plus ``PREFIX.json``
    (module docstring, step 7).  Each file is renamed into place only when
    complete and the sidecar is written last, so a present sidecar means the
    whole set is complete.  Returns the sidecar content."""
    if not bins:
        raise SFTDataError(f"{prefix}: no samples to write (all dropped or empty input)")
    max_id = int(max(int(s.ids.max()) for s in samples)) if samples else 0
    vocab = (tokenizer_info or {}).get("vocab_size") or max_id + 1
    tok_dtype = indexed.optimal_dtype(max(vocab, max_id + 1, pad_id + 1))
    tok_prefix, mask_prefix = _prefixes(prefix)
    if os.path.exists(prefix + ".json"):  # stale sidecar would vouch for new partial files
        os.remove(prefix + ".json")
    n_tokens = n_targets = 0
    with indexed.IndexedDatasetWriter(tok_prefix, tok_dtype) as wt, \
            indexed.IndexedDatasetWriter(mask_prefix, np.uint8) as wm:
        for b in tqdm(bins, desc="write packs", unit="pack", disable=len(bins) < 1000):
            members = [samples[i] for i in b]
            lens = [len(s) for s in members]
            if sum(lens) > seq_length:
                raise ValueError(f"pack of {sum(lens)} tokens exceeds seq_length {seq_length}")
            ids = np.concatenate([s.ids for s in members])
            mask = np.concatenate([sample_arrays(s, pad_id)[2] for s in members])
            wt.add_document(ids, lens)
            wm.add_document(mask, lens)
            n_tokens += int(ids.size)
            n_targets += int(mask.sum())
    info = {
        "kind": SIDECAR_KIND, "version": SIDECAR_VERSION,
        "seq_length": seq_length, "pad_id": int(pad_id),
        "packs": len(bins), "samples": sum(len(b) for b in bins),
        "tokens": n_tokens, "target_tokens": n_targets,
        "packing_efficiency": n_tokens / (len(bins) * seq_length),
        "token_dtype": np.dtype(tok_dtype).name,
        "tokenizer": tokenizer_info or {},
    }
    info.update(extra or {})
    indexed.write_sidecar(prefix, info)
    return info


class PackedSFTDataset(torch.utils.data.Dataset):
    """Packs written by :func:`write_packed`, read through megatron-core's
    ``IndexedDataset``; item ``i`` is :func:`pack_to_batch` of pack ``i``."""

    def __init__(self, prefix: str, build_attention_mask: bool = True):
        self.prefix = str(prefix)
        info = indexed.read_sidecar(self.prefix)
        if info is None:
            raise SFTDataError(f"{self.prefix}.json not found: not a complete packed SFT dataset")
        if info.get("kind") != SIDECAR_KIND:
            raise SFTDataError(f"{self.prefix}.json: kind {info.get('kind')!r} is not {SIDECAR_KIND!r}")
        self.info = info
        self.seq_length = int(info["seq_length"])
        self.pad_id = int(info["pad_id"])
        self.build_attention_mask = build_attention_mask
        tok_prefix, mask_prefix = _prefixes(self.prefix)
        self._tok = indexed.open_dataset(tok_prefix)
        self._mask = indexed.open_dataset(mask_prefix)
        ti, mi = self._tok.index, self._mask.index
        if not (np.array_equal(ti.sequence_lengths, mi.sequence_lengths)
                and np.array_equal(ti.document_indices, mi.document_indices)):
            raise SFTDataError(f"{self.prefix}: tokens and loss_mask datasets disagree on sample boundaries")
        if len(ti.document_indices) - 1 != info["packs"]:
            raise SFTDataError(f"{self.prefix}: sidecar says {info['packs']} packs, index has "
                               f"{len(ti.document_indices) - 1}")

    def __len__(self) -> int:
        return len(self._tok.index.document_indices) - 1

    def _read(self, ds, i: int) -> tuple[np.ndarray, np.ndarray]:
        idx = ds.index
        s, e = int(idx.document_indices[i]), int(idx.document_indices[i + 1])
        lens = np.asarray(idx.sequence_lengths[s:e], dtype=np.int64)
        arr = ds.bin_reader.read(dtype=idx.dtype, count=int(lens.sum()),
                                 offset=int(idx.sequence_pointers[s]))
        return np.asarray(arr), lens

    def pack(self, i: int) -> Pack:
        if not 0 <= i < len(self):
            raise IndexError(f"pack {i} out of range 0..{len(self) - 1}")
        toks, lens = self._read(self._tok, i)
        mask, _ = self._read(self._mask, i)
        return pack_from_arrays(toks.astype(np.int64), mask, lens, self.seq_length, self.pad_id)

    def __getitem__(self, i: int) -> dict:
        batch = pack_to_batch(self.pack(i))
        if not self.build_attention_mask:
            del batch["attention_mask"]
        return batch


def build_sft_data(cfg: SFTDataConfig, tokenizer=None) -> dict:
    """jsonl -> packed indexed files (what tools/build_sft_data.py runs)."""
    from megatron_dsm.data.tokenizer import build_tokenizer

    if not cfg.input:
        raise SFTDataError("no --input files given")
    if not cfg.output_prefix:
        raise SFTDataError("no --output-prefix given")
    n_records = check_inputs(cfg.input, cfg)  # bad input fails here, before tokenising
    if n_records == 0:
        raise SFTDataError(f"{', '.join(map(str, cfg.input))}: no records")
    if tokenizer is None:
        tokenizer = build_tokenizer(cfg.tokenizer_type, cfg.tokenizer_model)
    if getattr(tokenizer, "eod", None) is None:
        raise SFTDataError("the tokenizer defines no end-of-document (eos) token; SFT needs one")
    pad_id = getattr(tokenizer, "pad", None)
    pad_id = int(tokenizer.eod if pad_id is None else pad_id)
    stats: dict = {}
    samples = tokenize_all(cfg.input, tokenizer, cfg, stats, total=n_records)
    bins = pack_samples(samples, cfg.seq_length, cfg.seed)
    tok_info = tokenizer.describe() if hasattr(tokenizer, "describe") else {
        "vocab_size": getattr(tokenizer, "vocab_size", None), "eod": int(tokenizer.eod)}
    extra = {"stats": stats, "inputs": [str(p) for p in cfg.input],
             "template": dataclasses.asdict(cfg.template()), "format": cfg.format,
             "truncation": cfg.truncation}
    return write_packed(cfg.output_prefix, samples, bins, cfg.seq_length, pad_id, tok_info, extra)
