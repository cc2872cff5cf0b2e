"""Supervised fine-tuning on the shared training loop (DeepSeekMath-Instruct).

The paper (Sec. 3.1) fine-tunes the base model on 776K math instructions for
500 steps, batch 256, constant LR 5e-5, 4K context.  Here that is:

* **data**: packs written by ``tools/build_sft_data.py`` and read back by
  :class:`megatron_dsm.data.sft.PackedSFTDataset` (no re-tokenising).  One
  *sequence* of a global batch is one pack of ``seq_length`` tokens.
* **attention isolation**: on CPU / the local layer spec each pack carries a
  block-diagonal causal mask ``[B, 1, S, S]`` (True = masked) and position ids
  that restart per sample; with transformer-engine (GPU) the pack's
  ``cu_seqlens`` go to megatron-core as ``PackedSeqParams`` (THD layout,
  micro-batch 1) instead of a dense mask.
* **loss**: GPTModel's per-token cross entropy times the pack's loss mask,
  which is 1 only where the *next* token belongs to an assistant response
  (prompt tokens are context, never targets); the loss is the mean over
  the target tokens of the whole global batch (``pretrain.lm_loss_func``).
* **initialisation**: ``--load BASE --finetune`` (weights only; iteration,
  optimizer and LR schedule start fresh).
* **LR**: any schedule of the loop; the paper's is ``--lr-decay-style
  constant`` (cosine is the other usual choice).

Order of packs: a fresh permutation of all packs per epoch (seeded by
``--seed`` and the epoch), consumed ``global_batch_size`` at a time; a data-
parallel rank reads its contiguous share of each global batch, so resuming
from ``consumed_samples`` continues the exact order.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import ClassVar

import numpy as np
import torch

from megatron_dsm import platform
from megatron_dsm.config import ConfigError, field, options
from megatron_dsm.data.sft import ChatTemplate, PackedSFTDataset, SFTDataError, packed_seq_params
from megatron_dsm.models.config import ModelConfig
from megatron_dsm.models.gpt import transformer_engine_available
from megatron_dsm.training.arguments import TrainConfig, parse_args
from megatron_dsm.training.loop import Trainer
from megatron_dsm.training.pretrain import lm_loss_func
from megatron_dsm.training.stage import BatchStage, stage_main

ATTENTION = ("auto", "mask", "thd")


@options
class SFTConfig:
    """SFT-only options (flags and the ``sft:`` YAML section)."""

    yaml_section: ClassVar[str] = "sft"

    valid_data_path: str | None = field(None, help="packed SFT prefix for held-out loss (default: none)")
    packed_attention: str = field("auto", choices=ATTENTION,
                                  help="isolate packed samples by a dense block mask (mask), by "
                                       "PackedSeqParams/cu_seqlens (thd, needs TE and micro batch 1), "
                                       "or auto (thd with TE, else mask)")
    shuffle: bool = field(True, help="new permutation of the packs every epoch")

    def __post_init__(self):
        if self.packed_attention not in ATTENTION:
            raise ConfigError(f"sft: packed_attention must be one of {ATTENTION}, got {self.packed_attention!r}")


# ---------------------------------------------------------------------------
# batches
# ---------------------------------------------------------------------------


class PackOrder:
    """Which packs form each global batch and which of them this DP rank reads."""

    def __init__(self, num_packs: int, *, global_batch: int, micro_batch: int, dp_rank: int,
                 dp_size: int, seed: int, shuffle: bool = True, consumed_samples: int = 0):
        if num_packs <= 0:
            raise SFTDataError("the SFT dataset holds no packs")
        self.n, self.gbs, self.mbs = num_packs, global_batch, micro_batch
        self.dp_rank, self.dp_size = dp_rank, dp_size
        self.seed, self.shuffle = seed, shuffle
        self.consumed_samples = consumed_samples
        self._perm_epoch, self._perm = -1, None

    def _index(self, k: int) -> int:
        epoch, pos = divmod(k, self.n)
        if not self.shuffle:
            return pos
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.n)
            self._perm_epoch = epoch
        return int(self._perm[pos])

    def next_global_batch(self) -> list[int]:
        idx = [self._index(self.consumed_samples + j) for j in range(self.gbs)]
        self.consumed_samples += self.gbs
        return idx

    def microbatches(self) -> list[list[int]]:
        """This rank's micro-batches (pack indices) of the next global batch."""
        batch = self.next_global_batch()
        per_rank = self.gbs // self.dp_size
        mine = batch[self.dp_rank * per_rank:(self.dp_rank + 1) * per_rank]
        return [mine[i:i + self.mbs] for i in range(0, len(mine), self.mbs)]


