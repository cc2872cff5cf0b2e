"""The ``megatron`` generation back end: this project's checkpoints, in process.

Loads a checkpoint written by the training loop (``SAVE/`` with
``latest_checkpointed_iteration.txt`` or an ``iter_XXXXXXX`` folder), rebuilds
the model from the ``model_config`` the loop stores in the checkpoint's common
state, loads the weights (``load_checkpoint(..., finetune=True)``: weights
only), and generates through :func:`megatron_dsm.models.generation.generate`,
the same routine GRPO rollouts use.  Text goes through the project tokenizer
(``megatron_dsm.data.tokenizer.build_tokenizer``).

Under torchrun with ``tp > 1`` every rank holds its slice and samples the same
tokens; outside torchrun a single process is started (TP=1).
"""

from __future__ import annotations

import sys
from typing import Optional, Sequence

import torch

from megatron_dsm import platform
from megatron_dsm.checkpoint import CheckpointError, load_checkpoint
from megatron_dsm.data.tokenizer import build_tokenizer
from megatron_dsm.eval.generation import Generator, register_generator, truncate_at_stop
from megatron_dsm.models import config as model_config
from megatron_dsm.models.generation import SamplingParams, generate
from megatron_dsm.models.gpt import build_model, transformer_config


class BackendError(ValueError):
    """The checkpoint or tokenizer cannot be used; one line says why."""


def load_model_config(checkpoint: str):
    """The ModelConfig stored in a training-loop checkpoint's common state."""
    try:
        return model_config.from_checkpoint(checkpoint)
    except CheckpointError as e:
        raise BackendError(str(e).replace("--load", "--checkpoint")) from None


@register_generator("megatron")
class MegatronGenerator(Generator):
    """n completions per prompt from a megatron-core GPTModel checkpoint."""

    def __init__(self, checkpoint: Optional[str] = None, tokenizer: Optional[str] = None, *,
                 model: Optional[str] = None, tokenizer_type: str = "auto", tp: int = 1,
                 seed: int = 0, add_bos: bool = False, verbose: bool = True):
        checkpoint = checkpoint or model
        if not checkpoint:
            raise BackendError("the megatron back end needs --checkpoint DIR")
        if not tokenizer and tokenizer_type not in ("byte", "ByteLevelTokenizer"):
            raise BackendError("the megatron back end needs --tokenizer (tokenizer.json, folder "
                               "or SentencePiece .model)")
        self.cfg = load_model_config(checkpoint)
        self.tok = build_tokenizer(tokenizer_type, tokenizer)
        if self.tok.vocab_size > self.cfg.padded_vocab_size(tp):
            raise BackendError(f"tokenizer has {self.tok.vocab_size} tokens but the checkpoint's "
                               f"model has {self.cfg.padded_vocab_size(tp)}: wrong tokenizer?")
        platform.initialize_distributed(tp, 1, seed=seed)
        tconfig = transformer_config(self.cfg, tp=tp, pp=1, bf16=False)
        self.model = build_model(self.cfg, tconfig)
        load_checkpoint(checkpoint, self.model, None, finetune=True)
        self.model.eval()
        self.seed = seed
        self.add_bos = add_bos
        self.verbose = verbose and torch.distributed.get_rank() == 0
        self.pad_id = self.tok.pad if self.tok.pad is not None else (self.tok.eod or 0)
        self.vocab_size = min(self.tok.vocab_size, self.cfg.vocab_size)
        self.last_tokens_per_second = 0.0
        self._calls = 0

    def encode(self, text: str) -> list[int]:
        ids = self.tok.encode(text)
        if self.add_bos and self.tok.bos is not None:
            ids = [self.tok.bos] + ids
        return ids

    def generate(self, prompts: list[str], *, max_new_tokens: int = 512, temperature: float = 0.0,
                 top_p: float = 1.0, n: int = 1, stop: Optional[Sequence[str]] = None) -> list[list[str]]:
        params = SamplingParams(
            max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, n=n,
            stop_ids=tuple(i for i in (self.tok.eod,) if i is not None),
            stop_strings=tuple(stop or ()),
            # a fresh, reproducible stream per call: same run, same samples
            seed=self.seed + self._calls)
        self._calls += 1
        out = generate(self.model, [self.encode(p) for p in prompts], params, pad_id=self.pad_id,
                       vocab_size=self.vocab_size, decode=self._decode)
        self.last_tokens_per_second = out.tokens_per_second
        if self.verbose:
            print(f"megatron generate: {len(prompts)} prompts x {n}, {out.new_tokens} tokens in "
                  f"{out.seconds:.2f}s ({out.tokens_per_second:.1f} tokens/s)", file=sys.stderr)
        texts = [truncate_at_stop(self._decode(c), stop) for c in out.completions]
        return [texts[i * n:(i + 1) * n] for i in range(len(prompts))]

    def _decode(self, ids: list[int]) -> str:
        if self.tok.eod is not None:
            ids = [i for i in ids if i != self.tok.eod]
        return self.tok.decode(ids)
