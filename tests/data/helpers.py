"""Shared bits for the corpus-tooling tests."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
OLMO = "tokenizers/olmo_gpt-neox-20b_bytelevel_bpe/tokenizer.json"
LLAMA = "tokenizers/llama2_sentencepiece/tokenizer.model"


def load_tool(name: str):
    """Import tools/NAME.py as a module (tools/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"tool_{name}", REPO / "tools" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run_cli(tool: str, *args, timeout=300):
    return subprocess.run([sys.executable, str(REPO / "tools" / f"{tool}.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO)


def write_jsonl(path: Path, records) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    return path


def read_texts(path: Path, key: str = "text", limit: int | None = None) -> list[str]:
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            out.append(json.loads(line)[key])
            if limit and len(out) >= limit:
                break
    return out
