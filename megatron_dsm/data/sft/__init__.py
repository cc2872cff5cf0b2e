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
   O(log bins)).  Within a pack, position ids restart at 0 for every sample
   and attention is isolated per sample:
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

The parts: ``examples`` (steps 1-5), ``packing`` (step 6), ``storage``
(step 7 and the whole build).
"""


from megatron_dsm.data.sft.examples import (
    FORMATS,
    ROLES,
    TRUNCATION,
    ChatTemplate,
    Sample,
    SFTDataConfig,
    SFTDataError,
    apply_truncation,
    check_inputs,
    read_examples,
    record_to_messages,
    sample_arrays,
    tokenize_example,
)
from megatron_dsm.data.sft.packing import (
    Pack,
    block_causal_mask,
    build_pack,
    pack_ffd,
    pack_from_arrays,
    pack_samples,
    pack_to_batch,
    packed_seq_params,
)
from megatron_dsm.data.sft.storage import (
    SIDECAR_KIND,
    SIDECAR_VERSION,
    PackedSFTDataset,
    build_sft_data,
    tokenize_all,
    write_packed,
)

__all__ = [
    "FORMATS", "ROLES", "SIDECAR_KIND", "SIDECAR_VERSION", "TRUNCATION", "ChatTemplate", "Pack",
    "PackedSFTDataset", "SFTDataConfig", "SFTDataError", "Sample", "apply_truncation",
    "block_causal_mask", "build_pack", "build_sft_data", "check_inputs", "pack_ffd",
    "pack_from_arrays", "pack_samples", "pack_to_batch", "packed_seq_params", "read_examples",
    "record_to_messages", "sample_arrays", "tokenize_all", "tokenize_example", "write_packed",
]
