"""The import contract of docs/architecture.md: each part of megatron_dsm
imports only the parts below it, and the library never imports tools/.

Every import is counted, at module top or inside a function, so an import
moved into a function body cannot hide a dependency."""
import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

BOTTOM = {"platform", "config", "checkpoint", "io"}
# part -> the parts it may import (besides itself)
ALLOWED = {
    "platform": set(),
    "config": set(),
    "io": set(),
    "checkpoint": {"io", "config", "platform"},
    "models": BOTTOM,
    "data": BOTTOM,
    "mining": BOTTOM | {"data"},
    "training": BOTTOM | {"models", "data"},
    "eval": BOTTOM | {"models", "data"},
    "rl": BOTTOM | {"models", "data", "training", "eval"},
    "planner": BOTTOM | {"models", "data", "training", "eval", "rl", "mining"},
    "recipe": BOTTOM | {"models", "data", "training", "eval", "rl", "mining", "planner"},
}


def _part(path: Path, pkg: Path) -> str:
    rel = path.relative_to(pkg)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def violations(pkg: Path) -> list[str]:
    """``file:line: part imports target`` for every import that breaks the contract."""
    out = []
    for path in sorted(pkg.rglob("*.py")):
        part = _part(path, pkg)
        if part == "__init__":
            continue
        allowed = ALLOWED.get(part)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module]
                if node.module == "megatron_dsm":
                    targets = [f"megatron_dsm.{a.name}" for a in node.names]
            for t in targets:
                where = f"{path.relative_to(pkg.parent)}:{node.lineno}"
                if t == "tools" or t.startswith("tools."):
                    out.append(f"{where}: the library imports {t}")
                elif t.startswith("megatron_dsm."):
                    target = t.split(".")[1]
                    if allowed is None:
                        out.append(f"{where}: part {part!r} is not in the contract (docs/architecture.md)")
                    elif target != part and target not in allowed:
                        out.append(f"{where}: {part} imports {target}")
    return out


def test_library_respects_the_import_contract():
    bad = violations(REPO / "megatron_dsm")
    assert not bad, "imports that break docs/architecture.md:\n" + "\n".join(bad)


def test_contract_catches_a_forbidden_import(tmp_path):
    """A temporary package with one module per kind of breach: the check names each."""
    pkg = tmp_path / "megatron_dsm"
    for d in ("models", "eval", "data", "training"):
        (pkg / d).mkdir(parents=True)
        (pkg / d / "__init__.py").write_text("")
    (pkg / "models" / "ok.py").write_text("from megatron_dsm.checkpoint import find_checkpoint\n")
    (pkg / "models" / "bad.py").write_text("def f():\n    from megatron_dsm.training.trainer import Trainer\n")
    (pkg / "eval" / "bad.py").write_text("import megatron_dsm.rl.loop\n")
    (pkg / "data" / "bad.py").write_text("from megatron_dsm import training\n")
    (pkg / "training" / "bad.py").write_text("from tools.plan import main\n")
    bad = violations(pkg)
    assert bad == ["megatron_dsm/data/bad.py:1: data imports training",
                   "megatron_dsm/eval/bad.py:1: eval imports rl",
                   "megatron_dsm/models/bad.py:2: models imports training",
                   "megatron_dsm/training/bad.py:1: the library imports tools.plan"], bad
