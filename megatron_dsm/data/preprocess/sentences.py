"""Sentence splitting with nltk Punkt, without downloading anything.

Punkt parameters come from a JSON file (``--punkt-params``), from nltk's
punkt_tab data when it is installed locally, or are trained on the input
itself; the parameters used can be saved for the next run.
"""

from __future__ import annotations

import json
from pathlib import Path

from megatron_dsm.data.preprocess.config import PreprocessConfig
from megatron_dsm.data.preprocess.inputs import iter_records, plan_partitions
from megatron_dsm.io import atomic_write

# nltk is imported only when sentences are split: importing it pulls in
# scipy.stats, which takes longer per process than tokenizing a small corpus.
_LANG_VARS_CLASS = None


def _trailing_space_lang_vars():
    """Punkt language vars whose sentence end swallows the whitespace after it;
    the lookahead then needs the next token right away, so that whitespace
    (newlines included) stays in the sentence it follows."""
    global _LANG_VARS_CLASS
    if _LANG_VARS_CLASS is None:
        from nltk.tokenize.punkt import PunktLanguageVars

        class TrailingSpaceLanguageVars(PunktLanguageVars):
            _period_context_fmt = r"""
                %(SentEndChars)s\s*
                (?=(?P<after_tok>%(NonWord)s|(?P<next_tok>\S+)))"""

        _LANG_VARS_CLASS = TrailingSpaceLanguageVars
    return _LANG_VARS_CLASS()


SLICE_CHARS = 1_000_000  # Megatron-LM hands Punkt 1M-character slices


def train_punkt(texts, max_chars: int = 4_000_000):
    """Unsupervised Punkt parameters from up to ``max_chars`` characters of ``texts``."""
    from nltk.tokenize.punkt import PunktTrainer

    trainer = PunktTrainer()
    seen = 0
    for t in texts:
        if t:
            trainer.train(t, finalize=False)
            seen += len(t)
            if seen >= max_chars:
                break
    trainer.finalize_training()
    return trainer.get_params()


def save_punkt(params, path: str | Path) -> None:
    data = {"abbrev_types": sorted(params.abbrev_types),
            "collocations": sorted(list(c) for c in params.collocations),
            "sent_starters": sorted(params.sent_starters),
            "ortho_context": sorted([k, v] for k, v in params.ortho_context.items())}
    atomic_write(path, json.dumps(data, sort_keys=True))


def load_punkt(path: str | Path):
    from nltk.tokenize.punkt import PunktParameters

    try:
        data = json.loads(Path(path).read_text())
        p = PunktParameters()
        p.abbrev_types = set(data["abbrev_types"])
        p.collocations = {tuple(c) for c in data["collocations"]}
        p.sent_starters = set(data["sent_starters"])
        for k, v in data["ortho_context"]:
            p.ortho_context[k] = v
        return p
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: not a Punkt parameters file ({e})") from None


def local_punkt(lang: str):
    """nltk's punkt_tab parameters for ``lang`` when installed locally (never downloads)."""
    import nltk

    try:
        nltk.data.find(f"tokenizers/punkt_tab/{lang}/")
    except LookupError:
        return None
    from nltk.tokenize.punkt import PunktTokenizer

    return PunktTokenizer(lang)._params


class SentenceSplitter:
    """Picklable Punkt splitter."""

    def __init__(self, params, keep_newlines: bool = False):
        from nltk.tokenize.punkt import PunktLanguageVars, PunktSentenceTokenizer

        self.params = params
        self.keep_newlines = keep_newlines
        lang_vars = _trailing_space_lang_vars() if keep_newlines else PunktLanguageVars()
        self._tok = PunktSentenceTokenizer(params, lang_vars=lang_vars)

    def __reduce__(self):
        return (SentenceSplitter, (self.params, self.keep_newlines))

    def split(self, text: str) -> list[str]:
        out: list[str] = []
        for i in range(0, len(text), SLICE_CHARS):
            piece = text[i:i + SLICE_CHARS]
            if not self.keep_newlines:
                out.extend(self._tok.tokenize(piece))
                continue
            # Punkt's boundary realignment drops whitespace after a closing
            # bracket or quote; with keep_newlines every gap is given back to
            # the sentence before it, so the sentences join into the text.
            starts = [s for s, _ in self._tok.span_tokenize(piece)]
            if not starts:
                out.append(piece)
                continue
            starts[0] = 0
            out.extend(piece[a:b] for a, b in zip(starts, starts[1:] + [len(piece)]))
        return out


def build_splitter(cfg: PreprocessConfig, files: list[Path]) -> SentenceSplitter | None:
    if not cfg.split_sentences:
        return None
    if cfg.punkt_params:
        params = load_punkt(cfg.punkt_params)
    else:
        params = local_punkt(cfg.lang)
        if params is None:
            def texts():
                for u in plan_partitions(files, 1)[0]:
                    for _, _, rec in iter_records(u, cfg.json_keys, cfg.max_document_bytes):
                        if isinstance(rec, dict):
                            for v in rec.values():
                                yield v if isinstance(v, str) else " ".join(v)
            params = train_punkt(texts())
    if cfg.save_punkt_params:
        save_punkt(params, cfg.save_punkt_params)
    return SentenceSplitter(params, cfg.keep_newlines)