def collate(items: list[dict]) -> dict:
    """Stack packs into a micro-batch; masks become ``[B, 1, S, S]``."""
    out = {k: torch.stack([it[k] for it in items]) for k in ("tokens", "labels", "loss_mask", "position_ids")}
    if "attention_mask" in items[0]:
        out["attention_mask"] = torch.stack([it["attention_mask"] for it in items])  # [B,1,S,S]
    out["cu_seqlens"] = [it["cu_seqlens"] for it in items]
    return out


def sft_loss_func(loss_mask: torch.Tensor, output_tensor: torch.Tensor):
    """Cross entropy over response tokens (``lm_loss_func``: summed, with
    their count) and the micro-batch's target-token count."""
    total, count, metrics = lm_loss_func(loss_mask, output_tensor)
    metrics["target tokens"] = count.detach().float()
    return total, count, metrics


def make_forward_step(use_thd: bool):
    """forward_step_func for megatron-core's schedule over packed SFT batches."""

    def forward_step(data_iterator, model):
        batch = next(data_iterator)
        dev = platform.device()
        tokens = batch["tokens"].to(dev)
        labels = batch["labels"].to(dev)
        loss_mask = batch["loss_mask"].to(dev)
        position_ids = batch["position_ids"].to(dev)
        if use_thd:
            if tokens.shape[0] != 1:
                raise ConfigError("packed attention 'thd' needs --micro-batch-size 1")
            psp = packed_seq_params(batch["cu_seqlens"][0].to(dev))
            output = model(tokens, position_ids, None, labels=labels, packed_seq_params=psp)
        else:
            output = model(tokens, position_ids, batch["attention_mask"].to(dev), labels=labels)
        return output, functools.partial(sft_loss_func, loss_mask)

    return forward_step


def _use_thd(sft_cfg: SFTConfig, train: TrainConfig) -> bool:
    te = train.use_te if train.use_te is not None else transformer_engine_available()
    if sft_cfg.packed_attention == "thd":
        if not te:
            raise ConfigError("packed attention 'thd' needs transformer-engine on GPU; use 'mask'")
        return True
    return sft_cfg.packed_attention == "auto" and bool(te)


def _open(prefix: str, model_cfg: ModelConfig, use_thd: bool) -> PackedSFTDataset:
    ds = PackedSFTDataset(prefix, build_attention_mask=not use_thd)
    if ds.seq_length != model_cfg.seq_length:
        raise ConfigError(f"{prefix}: packs are {ds.seq_length} tokens but the model's --seq-length "
                          f"is {model_cfg.seq_length}; rebuild the data or pass --seq-length {ds.seq_length}")
    vocab = (ds.info.get("tokenizer") or {}).get("vocab_size")
    if model_cfg.vocab_size is None:  # not given: the tokenizer recorded with the data
        if not vocab:
            raise ConfigError(f"model vocab size unknown: {prefix}.json records no tokenizer; pass --vocab-size")
        model_cfg.vocab_size = int(vocab)
    if vocab and vocab > model_cfg.vocab_size:
        raise ConfigError(f"{prefix}: tokenizer vocab {vocab} is larger than the model's "
                          f"--vocab-size {model_cfg.vocab_size}")
    return ds


