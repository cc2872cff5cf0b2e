"""One tokenizer interface for preprocessing, training and evaluation.

Three back-ends sit behind the same small surface (``vocab_size``, ``eod``,
``bos``, ``pad``, ``encode``, ``decode``, ``batch_encode``, ``fingerprint``):

* ``hf``: a Hugging Face ``tokenizer.json`` (or a folder holding one, plus an
  optional ``tokenizer_config.json`` naming the eos/bos/pad tokens), run
  through the Rust ``tokenizers`` library;
* ``sentencepiece``: a SentencePiece ``.model``;
* ``byte``: a lossless byte-level fallback that needs no file.

``encode`` never adds BOS/EOS: documents get their end-of-document token from
the preprocessing tool (``--append-eod``), exactly as Megatron-LM's tool does
with megatron-core's tokenizers (``text_to_ids`` without special tokens).

The fingerprint is a SHA-256 over the vocabulary and the settings that change
token ids (normaliser, pre-tokeniser, special ids).  It is stored in every
indexed dataset's ``PREFIX.json`` so that a blend cannot mix datasets made by
different tokenizers, nor feed a model a dataset made by another tokenizer.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterable, Sequence

# Token strings tried, in order, when a tokenizer file does not say which
# token ends a document.
_EOS_CANDIDATES = ("<|endoftext|>", "</s>", "<|end_of_text|>", "<eos>", "<EOD>", "<|eos|>")
_BOS_CANDIDATES = ("<s>", "<|begin_of_text|>", "<bos>", "<|startoftext|>")
_PAD_CANDIDATES = ("<|padding|>", "<pad>", "<PAD>", "[PAD]")

KINDS = ("hf", "sentencepiece", "byte")

# Megatron-LM --tokenizer-type names mapped onto our back-ends.
MEGATRON_TYPE_TO_KIND = {
    "HuggingFaceTokenizer": "hf",
    "SentencePieceTokenizer": "sentencepiece",
    "GPTSentencePieceTokenizer": "sentencepiece",
    "Llama2Tokenizer": "sentencepiece",
    "ByteLevelTokenizer": "byte",
}


class TokenizerError(ValueError):
    """The tokenizer cannot be built; the message says which file and why."""


def _sha256(*parts: bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(len(p).to_bytes(8, "little"))
        h.update(p)
    return h.hexdigest()


class Tokenizer:
    """Common surface; subclasses fill in the back-end."""

    kind: str = ""
    vocab_size: int
    eod: int | None
    bos: int | None
    pad: int | None
    fingerprint: str

    def encode(self, text: str) -> list[int]:
        return self.batch_encode([text])[0]

    def batch_encode(self, texts: Sequence[str], num_threads: int = 1) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def decode(self, ids: Iterable[int]) -> str:  # pragma: no cover - overridden
        raise TypeError(f"{type(self).__name__} has no decode")

    def describe(self) -> dict:
        """What the PREFIX.json sidecar records about the tokenizer."""
        return {"kind": self.kind, "path": getattr(self, "path", None), "vocab_size": self.vocab_size,
                "eod": self.eod, "bos": self.bos, "pad": self.pad, "fingerprint": self.fingerprint}


class HFTokenizer(Tokenizer):
    """A ``tokenizers`` JSON file; ids equal ``AutoTokenizer.tokenize`` + ``convert_tokens_to_ids``."""

    kind = "hf"

    def __init__(self, path: str | os.PathLike):
        from tokenizers import Tokenizer as RustTokenizer

        p = Path(path)
        config: dict = {}
        if p.is_dir():
            if not (p / "tokenizer.json").is_file():
                raise TokenizerError(f"{p}: folder has no tokenizer.json")
            cfg = p / "tokenizer_config.json"
            if cfg.is_file():
                try:
                    config = json.loads(cfg.read_text())
                except json.JSONDecodeError as e:
                    raise TokenizerError(f"{cfg}: invalid JSON ({e})") from None
            p = p / "tokenizer.json"
        elif not p.is_file():
            raise TokenizerError(f"tokenizer file not found: {p}")
        try:
            self._tok = RustTokenizer.from_file(str(p))
        except Exception as e:  # the Rust error is long; keep its first line
            raise TokenizerError(f"{p}: not a tokenizers JSON file ({str(e).splitlines()[0]})") from None
        self.path = str(p)
        # Megatron-core's HuggingFace tokenizer reports len(tokenizer): base vocab plus added tokens.
        self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)
        self.eod = self._special_id(config.get("eos_token"), _EOS_CANDIDATES)
        self.bos = self._special_id(config.get("bos_token"), _BOS_CANDIDATES)
        self.pad = self._special_id(config.get("pad_token"), _PAD_CANDIDATES)
        # to_str() serialises the loaded model in a fixed field order, so the
        # same vocabulary and settings hash alike whatever the file's layout
        self.fingerprint = _sha256(b"hf", self._tok.to_str().encode(), repr((self.eod, self.bos, self.pad)).encode())

    def _special_id(self, configured, candidates) -> int | None:
        if isinstance(configured, dict):  # AddedToken serialised as a dict
            configured = configured.get("content")
        names = [configured] if configured else list(candidates)
        for name in names:
            i = self._tok.token_to_id(name)
            if i is not None:
                return i
        return None

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def batch_encode(self, texts: Sequence[str], num_threads: int = 1) -> list[list[int]]:
        # encode_batch releases the GIL and fans out over the Rust thread pool,
        # whose size is fixed per process by RAYON_NUM_THREADS (see preprocess).
        return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Iterable[int]) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=False)


class SentencePieceTokenizer(Tokenizer):
    """A SentencePiece ``.model``; ``encode`` adds no BOS/EOS (``encode_as_ids``)."""

    kind = "sentencepiece"

    def __init__(self, path: str | os.PathLike):
        import sentencepiece as spm

        p = Path(path)
        if p.is_dir():
            models = sorted(p.glob("*.model"))
            if not models:
                raise TokenizerError(f"{p}: folder has no SentencePiece .model file")
            p = models[0]
        if not p.is_file():
            raise TokenizerError(f"SentencePiece model not found: {p}")
        blob = p.read_bytes()
        try:
            self._sp = spm.SentencePieceProcessor(model_proto=blob)
        except Exception as e:
            raise TokenizerError(f"{p}: not a SentencePiece model ({str(e).splitlines()[0]})") from None
        self.path = str(p)
        self.vocab_size = self._sp.vocab_size()
        self.eod = self._sp.eos_id() if self._sp.eos_id() >= 0 else None
        self.bos = self._sp.bos_id() if self._sp.bos_id() >= 0 else None
        self.pad = self._sp.pad_id() if self._sp.pad_id() >= 0 else None
        self.fingerprint = _sha256(b"sentencepiece", blob)

    def encode(self, text: str) -> list[int]:
        return self._sp.encode(text)

    def batch_encode(self, texts: Sequence[str], num_threads: int = 1) -> list[list[int]]:
        return self._sp.encode(list(texts), num_threads=max(1, num_threads))

    def decode(self, ids: Iterable[int]) -> str:
        return self._sp.decode([int(i) for i in ids])


class ByteTokenizer(Tokenizer):
    """Lossless UTF-8 byte tokenizer: ids 0-2 are pad/bos/eod, byte b is id b+3."""

    kind = "byte"
    OFFSET = 3

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = None
        self.vocab_size = 256 + self.OFFSET
        self.pad, self.bos, self.eod = 0, 1, 2
        self.fingerprint = _sha256(b"byte", b"utf-8 offset 3 pad0 bos1 eod2")

    def encode(self, text: str) -> list[int]:
        import numpy as np

        return (np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64) + self.OFFSET).tolist()

    def decode(self, ids: Iterable[int]) -> str:
        data = bytes(i - self.OFFSET for i in (int(x) for x in ids) if i >= self.OFFSET)
        return data.decode("utf-8", errors="replace")


def build_tokenizer(kind: str, path: str | os.PathLike | None = None) -> Tokenizer:
    """Build a tokenizer.

    ``kind`` is one of ``hf``, ``sentencepiece``, ``byte`` or a Megatron-LM
    ``--tokenizer-type`` name (``HuggingFaceTokenizer``, ``SentencePieceTokenizer``,
    ``GPTSentencePieceTokenizer``, ``Llama2Tokenizer``).  ``auto`` picks from the
    path: a ``.model`` file is SentencePiece, anything else a tokenizer.json.
    """
    kind = MEGATRON_TYPE_TO_KIND.get(kind, kind)
    if kind == "auto":
        if path is None:
            kind = "byte"
        else:
            p = Path(path)
            kind = "sentencepiece" if (p.suffix == ".model" or (p.is_dir() and any(p.glob("*.model"))
                                                                and not (p / "tokenizer.json").exists())) else "hf"
    if kind == "byte":
        return ByteTokenizer()
    if path is None:
        raise TokenizerError(f"tokenizer kind {kind!r} needs a path (--tokenizer-model)")
    if kind == "hf":
        return HFTokenizer(path)
    if kind == "sentencepiece":
        return SentencePieceTokenizer(path)
    raise TokenizerError(f"unknown tokenizer kind {kind!r}; expected one of {KINDS + ('auto',)} "
                         f"or {sorted(MEGATRON_TYPE_TO_KIND)}")
