"""One generation interface for evaluation and GRPO rollouts.

A back end implements ``Generator.generate(prompts, *, max_new_tokens,
temperature, top_p, n, stop) -> list[list[str]]`` (n completions per
prompt) and registers itself by name with ``register_generator``; callers
pick it by name (``make_generator("hf", model=...)``).  Back ends here:

* ``jsonl``: replays existing generations from a jsonl file (grade only);
* ``hf``: a Hugging Face transformers causal LM (released checkpoints).

The in-process Megatron-Core back end registers itself the same way from
its own module.
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import Callable, Optional, Sequence

from megatron_dsm.io import read_jsonl

_REGISTRY: dict[str, Callable[..., "Generator"]] = {}


def register_generator(name: str):
    def deco(cls):
        _REGISTRY[name] = cls
        return cls
    return deco


def make_generator(name: str, **kwargs) -> "Generator":
    if name not in _REGISTRY:
        raise ValueError(f"unknown generation back end {name!r}; known: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name](**kwargs)


def available_generators() -> list[str]:
    return sorted(_REGISTRY)


def truncate_at_stop(text: str, stop: Optional[Sequence[str]]) -> str:
    """Cut ``text`` at the earliest stop string (the stop itself is kept when
    it closes content the grader needs, e.g. "I hope it is correct.")."""
    if not stop:
        return text
    cut = len(text)
    for s in stop:
        i = text.find(s)
        if i >= 0:
            keep = s if s.strip().endswith(("correct.", "```")) else ""
            cut = min(cut, i + len(keep))
    return text[:cut]


class Generator(abc.ABC):
    """n completions per prompt."""

    @abc.abstractmethod
    def generate(self, prompts: list[str], *, max_new_tokens: int = 512, temperature: float = 0.0,
                 top_p: float = 1.0, n: int = 1, stop: Optional[Sequence[str]] = None) -> list[list[str]]:
        ...

    def as_callable(self, **kw) -> Callable[[list[str]], list[str]]:
        """``generate(prompts) -> completions`` with one completion each (for tool loops)."""
        return lambda prompts: [c[0] for c in self.generate(prompts, n=1, **kw)]


@register_generator("jsonl")
class JsonlReplayGenerator(Generator):
    """Existing generations: each line ``{"prompt": ..., "completions": [...]}``
    (or ``"completion"``), looked up by prompt, or by ``id`` when the caller
    passes ids through ``generate_for_ids``."""

    def __init__(self, path: str):
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"jsonl generations not found: {p}")
        self.by_prompt: dict[str, list[str]] = {}
        self.by_id: dict[str, list[str]] = {}
        for n, r in read_jsonl(p):
            comps = r.get("completions")
            if comps is None and "completion" in r:
                comps = [r["completion"]]
            if not isinstance(comps, list):
                raise ValueError(f"{p}:{n}: needs 'completions' (list) or 'completion'")
            if "prompt" in r:
                self.by_prompt[r["prompt"]] = comps
            if "id" in r:
                self.by_id[str(r["id"])] = comps

    def _take(self, comps: list[str], n: int, key: str) -> list[str]:
        if len(comps) < n:
            raise ValueError(f"jsonl generations: {key!r} has {len(comps)} completions, {n} requested")
        return comps[:n]

    def generate(self, prompts, *, max_new_tokens=512, temperature=0.0, top_p=1.0, n=1, stop=None):
        out = []
        for p in prompts:
            if p not in self.by_prompt:
                raise KeyError(f"jsonl generations: no entry for prompt {p[:60]!r}...")
            out.append([truncate_at_stop(c, stop) for c in self._take(self.by_prompt[p], n, p[:40])])
        return out

    def generate_for_ids(self, ids: list[str], n: int = 1, stop=None) -> list[list[str]]:
        out = []
        for i in ids:
            if str(i) not in self.by_id:
                raise KeyError(f"jsonl generations: no entry for id {i!r}")
            out.append([truncate_at_stop(c, stop) for c in self._take(self.by_id[str(i)], n, str(i))])
        return out


@register_generator("hf")
class HFGenerator(Generator):
    """transformers causal LM; left-padded batches, sampling via ``generate``."""

    def __init__(self, model: str, tokenizer: Optional[str] = None, device: str = "cpu",
                 dtype: str = "auto", seed: int = 0):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        self.torch = torch
        self.tok = AutoTokenizer.from_pretrained(tokenizer or model)
        self.tok.padding_side = "left"
        if self.tok.pad_token is None:
            self.tok.pad_token = self.tok.eos_token
        td = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16,
              "float16": torch.float16}[dtype]
        self.model = AutoModelForCausalLM.from_pretrained(model, torch_dtype=td).to(device).eval()
        self.device = device
        self.seed = seed

    def generate(self, prompts, *, max_new_tokens=512, temperature=0.0, top_p=1.0, n=1, stop=None):
        torch = self.torch
        enc = self.tok(list(prompts), return_tensors="pt", padding=True).to(self.device)
        sample = temperature > 0
        kw = dict(max_new_tokens=max_new_tokens, do_sample=sample, num_return_sequences=n,
                  pad_token_id=self.tok.pad_token_id)
        if sample:
            kw.update(temperature=temperature, top_p=top_p)
        if stop:
            kw.update(stop_strings=list(stop), tokenizer=self.tok)
        torch.manual_seed(self.seed)
        with torch.no_grad():
            out = self.model.generate(**enc, **kw)
        new = out[:, enc["input_ids"].shape[1]:]
        texts = self.tok.batch_decode(new, skip_special_tokens=True)
        texts = [truncate_at_stop(t, stop) for t in texts]
        return [texts[i * n:(i + 1) * n] for i in range(len(prompts))]