def _sft_prefix(train: TrainConfig) -> str:
    if train.mixture:
        raise ConfigError("SFT reads one packed prefix from --data-path, not --mixture")
    if not train.data_path:
        raise ConfigError("no SFT data: give --data-path PREFIX (built by tools/build_sft_data.py)")
    if len(train.data_path) != 1:
        raise ConfigError(f"SFT takes one packed prefix in --data-path, got {len(train.data_path)} values")
    return train.data_path[0]


# ---------------------------------------------------------------------------
# the stage
# ---------------------------------------------------------------------------


def evaluate_loss(trainer, dataset: PackedSFTDataset, forward_step, max_packs: int | None = None) -> float:
    """Held-out SFT loss: mean over the response tokens of every pack once (or the first ``max_packs``), split over DP ranks."""
    ps = trainer.ps
    dp_rank, dp_size = ps.get_data_parallel_rank(), ps.get_data_parallel_world_size()
    mbs = trainer.train_cfg.micro_batch_size
    n = len(dataset) if max_packs is None else min(len(dataset), max_packs)
    mine = list(range(n))[dp_rank::dp_size]
    micro = [collate([dataset[i] for i in mine[j:j + mbs]]) for j in range(0, len(mine), mbs)]
    # every rank must run the same number of micro-batches (collectives inside)
    micro = micro[:int(platform.all_reduce_values([len(micro)], op=torch.distributed.ReduceOp.MIN,
                                                  dtype=torch.int64)[0])]
    if not micro:
        raise SFTDataError("validation set too small for the data-parallel size")
    trainer.model.eval()
    with torch.no_grad():
        losses = trainer.forward_backward(forward_step, micro, forward_only=True,
                                          num_microbatches=len(micro),
                                          micro_batch_size=micro[0]["tokens"].shape[0])
    trainer.model.train()
    return trainer.reduce_metrics(losses)["lm loss"]


class SFTStage(BatchStage):
    """Fine-tuning on packed SFT data (see the module docstring)."""

    def __init__(self, train: TrainConfig, model_cfg: ModelConfig, sft_cfg: SFTConfig):
        """Opens and checks the packs before any process group exists."""
        self.train, self.model_cfg, self.cfg = train, model_cfg, sft_cfg
        self.use_thd = _use_thd(sft_cfg, train)
        self.train_ds = _open(_sft_prefix(train), model_cfg, self.use_thd)
        self.valid_ds = _open(sft_cfg.valid_data_path, model_cfg, self.use_thd) if sft_cfg.valid_data_path else None
        self._forward_step = make_forward_step(self.use_thd)
        self.order = None

    def start(self, trainer) -> None:
        t = self.train
        self.order = PackOrder(len(self.train_ds), global_batch=t.global_batch_size,
                               micro_batch=t.micro_batch_size, dp_rank=trainer.ps.get_data_parallel_rank(),
                               dp_size=trainer.ps.get_data_parallel_world_size(), seed=t.seed,
                               shuffle=self.cfg.shuffle, consumed_samples=trainer.consumed_samples)

    def banner(self, trainer) -> str:
        t, info = self.train, self.train_ds.info
        return (f"> SFT {t.model} ({self.model_cfg.num_parameters():,} params) TP={t.tensor_model_parallel_size} "
                f"PP={t.pipeline_model_parallel_size} DP={trainer.ps.get_data_parallel_world_size()} on "
                f"{platform.device_name()}; data: {info['packs']} packs / {info['samples']} samples / "
                f"{info['target_tokens']:,} target tokens ({'thd' if self.use_thd else 'block mask'} isolation)")

    def forward_step(self, data_iterator, model):
        return self._forward_step(data_iterator, model)

    def microbatches(self, trainer) -> list:
        return [collate([self.train_ds[i] for i in mb]) for mb in self.order.microbatches()]

    def tokens_per_step(self, trainer) -> int:
        return self.train.global_batch_size * self.model_cfg.seq_length

    def eval_interval(self, trainer) -> int | None:
        return self.train.eval_interval if self.train.eval_interval and self.valid_ds is not None else None

    def evaluate(self, trainer) -> dict:
        """Held-out loss over ``--eval-iters`` global batches of packs."""
        packs = self.train.eval_iters * self.train.global_batch_size
        return {"lm loss": evaluate_loss(trainer, self.valid_ds, self._forward_step, packs)}


