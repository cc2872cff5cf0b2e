#!/usr/bin/env python
"""Evaluate a model (or existing generations) on the paper's benchmarks.

    python tools/evaluate.py --benchmarks gsm8k math500 --backend hf --model PATH \
        --style instruct --n-samples 1 --output runs/eval/gen.jsonl

One record per problem is appended to ``--output`` as soon as it is graded,
so an interrupted run resumes where it stopped (problems already in the file
are skipped).  Metrics (JSON), a printed table and, with several samples per
problem, the maj@k / pass@k plot are written at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from megatron_dsm.config import add_arguments, field, from_namespace, load_yaml, options  # noqa: E402
from megatron_dsm.io import atomic_write  # noqa: E402


@options
class EvalConfig:
    benchmarks: list[str] = field(default_factory=lambda: ["gsm8k"], help="benchmark names")
    output: str = field("runs/eval/generations.jsonl", help="per-problem records (jsonl; resumable)")
    backend: str = field("jsonl", help="generation back end (jsonl, hf, or a registered one)")
    model: str = field("", help="model path / name for model back ends")
    checkpoint: str = field("", help="training-loop checkpoint folder (backend megatron)")
    tokenizer: str = field("", help="tokenizer.json / folder / .model (backend megatron; hf: override)")
    generations: str = field("", help="jsonl of existing generations (backend jsonl)")
    style: str = field("instruct", help="prompt style", choices=("instruct", "fewshot", "pot", "tool"))
    n_samples: int = field(1, help="samples per problem (first is greedy when temperature is 0)")
    temperature: float = field(0.0, help="sampling temperature (paper: 0.7 for maj@k/pass@k)")
    top_p: float = field(1.0, help="nucleus sampling p")
    max_new_tokens: int = field(512, help="generation length")
    batch_size: int = field(8, help="prompts per generate call")
    limit: int = field(0, help="first N problems per benchmark (0 = all)")
    data_root: str = field("", help="data folder holding benchmarks/ (default ../shared/data)")
    benchmark_config: str = field("", help="YAML with user jsonl benchmarks under 'benchmarks:'")
    grader: str = field("dsm", help="answer grader", choices=("dsm", "math_verify"))
    tool_rounds: int = field(4, help="max code executions per problem (style tool)")
    exec_timeout: float = field(10.0, help="sandbox wall-clock seconds per program")
    metrics: str = field("", help="metrics JSON path (default: OUTPUT.metrics.json)")
    plot: str = field("", help="PNG of maj@k/pass@k vs k (default: OUTPUT.k.png when n>1)")

    def __post_init__(self):
        if self.n_samples < 1:
            raise ValueError(f"--n-samples must be >= 1, got {self.n_samples}")
        if self.n_samples > 1 and self.temperature == 0.0:
            raise ValueError("--n-samples > 1 needs --temperature > 0 (greedy samples are identical)")
        if self.backend == "jsonl" and not self.generations:
            raise ValueError("--backend jsonl needs --generations FILE")
        if self.backend == "megatron" and not (self.checkpoint or self.model):
            raise ValueError("--backend megatron needs --checkpoint DIR")
        if self.backend not in ("jsonl", "megatron") and not self.model:
            raise ValueError(f"--backend {self.backend} needs --model")
        if self.batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1, got {self.batch_size}")


def _done_ids(path: Path) -> set[tuple[str, str]]:
    done = set()
    if path.is_file():
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    r = json.loads(line)
                except json.JSONDecodeError:
                    continue        # a line cut by the interruption: redo that problem
                done.add((r["benchmark"], str(r["id"])))
    return done


def _truncate_partial_line(path: Path) -> None:
    """Drop a trailing incomplete line left by a killed run."""
    if not path.is_file():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        atomic_write(path, data[:data.rfind(b"\n") + 1])


def grade_problem(p, completions: list[str], cfg: EvalConfig, execute=None) -> dict:
    from megatron_dsm.eval import grading, prompts
    answers, correct = [], []
    for c in completions:
        if cfg.style == "pot":
            ans = prompts.run_pot(c, execute, cfg.exec_timeout)
            ok = ans is not None and grading.is_equiv(ans, p.answer)
        elif p.kind == "choice":
            multi = len(str(p.answer)) > 1
            ans = grading.extract_choices(c) if multi else grading.extract_choice(c)
            ok = ans == str(p.answer).strip().upper()
        else:
            ans = grading.extract_answer(c)
            ok = grading.grade(c, p.answer, grader=cfg.grader)
        answers.append(grading.normalize_answer(ans) if ans is not None else None)
        correct.append(bool(ok))
    return {"benchmark": p.benchmark, "id": p.id, "answer": p.answer, "subject": p.subject,
            "level": p.level, "completions": completions, "answers": answers, "correct": correct}


def run(cfg: EvalConfig, generator=None) -> dict:
    from tqdm import tqdm

    from megatron_dsm.eval import benchmarks, metrics, prompts
    from megatron_dsm.eval.generation import make_generator
    from megatron_dsm.eval.grading import is_equiv

    if cfg.benchmark_config:
        benchmarks.register_from_config(cfg.benchmark_config)
    problems = []
    for b in cfg.benchmarks:   # load all first: bad names fail before any generation
        problems += benchmarks.load_benchmark(b, cfg.data_root or None, cfg.limit or None)
    if generator is None:
        gkw = {"path": cfg.generations} if cfg.backend == "jsonl" else {"model": cfg.model}
        if cfg.backend == "megatron":
            import megatron_dsm.eval.megatron_backend  # noqa: F401  (registers "megatron")
            gkw = {"checkpoint": cfg.checkpoint or cfg.model, "tokenizer": cfg.tokenizer or None}
        elif cfg.tokenizer:
            gkw["tokenizer"] = cfg.tokenizer
        generator = make_generator(cfg.backend, **gkw)

    out = Path(cfg.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    _truncate_partial_line(out)
    done = _done_ids(out)
    todo = [p for p in problems if (p.benchmark, str(p.id)) not in done]
    pool = None
    execute = None
    if cfg.style in ("pot", "tool"):
        from megatron_dsm.eval.sandbox import SandboxPool
        pool = SandboxPool()
        execute = lambda code, timeout: pool.submit(code, timeout).result()  # noqa: E731
    gen_kw = dict(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p)
    try:
        with open(out, "a", encoding="utf-8") as f, tqdm(total=len(todo), desc="evaluate",
                                                         unit="problem", initial=0) as bar:
            for i in range(0, len(todo), cfg.batch_size):
                batch = todo[i:i + cfg.batch_size]
                style = cfg.style
                texts = [prompts.build_prompt(p, style) for p in batch]
                stop = prompts.stops_for(batch[0], style)
                if cfg.backend == "jsonl" and hasattr(generator, "generate_for_ids") and \
                        all(str(p.id) in generator.by_id for p in batch):
                    comps = generator.generate_for_ids([p.id for p in batch], n=cfg.n_samples, stop=None)
                elif style == "tool":
                    comps = [[] for _ in batch]
                    for _ in range(cfg.n_samples):
                        one = prompts.tool_integrated(
                            texts, generator.as_callable(stop=["```output"] + stop, **gen_kw),
                            execute, max_rounds=cfg.tool_rounds, timeout=cfg.exec_timeout)
                        for c, t in zip(comps, one):
                            c.append(t)
                else:
                    comps = generator.generate(texts, n=cfg.n_samples, stop=stop, **gen_kw)
                for p, cs in zip(batch, comps):
                    rec = grade_problem(p, cs, cfg, execute)
                    f.write(json.dumps(rec, ensure_ascii=False) + "\n")
                f.flush()
                bar.update(len(batch))
    finally:
        if pool is not None:
            pool.close()

    wanted = {(p.benchmark, str(p.id)) for p in problems}
    records = []
    with open(out, encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            if (r["benchmark"], str(r["id"])) in wanted:
                records.append(r)
    summary = metrics.summarize(records, same=lambda a, b: is_equiv(a, b))
    mpath = cfg.metrics or str(out) + ".metrics.json"
    metrics.write_json(summary, mpath)
    print(metrics.format_table(summary))
    print(f"metrics: {mpath}")
    if cfg.n_samples > 1:
        ppath = cfg.plot or str(out) + ".k.png"
        metrics.plot_k_curves(summary, ppath)
        print(f"plot: {ppath}")
    return summary


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", help="YAML file with these options (section 'evaluate')")
    add_arguments(ap, EvalConfig)
    ns = ap.parse_args(argv)
    base = load_yaml(ns.config, "evaluate") if ns.config else {}
    try:
        cfg = from_namespace(EvalConfig, ns, base)
    except ValueError as e:
        print(f"evaluate: {e}", file=sys.stderr)
        return 2
    from megatron_dsm.data.tokenizer import TokenizerError
    from megatron_dsm.eval.benchmarks import BenchmarkError
    from megatron_dsm.eval.megatron_backend import BackendError
    try:
        run(cfg)
    except (BenchmarkError, FileNotFoundError, BackendError, TokenizerError) as e:
        print(f"evaluate: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
