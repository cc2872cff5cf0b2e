"""Options of tools/preprocess_data.py: Megatron-LM's flags plus a few."""

from __future__ import annotations


from megatron_dsm.config import field, options

DEFAULT_MAX_DOCUMENT_BYTES = 32 * 1024 * 1024


@options
class PreprocessConfig:
    """Options of tools/preprocess_data.py (Megatron-LM's flags plus a few)."""

    input: str = field(None, help="a .jsonl/.jsonl.gz/.parquet file, a glob, or a folder of them")
    output_prefix: str = field(None, help="output path prefix; writes {prefix}_{key}_{document|sentence}.bin/.idx")
    json_keys: list[str] = field(default_factory=lambda: ["text"], help="keys to extract from each record")
    tokenizer_type: str = field("auto", help="HuggingFaceTokenizer | SentencePieceTokenizer | "
                                "GPTSentencePieceTokenizer | Llama2Tokenizer | ByteLevelTokenizer | hf | "
                                "sentencepiece | byte | auto (from --tokenizer-model)")
    tokenizer_model: str | None = field(None, help="tokenizer.json, a tokenizer folder, or a SentencePiece .model")
    append_eod: bool = field(False, help="append the end-of-document token to each document")
    workers: int = field(1, help="tokenizer threads in all (split evenly over partitions)")
    partitions: int = field(1, help="contiguous input partitions processed in parallel, then concatenated")
    split_sentences: bool = field(False, help="split documents into sentences with nltk Punkt")
    lang: str = field("english", help="language of locally installed Punkt data (punkt_tab), if any")
    keep_newlines: bool = field(False, help="keep the whitespace after each sentence when splitting")
    log_interval: int = field(1000, help="documents between progress-bar refreshes")
    punkt_params: str | None = field(None, help="Punkt parameters JSON (from --save-punkt-params); "
                                     "default: local punkt_tab data, else trained on the input")
    save_punkt_params: str | None = field(None, help="write the Punkt parameters used to this JSON file")
    max_document_bytes: int = field(DEFAULT_MAX_DOCUMENT_BYTES, help="reject records larger than this")
    progress: bool = field(True, help="show the tqdm progress bar")

    def __post_init__(self):
        if not self.input:
            raise ValueError("--input is required")
        if not self.output_prefix:
            raise ValueError("--output-prefix is required")
        if isinstance(self.json_keys, str):
            self.json_keys = [self.json_keys]
        self.json_keys = list(self.json_keys)
        if not self.json_keys:
            raise ValueError("--json-keys needs at least one key")
        for name in ("workers", "partitions", "log_interval", "max_document_bytes"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")

    @property
    def level(self) -> str:
        return "sentence" if self.split_sentences else "document"

    def key_prefix(self, key: str, base: str | None = None) -> str:
        return f"{base or self.output_prefix}_{key}_{self.level}"