@dataclasses.dataclass
class SFTResult:
    metrics: dict      # the last logged fields (plus held-out loss when asked)
    trainer: object    # the Trainer, holding the fine-tuned model (for checks such as exact match)


def run_sft(train: TrainConfig, model_cfg: ModelConfig, sft_cfg: SFTConfig) -> SFTResult:
    """Fine-tune the model on packed SFT data."""
    stage = SFTStage(train, model_cfg, sft_cfg)
    trainer = Trainer(train, model_cfg)
    metrics = trainer.fit(stage)
    trainer.close()
    return SFTResult(metrics, trainer)


def main(argv=None) -> int:
    return stage_main(lambda: run_sft(*parse_args(argv, extra=SFTConfig)), SFTDataError)


# ---------------------------------------------------------------------------
# exact match (the overfit check of the SFT demo)
# ---------------------------------------------------------------------------


@torch.no_grad()
def greedy_complete(model, prompts: list[list[int]], *, max_new_tokens: int, eos: int,
                    pad: int, vocab_size: int | None = None) -> list[list[int]]:
    """Greedy continuation of each prompt, recomputing the full (right-padded)
    sequence each step — a minimal sampler for checks on small models (the
    KV-cache sampler lives in megatron_dsm/models/generation.py).  Rows stop
    at ``eos`` (kept).  Logits are gathered over TP, so every TP rank picks
    the same token."""
    dev = platform.device()
    rows = [list(p) for p in prompts]
    done = [False] * len(rows)
    out: list[list[int]] = [[] for _ in rows]
    model.eval()
    for _ in range(max_new_tokens):
        live = [i for i, d in enumerate(done) if not d]
        if not live:
            break
        lens = [len(rows[i]) for i in live]
        S = max(lens)
        tok = torch.full((len(live), S), pad, dtype=torch.long)
        for r, i in enumerate(live):
            tok[r, :lens[r]] = torch.tensor(rows[i])
        pos = torch.arange(S).expand(len(live), S)
        logits = model(tok.to(dev), pos.to(dev), None, runtime_gather_output=True)  # [B,S,V]
        last = logits[torch.arange(len(live)), torch.tensor(lens) - 1].float()
        if vocab_size is not None:
            last[:, vocab_size:] = float("-inf")
        nxt = last.argmax(-1).tolist()
        for r, i in enumerate(live):
            rows[i].append(nxt[r])
            out[i].append(nxt[r])
            if nxt[r] == eos:
                done[i] = True
    return out


def exact_match(model, tokenizer, conversations: list[list[dict]], *, template=None,
                max_new_tokens: int = 64, batch: int = 64) -> float:
    """Share of single-turn conversations whose greedy completion equals the
    reference response token for token, through its eos."""
    template = template or ChatTemplate()
    hits = 0
    for s in range(0, len(conversations), batch):
        chunk = conversations[s:s + batch]
        prompts, refs = [], []
        for msgs in chunk:
            (user_t, _, _), (resp_t, _, _) = template.segments(msgs)[:2]
            prompts.append(list(tokenizer.encode(user_t)))
            refs.append(list(tokenizer.encode(resp_t)) + [int(tokenizer.eod)])
        pad = getattr(tokenizer, "pad", None)
        outs = greedy_complete(model, prompts, max_new_tokens=max(len(r) for r in refs) + 1,
                               eos=int(tokenizer.eod), pad=int(tokenizer.eod if pad is None else pad),
                               vocab_size=getattr(tokenizer, "vocab_size", None))
        hits += sum(o == r for o, r in zip(outs, refs))
    return hits / max(len(conversations), 1)
