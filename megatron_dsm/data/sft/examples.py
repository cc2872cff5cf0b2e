"""From a jsonl record to a tokenised sample: the formats read, the chat
template, which tokens are targets, label alignment and truncation (steps 1
to 5 of the package docstring)."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from megatron_dsm.config import ConfigError, field, options

FORMATS = ("auto", "messages", "pair", "gsm8k")
TRUNCATION = ("drop", "truncate", "error")

# GSM8K rationales carry calculator annotations like <<48/2=24>>.
_GSM8K_CALC = re.compile(r"<<[^<>]*>>")
_GSM8K_FINAL = re.compile(r"\n?####\s*(.+?)\s*$", re.S)


class SFTDataError(ValueError):
    """Bad SFT input; the message says which file, which line and what."""


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
    """Apply the truncation policy (package docstring, step 5), counting what it did."""
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
